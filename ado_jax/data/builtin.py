"""Built-in multi-domain text that every Python install carries: zero-setup default data.

Four domains, byte-level tokens (vocab 256): ``python`` (standard-library source code),
``docs`` (the Python reference prose shipped in ``pydoc_data``), ``c_headers`` (CPython's C
headers) and ``legal`` (license texts). For real multi-domain corpora use ``ado-jax corpus build``.
"""

from __future__ import annotations

import glob
import os
import sysconfig

import numpy as np


def _read_files(paths, cap: int) -> bytes:
    out, total = [], 0
    for path in sorted(paths):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        out.append(data)
        total += len(data)
        if total >= cap:
            break
    return b"\n".join(out)[:cap]


def builtin_domains(max_bytes: int = 2_000_000) -> dict[str, bytes]:
    """Returns ``{domain name: utf-8 bytes}`` gathered from the running Python installation."""
    paths = sysconfig.get_paths()
    stdlib, include = paths["stdlib"], paths["include"]
    from pydoc_data import topics

    domains = {
        "python": _read_files(glob.glob(os.path.join(stdlib, "*.py")) + glob.glob(os.path.join(stdlib, "*/*.py")),
                              max_bytes),
        "docs": "\n\n".join(topics.topics[k] for k in sorted(topics.topics)).encode()[:max_bytes],
        "c_headers": _read_files(glob.glob(os.path.join(include, "**", "*.h"), recursive=True), max_bytes),
        "legal": _read_files(glob.glob("/usr/share/common-licenses/*") + glob.glob(os.path.join(stdlib, "LICENSE*"))
                             + glob.glob(os.path.join(stdlib, "site-packages", "*", "LICENSE*")), max_bytes),
    }
    return {name: data for name, data in domains.items() if len(data) >= 20_000}


def split_tokens(domains: dict[str, bytes], heldout_fraction: float):
    """Byte-tokenizes each domain and splits off its tail as held-out.

    Returns ``(train, heldout)``: two dicts ``name -> uint8[N]`` numpy arrays.
    """
    train, heldout = {}, {}
    for name, data in domains.items():
        arr = np.frombuffer(data, dtype=np.uint8)
        cut = int(len(arr) * (1 - heldout_fraction))
        train[name], heldout[name] = arr[:cut], arr[cut:]
    return train, heldout
