"""midGPT-style token files: one flat ``uint16``/``uint32`` ``.bin`` per domain and split.

Layout of a token directory (written by ``ado-jax corpus build`` and ``ado-jax corpus encode``,
see ``corpus`` and ``encode``)::

    <dir>/tokens/<domain>.<split>.bin     raw little-endian ids, no header
    <dir>/tokens/<domain>.<split>.json    sidecar: format, dtype, vocab_size, count, sha256

``open_tokens`` checks the sidecar on open (dtype known and right for the vocab, file size ==
count * itemsize; sha256 too with ``verify="sha256"``) and returns a read-only ``np.memmap``.
Ids are checked ``< vocab_size`` when written; readers may re-check (``check_ids=True``).
A domain may instead be **sharded** (``<domain>.<split>.shards.json`` listing many ``.bin``
shards, see ``shards``); ``open_domains`` returns it as one ``ShardedTokens`` array.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ado_jax.data.shards import INDEX_SUFFIX, ShardedTokens, index_path, read_index

FORMAT = "ado_jax.tokens/v1"
SPLITS = ("train", "heldout")


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab <= 65536), else uint32."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def _check_ids(ids: np.ndarray, vocab_size: int, where: str) -> None:
    if ids.size == 0:
        return
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab_size:
        bad = hi if hi >= vocab_size else lo
        pos = int(np.flatnonzero(ids == bad)[0])
        raise ValueError(f"{where}: token id {bad} at position {pos} is outside the vocabulary "
                         f"[0, {vocab_size})")


def write_tokens(path: str | os.PathLike, ids: np.ndarray, vocab_size: int) -> dict:
    """Writes ``ids: [n]`` to ``path`` (.bin) + its sidecar atomically; returns the sidecar dict."""
    path = Path(path)
    if path.suffix != ".bin":
        raise ValueError(f"token file must end in .bin, got {path}")
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{path}: ids must be a 1-D integer array, got {ids.dtype}{list(ids.shape)}")
    _check_ids(ids, vocab_size, str(path))
    data = np.ascontiguousarray(ids.astype(dtype_for_vocab(vocab_size).newbyteorder("<")))
    meta = {"format": FORMAT, "dtype": data.dtype.name, "vocab_size": int(vocab_size),
            "count": int(data.size), "sha256": hashlib.sha256(data.tobytes()).hexdigest()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_bin, tmp_json = (path.with_name(path.name + f".tmp-{os.getpid()}"),
                         path.with_name(path.stem + f".json.tmp-{os.getpid()}"))
    data.tofile(tmp_bin)
    tmp_json.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_bin, path)  # the sidecar lands last: a .bin without a matching sidecar fails on open
    os.replace(tmp_json, path.with_suffix(".json"))
    return meta


def read_sidecar(path: str | os.PathLike) -> dict:
    """Returns the sidecar dict of the ``.bin`` at ``path``, validated (format, dtype vs vocab)."""
    path = Path(path)
    side = path.with_suffix(".json")
    if not side.exists():
        raise FileNotFoundError(f"{path}: sidecar {side.name} is missing (write token files with "
                                "write_tokens or `ado-jax corpus encode`)")
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{side}: sidecar is not valid JSON ({e}); re-encode this domain") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{side}: sidecar must be a JSON object, got {type(meta).__name__}")
    for key in ("dtype", "vocab_size", "count"):
        if key not in meta:
            raise ValueError(f"{side}: sidecar lacks {key!r}")
    if meta["dtype"] not in ("uint16", "uint32"):
        raise ValueError(f"{side}: dtype {meta['dtype']!r} is not supported; expected uint16 or uint32")
    if meta["dtype"] == "uint16" and meta["vocab_size"] > 2**16:
        raise ValueError(f"{side}: dtype uint16 cannot hold vocab_size {meta['vocab_size']}")
    return meta


def open_tokens(path: str | os.PathLike, expect_dtype: str | None = None, verify: str = "size",
                check_ids: bool = False) -> np.memmap:
    """Opens a ``.bin`` token file as a read-only memmap ``[count]`` after checking its sidecar.

    Args:
      expect_dtype: if given, the sidecar's dtype must equal it ("uint16"/"uint32").
      verify: "size" (file bytes == count * itemsize) or "sha256" (also hash the contents).
      check_ids: also scan for ids >= vocab_size (reads the whole file).
    """
    path = Path(path)
    meta = read_sidecar(path)
    if expect_dtype is not None and meta["dtype"] != expect_dtype:
        raise ValueError(f"{path}: sidecar dtype {meta['dtype']} does not match the expected {expect_dtype}")
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")
    if not path.exists():
        raise FileNotFoundError(f"token file {path} is missing (its sidecar exists)")
    size, want = path.stat().st_size, meta["count"] * dtype.itemsize
    if size != want:
        raise ValueError(f"{path}: file has {size} bytes but the sidecar says {meta['count']} "
                         f"{meta['dtype']} tokens = {want} bytes (truncated or wrong dtype)")
    if verify not in ("size", "sha256"):
        raise ValueError(f"verify must be 'size' or 'sha256', got {verify!r}")
    if meta["count"] == 0:
        return np.zeros((0,), dtype)  # np.memmap cannot map an empty file
    mm = np.memmap(path, dtype=dtype, mode="r", shape=(meta["count"],))
    if verify == "sha256" and "sha256" in meta:
        digest = hashlib.sha256(memoryview(mm)).hexdigest()
        if digest != meta["sha256"]:
            raise ValueError(f"{path}: sha256 {digest[:12]}... does not match the sidecar's "
                             f"{meta['sha256'][:12]}... (file changed or corrupted)")
    if check_ids:
        _check_ids(mm, meta["vocab_size"], str(path))
    return mm


def token_dir(directory: str | os.PathLike) -> Path:
    """The folder holding the ``.bin`` files: ``<dir>/tokens`` if it exists, else ``<dir>``."""
    directory = Path(directory)
    return directory / "tokens" if (directory / "tokens").is_dir() else directory


def list_domains(directory: str | os.PathLike, split: str = "train") -> list[str]:
    """Sorted domain names that have a ``<name>.<split>.bin`` or a shard index
    ``<name>.<split>.shards.json`` in ``directory`` (or its tokens/)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    names = set()
    for suffix in (f".{split}.bin", f".{split}{INDEX_SUFFIX}"):
        names |= {p.name[: -len(suffix)] for p in token_dir(directory).glob(f"*{suffix}")}
    return sorted(names)


def open_domain(directory: str | os.PathLike, name: str, split: str = "train",
                verify: str = "size") -> tuple[np.ndarray | ShardedTokens, dict]:
    """``(tokens [count], meta)`` of one domain: a memmap of its ``.bin`` or, when it is sharded,
    a ``ShardedTokens`` over every shard of its index (each shard's sidecar and size checked,
    and its count against the index). ``meta`` holds at least dtype, vocab_size, count."""
    folder = token_dir(directory)
    index_file = index_path(folder, name, split)
    if not index_file.exists():
        path = folder / f"{name}.{split}.bin"
        return open_tokens(path, verify=verify), read_sidecar(path)
    index = read_index(index_file)
    parts = []
    for shard in index["shards"]:
        part = open_tokens(folder / shard["file"], expect_dtype=index["dtype"], verify=verify)
        if part.size != shard["count"]:
            raise ValueError(f"{folder / shard['file']}: {part.size} tokens but the shard index "
                             f"{index_file.name} says {shard['count']} (replaced shard?)")
        parts.append(part)
    return ShardedTokens(parts), index


def open_domains(directory: str | os.PathLike, split: str = "train", names: Sequence[str] | None = None,
                 min_tokens: int = 1, verify: str = "size") -> dict[str, np.memmap | ShardedTokens]:
    """Returns ``{domain: memmap[count] or ShardedTokens[count]}`` for ``split``, in sorted (or
    ``names``) order.

    Raises on unknown domain names (listing the known ones), on a domain with fewer than
    ``min_tokens`` tokens (pass ``seq_len + 1`` when sampling windows), and on files whose
    sidecars disagree on dtype or vocab_size.
    """
    known = list_domains(directory, split)
    if not known:
        raise FileNotFoundError(f"no *.{split}.bin token files in {token_dir(directory)}; build a corpus "
                                "with `ado-jax corpus build` or `ado-jax corpus encode`")
    names = list(known if names is None else names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown domain name(s) {unknown}; {token_dir(directory)} has {known}")
    if len(set(names)) != len(names):
        raise ValueError(f"domain names repeat: {names}")
    out, metas = {}, {}
    for name in names:
        out[name], metas[name] = open_domain(directory, name, split, verify)
        if out[name].size < min_tokens:
            raise ValueError(f"domain {name!r} ({split}) has {out[name].size} tokens; at least "
                             f"{min_tokens} are needed (empty domain or sequence too long)")
    first = names[0]
    for name in names[1:]:
        for key in ("dtype", "vocab_size"):
            if metas[name][key] != metas[first][key]:
                raise ValueError(f"domain {name!r} has {key} {metas[name][key]} but {first!r} has "
                                 f"{metas[first][key]}; all domains must share one tokenizer")
    return out


def domains_vocab_size(directory: str | os.PathLike, split: str = "train") -> int:
    """The vocab_size recorded in the sidecars of ``directory``'s token files."""
    names = list_domains(directory, split)
    if not names:
        raise FileNotFoundError(f"no *.{split}.bin token files in {token_dir(directory)}")
    index_file = index_path(token_dir(directory), names[0], split)
    if index_file.exists():
        return int(read_index(index_file)["vocab_size"])
    return int(read_sidecar(token_dir(directory) / f"{names[0]}.{split}.bin")["vocab_size"])
