"""Sharded token domains: one domain split over many ``.bin`` files, read as one array.

A large domain (a 100 GB Pile subset) is written as many shards by ``ado-jax corpus encode``
from record files; a small **shard index** beside the single-file domains lists them in order::

    <dir>/tokens/<domain>.<split>.shards.json     {"format", "dtype", "vocab_size", "count",
                                                    "shards": [{"file", "count", "sha256"}, ...]}
    <dir>/tokens/<domain>/<split>-<input>-<k>.bin one shard (+ its .json sidecar, as token_files)

``ShardedTokens`` is the concatenation of the shards' memmaps as a read-only 1-D array: ``size``,
``ndim``, ``dtype``, ``len`` and slicing (a window may span two shards), and ``np.asarray`` for
the in-step loader. Each shard ends with a document's eos, so a window that crosses a shard
boundary reads the same tokens as a single file would.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

INDEX_FORMAT = "ado_jax.token_shards/v1"
INDEX_SUFFIX = ".shards.json"


class ShardedTokens:
    """Read-only concatenation of 1-D token arrays ``parts`` (each ``[n_i]``, one dtype) as ``[sum n_i]``."""

    ndim = 1

    def __init__(self, parts: Sequence[np.ndarray]):
        parts = [p for p in parts if p.size]
        dtypes = {p.dtype for p in parts}
        if len(dtypes) > 1:
            raise ValueError(f"shards disagree on dtype: {sorted(d.name for d in dtypes)}")
        self.parts = parts
        self.dtype = dtypes.pop() if dtypes else np.dtype(np.uint16)
        self.offsets = np.concatenate([[0], np.cumsum([p.size for p in parts], dtype=np.int64)])
        self.size = int(self.offsets[-1])
        self.shape = (self.size,)

    def __len__(self) -> int:
        """Tokens in all shards."""
        return self.size

    def __getitem__(self, key) -> np.ndarray:
        """Tokens of a slice (step 1) or one integer position, copied out of the shards."""
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self.size if key < 0 else 0)
            if not 0 <= i < self.size:
                raise IndexError(f"index {key} out of range for {self.size} tokens")
            s = int(np.searchsorted(self.offsets, i, side="right")) - 1
            return self.parts[s][i - self.offsets[s]]
        if not isinstance(key, slice):
            raise TypeError(f"ShardedTokens supports int and slice indexing, got {type(key).__name__}")
        start, stop, step = key.indices(self.size)
        if step != 1:
            raise ValueError(f"ShardedTokens slices must have step 1, got {step}")
        if stop <= start:
            return np.zeros((0,), self.dtype)
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        last = int(np.searchsorted(self.offsets, stop, side="left")) - 1
        pieces = [self.parts[s][max(start - self.offsets[s], 0):min(stop, self.offsets[s + 1]) - self.offsets[s]]
                  for s in range(first, last + 1)]
        return np.asarray(pieces[0]) if len(pieces) == 1 else np.concatenate(pieces)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.concatenate(self.parts) if self.parts else np.zeros((0,), self.dtype)
        return out if dtype is None else out.astype(dtype)

    def min(self) -> int:
        """Smallest id over all shards (0 when empty)."""
        return min((int(p.min()) for p in self.parts), default=0)

    def max(self) -> int:
        """Largest id over all shards (0 when empty)."""
        return max((int(p.max()) for p in self.parts), default=0)


def index_path(directory: Path, name: str, split: str) -> Path:
    """Where the shard index of ``name``'s ``split`` lives inside a token folder."""
    return directory / f"{name}.{split}{INDEX_SUFFIX}"


def write_index(path: str | os.PathLike, shards: list[dict], dtype: str, vocab_size: int) -> dict:
    """Writes a shard index atomically; ``shards``: ``[{"file": path relative to the index's
    folder, "count": tokens, "sha256": ...}]`` in reading order. Returns the index dict."""
    path = Path(path)
    index = {"format": INDEX_FORMAT, "dtype": dtype, "vocab_size": int(vocab_size),
             "count": int(sum(s["count"] for s in shards)), "shards": list(shards)}
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, path)
    return index


def read_index(path: str | os.PathLike) -> dict:
    """The shard index at ``path``, validated (format, dtype, a list of shards with file and count)."""
    path = Path(path)
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: shard index is not valid JSON ({e}); re-encode this domain") from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise ValueError(f"{path}: not a shard index (expected format {INDEX_FORMAT!r})")
    if index.get("dtype") not in ("uint16", "uint32") or not isinstance(index.get("shards"), list):
        raise ValueError(f"{path}: shard index needs dtype uint16|uint32 and a list of shards")
    for s in index["shards"]:
        if not isinstance(s, dict) or "file" not in s or "count" not in s:
            raise ValueError(f"{path}: shard entry {s!r} lacks 'file' or 'count'")
    return index


class ChunkRecords:
    """A token array (``ShardedTokens`` or a memmap, ``[N]``) as a record domain of ``chunk``-token
    records, so ``tfds_source.ArrayRecordSource`` samples an encoded corpus too: records of one
    length make its record-uniform windows token-uniform::

        doms = open_domains(corpus_dir, "train")
        src = ArrayRecordSource({n: ChunkRecords(a, vocab_size) for n, a in doms.items()}, B, T)
    """

    def __init__(self, tokens, vocab_size: int | None = None, chunk: int = 2048):
        if chunk <= 0:
            raise ValueError(f"chunk must be positive, got {chunk}")
        self.array, self.chunk, self.vocab_size = tokens, int(chunk), vocab_size
        self.tokens = int(tokens.size)

    def __len__(self) -> int:
        """Records: ``ceil(tokens / chunk)``."""
        return -(-self.tokens // self.chunk)

    def read(self, indices: Sequence[int]) -> list[np.ndarray]:
        """Token arrays of records ``indices`` (each ``[chunk]``, the last one shorter)."""
        return [np.asarray(self.array[int(i) * self.chunk:(int(i) + 1) * self.chunk]) for i in indices]
