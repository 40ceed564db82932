"""Makes the packages named in ``ADO_JAX_BLOCK_IMPORTS`` (comma-separated) unimportable.

Put this folder on ``PYTHONPATH`` and Python imports it at start-up, in the test process and in
every ``ado-jax`` subprocess it starts, as if those packages were not installed
(tests/test_optional_packages.py): ``import X`` raises ModuleNotFoundError and
``importlib.util.find_spec("X")`` answers None. (A ``None`` in ``sys.modules`` would do both, but
libraries such as scipy read ``sys.modules["torch"]`` as an imported module.)"""

import importlib.abc
import importlib.util
import os
import sys

BLOCKED = frozenset(n for n in os.environ.get("ADO_JAX_BLOCK_IMPORTS", "").split(",") if n)


def _blocked(name: str) -> bool:
    return name.partition(".")[0] in BLOCKED


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if _blocked(name):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by ADO_JAX_BLOCK_IMPORTS)", name=name)
        return None


_find_spec = importlib.util.find_spec


def _find_spec_unless_blocked(name, package=None):
    return None if _blocked(importlib.util.resolve_name(name, package)) else _find_spec(name, package)


if BLOCKED:
    sys.meta_path.insert(0, _Blocker())
    importlib.util.find_spec = _find_spec_unless_blocked
