"""ado_jax's import layering: no import cycle between modules, and no import that runs up a layer.

Every ``import`` in ``ado_jax/`` counts, including those inside functions (a late import still
ties the two modules together); imports under ``if TYPE_CHECKING:`` do not. A module belongs to
the longest component in ``LAYERS`` that prefixes its name, and may import only the modules of
its own component and of the components its row allows (all of them lower in the table). The
top-level package (``ado_jax``, its ``__init__``) matches only itself, so a new top-level module
fails until it has a row. Importing a package's submodule is not counted as importing the
package's ``__init__``.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BELOW = "*"  # in an allowed list: every component listed before this one

# Bottom to top: (component, what it may import). An allowed entry is a component or a single
# module (``ado_jax.mixing.base``: that module and nothing else of its component).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("ado_jax.options", ()),                         # option(default, help): config dataclass fields
    ("ado_jax.storage", ()),                         # local or object-store files, each written atomically
    ("ado_jax.storage_retries", ()),                 # counts the object-store requests retried in a run
    ("ado_jax.mixing", ("ado_jax.options", "ado_jax.storage")),  # mixers, tracker, fitter; weight files
    ("ado_jax.models", ("ado_jax.options",)),
    ("ado_jax.sharding", ()),                        # mesh and shardings: a leaf utility
    ("ado_jax.data", ("ado_jax.mixing.base", "ado_jax.sharding", "ado_jax.storage")),  # + object-store corpora
    ("ado_jax.synthetic", ("ado_jax.mixing",)),     # tasks are streams driven by mixers, nothing more
    ("ado_jax.presets", ()),
    ("ado_jax.eval_metrics", ()),                    # aggregates of per-domain losses (numpy only)
    ("ado_jax.metric_sinks", ("ado_jax.options", "ado_jax.storage")),  # TensorBoard / W&B sinks and their LogConfig
    ("ado_jax.config", (BELOW,)),
    ("ado_jax.memory", (BELOW,)),                    # the memory estimate of a config (model shapes)
    ("ado_jax.run_dir", ("ado_jax.storage",)),       # lock, config history, OS-error messages
    ("ado_jax.run_log", ("ado_jax.storage",)),       # metrics.jsonl read and write
    ("ado_jax.run_control", ()),                     # run flags, stop signals, exit codes: a leaf
    ("ado_jax.checkpoint", ("ado_jax.run_dir",)),    # saves any pytree; train uses its leaf test
    ("ado_jax.hf_checkpoint", ("ado_jax.models", "ado_jax.checkpoint", "ado_jax.storage")),  # HF Llama files in and out
    ("ado_jax.harness", ("ado_jax.models", "ado_jax.sharding", "ado_jax.data", "ado_jax.storage",  # lm-eval adapter,
                         "ado_jax.checkpoint", "ado_jax.config", "ado_jax.metric_sinks")),     # its task runs
    ("ado_jax.optimizer", ("ado_jax.config",)),     # AdamW, clipping, skipped non-finite steps
    ("ado_jax.train", (BELOW,)),
    ("ado_jax.loop", (BELOW,)),
    ("ado_jax.sweep", (BELOW,)),                     # K proxy runs vmapped in one step; their results table
    ("ado_jax.compare", ("ado_jax.eval_metrics", "ado_jax.run_log", "ado_jax.storage")),
    ("ado_jax.plot", ("ado_jax.compare", "ado_jax.storage")),
    ("ado_jax.cli", (BELOW,)),
    ("ado_jax", (BELOW,)),                           # the package's own __init__
]

# (importer, imported) pairs that break the table today, each with the reason it is tolerated.
# Fix the import and delete the entry (a stale entry fails test_known_exceptions_are_current).
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


# ----------------------------------------------------------------------------- the import graph

def module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(source: str, module: str, is_package: bool, modules: set[str], prefix: str = "ado_jax") -> set[str]:
    """The modules of ``modules`` that ``source`` (module ``module``) imports, at any depth.

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module, else ``pkg``.
    """
    out: set[str] = set()

    def add(target: str) -> None:
        if target == prefix or target.startswith(prefix + "."):
            while target not in modules and "." in target:  # an attribute of a module
                target = target.rsplit(".", 1)[0]
            out.add(target)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                add(full if full in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    out.discard(module)
    return out


def import_graph(package_dir: pathlib.Path = ROOT / "ado_jax", root: pathlib.Path = ROOT) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}`` for every ``.py`` file under ``package_dir``."""
    files = {module_name(p, root): p for p in sorted(package_dir.rglob("*.py"))}
    prefix = module_name(package_dir / "__init__.py", root)
    return {m: imports_of(p.read_text(), m, p.name == "__init__.py", set(files), prefix) for m, p in files.items()}


# ----------------------------------------------------------------------------- the two detectors

def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(cycles)


def component_of(module: str, layers=LAYERS) -> str | None:
    """The longest component prefixing ``module``; a top-level package name matches only itself."""
    names = [name for name, _ in layers if module == name or ("." in name and module.startswith(name + "."))]
    return max(names, key=len) if names else None


def allowed_targets(layers=LAYERS) -> dict[str, tuple[str, ...]]:
    """``{component: allowed entries}`` with ``BELOW`` expanded."""
    out = {}
    for i, (name, allowed) in enumerate(layers):
        below = tuple(n for n, _ in layers[:i])
        out[name] = tuple(t for a in allowed for t in (below if a == BELOW else (a,)))
    return out


def layer_violations(graph: dict[str, set[str]], layers=LAYERS) -> list[tuple[str, str, str]]:
    """``(importer, imported, why)`` for every import the layer table does not allow."""
    order = {name: i for i, (name, _) in enumerate(layers)}
    allowed = allowed_targets(layers)
    out = []
    for src in sorted(graph):
        a = component_of(src, layers)
        for dst in sorted(graph[src]):
            b = component_of(dst, layers)
            if a is None or b is None:
                out.append((src, dst, "module not in the layer table"))
            elif a == b or any(dst == t or dst.startswith(t + ".") for t in allowed[a]):
                continue
            elif order[b] > order[a]:
                out.append((src, dst, f"upward: {a} sits below {b}"))
            else:
                what = f"only {', '.join(allowed[a])}" if allowed[a] else "nothing of ado_jax"
                out.append((src, dst, f"{a} may import {what}"))
    return out


# ----------------------------------------------------------------------------- the checks

def test_layer_table_points_down():
    order = {name: i for i, (name, _) in enumerate(LAYERS)}
    assert len(order) == len(LAYERS), "a component is listed twice"
    for name, allowed in allowed_targets().items():
        for target in allowed:
            comp = component_of(target)
            assert comp is not None and order[comp] < order[name], f"{name} may import {target}, which is not below it"


def test_every_module_has_a_layer():
    assert [m for m in import_graph() if component_of(m) is None] == []


def test_no_import_cycles():
    assert find_cycles(import_graph()) == [], "import cycles between ado_jax modules"


def test_no_upward_imports():
    bad = [v for v in layer_violations(import_graph()) if v[:2] not in KNOWN_EXCEPTIONS]
    assert bad == [], "imports that the layer table (tests/test_layers.py, docs/concepts.md) does not allow"


def test_known_exceptions_are_current():
    found = {v[:2] for v in layer_violations(import_graph())}
    assert [pair for pair in KNOWN_EXCEPTIONS if pair not in found] == [], "fixed: delete these entries"


# ----------------------------------------------------------------------------- the checks can fail

FAKE_LAYERS = [("pkg.low", ()), ("pkg.mid", ("pkg.low",)), ("pkg.high", (BELOW,))]


def test_detectors_flag_a_cycle_and_an_upward_import():
    graph = {"pkg.low.a": {"pkg.low.b"}, "pkg.low.b": {"pkg.low.c"}, "pkg.low.c": {"pkg.low.a"},
             "pkg.mid.x": {"pkg.low.a", "pkg.high.y"}, "pkg.high.y": {"pkg.mid.x", "pkg.low.a"},
             "pkg.low.d": {"pkg.mid.x"}, "pkg.other": set()}
    assert find_cycles(graph) == [["pkg.high.y", "pkg.mid.x"], ["pkg.low.a", "pkg.low.b", "pkg.low.c"]]
    assert [v[:2] for v in layer_violations(graph, FAKE_LAYERS)] == [("pkg.low.d", "pkg.mid.x"),
                                                                     ("pkg.mid.x", "pkg.high.y")]
    assert "upward" in layer_violations(graph, FAKE_LAYERS)[0][2]
    assert find_cycles({"a": {"b"}, "b": set()}) == [] and layer_violations({"pkg.high.y": {"pkg.low.a"}},
                                                                              FAKE_LAYERS) == []


def test_imports_inside_functions_count(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for name in ("__init__.py", "a.py", "sub/__init__.py", "sub/b.py"):
        (pkg / name).write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.sub.b\n"
                              "def f():\n    from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from .. import a\nfrom . import nothing_here\n")
    graph = import_graph(pkg, tmp_path)
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a", "pkg.sub"}
    assert find_cycles(graph) == [["pkg.a", "pkg.sub.b"]]


@pytest.mark.parametrize("module, component", [("ado_jax.mixing.base", "ado_jax.mixing"), ("ado_jax", "ado_jax"),
                                               ("ado_jax.data.setup", "ado_jax.data"), ("numpy", None),
                                               ("ado_jax.new_module", None)])
def test_component_of(module, component):
    assert component_of(module) == component
