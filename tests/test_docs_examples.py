"""The docs' runnable examples run and do what the prose says; the API reference covers every module."""

import pathlib
import re

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def example(page: str, name: str) -> str:
    """The ```python block right after ``<!-- example: name -->`` in ``docs/page``."""
    text = (DOCS / page).read_text()
    m = re.search(rf"<!-- example: {name} -->\s*```python\n(.*?)```", text, re.S)
    assert m, f"no example {name!r} in docs/{page}"
    return m.group(1)


def test_getting_started_own_loop_moves_mixture_to_learnable_domain(capsys):
    ns: dict = {}
    exec(compile(example("getting_started.md", "own_loop"), "getting_started.md:own_loop", "exec"), ns)
    w_D = np.asarray(ns["mixer_state"].weights)
    alpha_D = np.asarray(ns["mixer_state"].params.alpha)
    # The page says: the pattern domain gets (almost) everything, the noise domain sits at
    # delta_min = 0.01, and the fitted exponents are ~0.8 (pattern) and ~0 (noise).
    assert ns["stream"].names == ("pattern", "noise")
    assert w_D[0] > 0.95 and abs(w_D[1] - 0.01) < 5e-3, w_D
    assert alpha_D[0] > 0.5 and alpha_D[1] < 0.05, alpha_D
    assert "'pattern'" in capsys.readouterr().out


def test_api_reference_lists_every_module():
    documented = set()
    for page in (DOCS / "api").glob("*.md"):
        documented |= set(re.findall(r"^::: (\S+)$", page.read_text(), re.M))
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts)
               for p in (ROOT / "ado_jax").rglob("*.py") if p.name != "__init__.py"}
    assert modules - documented == set(), "modules missing from docs/api/*.md"
    assert documented - modules == set(), "docs/api/*.md names modules that do not exist"


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert {p for p in pages if p not in nav} == set()


def test_config_reference_is_current():
    from ado_jax.config import describe

    assert describe(markdown=True) in (DOCS / "config.md").read_text(), (
        "docs/config.md is stale: replace its tables with ado_jax.config.describe(markdown=True)")


def test_every_public_function_and_class_has_a_docstring():
    import importlib
    import inspect
    import pkgutil

    import ado_jax

    missing = []
    for info in pkgutil.walk_packages(ado_jax.__path__, "ado_jax."):
        mod = importlib.import_module(info.name)
        if not (mod.__doc__ or "").strip():
            missing.append(info.name)
        for name, obj in vars(mod).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if not (obj.__doc__ or "").strip():
                missing.append(f"{info.name}.{name}")
            if inspect.isclass(obj):
                missing += [f"{info.name}.{name}.{k}" for k, v in vars(obj).items()
                            if not k.startswith("_") and inspect.isfunction(v) and not (v.__doc__ or "").strip()]
    assert missing == [], "public names without a docstring"
