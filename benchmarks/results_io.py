"""Shared by the benchmark scripts: write results atomically (a killed run never leaves half a file)."""

from __future__ import annotations

import json
import os
import tempfile


def save_json(path: str, obj) -> None:
    """Writes ``obj`` as indented JSON to ``path`` via a temporary file and ``os.replace``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)
