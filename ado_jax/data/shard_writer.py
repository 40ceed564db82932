"""Streaming writer of one domain split's token shards, in constant memory, resumable.

``ShardWriter(folder, stem, vocab_size, shard_tokens)`` appends encoded documents to
``<folder>/<stem>-<k>.bin.partial`` and, once a shard holds ``shard_tokens`` tokens or more
(it is cut only between write calls, so between documents), writes its sidecar and renames it to
``<stem>-<k>.bin`` (``k`` = 0000, 0001, ...). A finished shard is therefore complete on disk;
the open one is a ``.partial`` file that readers never open.

``state()`` (after ``sync()``) is what a resume point records: the finished shards and the
open shard's length; ``ShardWriter.resume(..., state)`` cuts the ``.partial`` file back to that
length and continues appending, so a resumed encode writes the same shards as one that never
stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ado_jax.data.token_files import FORMAT, dtype_for_vocab


class ShardWriter:
    """Appends token ids to numbered shards of about ``shard_tokens`` tokens each."""

    def __init__(self, folder: str | os.PathLike, stem: str, vocab_size: int, shard_tokens: int):
        if shard_tokens <= 0:
            raise ValueError(f"shard_tokens must be positive, got {shard_tokens}")
        self.folder, self.stem = Path(folder), stem
        self.vocab_size, self.shard_tokens = int(vocab_size), int(shard_tokens)
        self.dtype = dtype_for_vocab(vocab_size).newbyteorder("<")
        self.shards: list[dict] = []  # finished: {"file", "count", "sha256", "docs", "bytes"}
        self._file = None

    @classmethod
    def resume(cls, folder, stem: str, vocab_size: int, shard_tokens: int, state: dict) -> "ShardWriter":
        """A writer continuing from ``state`` (``state()`` at a resume point)."""
        self = cls(folder, stem, vocab_size, shard_tokens)
        self.shards = [dict(s) for s in state["shards"]]
        if state["open"] is not None:
            self._open(state["open"]["count"], state["open"]["docs"], state["open"]["bytes"])
        return self

    def _open(self, count: int = 0, docs: int = 0, text_bytes: int = 0) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._name = f"{self.stem}-{len(self.shards):04d}.bin"
        self._partial = self.folder / f"{self._name}.partial"
        if count:  # resuming: keep what the resume point covers, drop anything written after it
            final = self.folder / self._name
            if not self._partial.exists() and final.exists():  # it was finished after the resume point
                os.replace(final, self._partial)
                final.with_suffix(".json").unlink(missing_ok=True)
            self._file = open(self._partial, "r+b")
            self._file.truncate(count * self.dtype.itemsize)
            self._file.seek(0, os.SEEK_END)
        else:
            self._file = open(self._partial, "wb")
        self._count, self._docs, self._bytes = count, docs, text_bytes

    def write(self, ids: np.ndarray, docs: int, text_bytes: int) -> None:
        """Appends ``ids: [n]`` (whole documents, eos included): ``docs`` documents of
        ``text_bytes`` UTF-8 bytes; ids must lie in ``[0, vocab_size)``."""
        if ids.size and int(ids.max()) >= self.vocab_size:
            raise ValueError(f"{self.stem}: token id {int(ids.max())} is outside the vocabulary [0, {self.vocab_size})")
        if self._file is None:
            self._open()
        self._file.write(np.ascontiguousarray(ids.astype(self.dtype)).tobytes())
        self._count, self._docs, self._bytes = self._count + ids.size, self._docs + docs, self._bytes + text_bytes
        if self._count >= self.shard_tokens:
            self._finish()

    def _finish(self) -> None:
        self._file.close()
        self._file = None
        h = hashlib.sha256()
        with open(self._partial, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        meta = {"format": FORMAT, "dtype": self.dtype.name, "vocab_size": self.vocab_size,
                "count": int(self._count), "sha256": h.hexdigest()}
        path = self.folder / self._name
        side_tmp = path.with_name(path.stem + f".json.tmp-{os.getpid()}")
        side_tmp.write_text(json.dumps(meta, indent=1))
        os.replace(self._partial, path)
        os.replace(side_tmp, path.with_suffix(".json"))
        self.shards.append({"file": f"{self.folder.name}/{self._name}", "count": meta["count"],
                            "sha256": meta["sha256"], "docs": self._docs, "bytes": self._bytes})

    def sync(self) -> None:
        """Flushes the open shard to disk (``os.fsync``), so ``state()`` describes the disk."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def state(self) -> dict:
        """``{"shards": finished entries, "open": {"count", "docs", "bytes"} or None}``."""
        open_ = None if self._file is None else {"count": int(self._count), "docs": self._docs, "bytes": self._bytes}
        return {"shards": [dict(s) for s in self.shards], "open": open_}

    def close(self) -> list[dict]:
        """Finishes the open shard (if it has any tokens); returns every finished shard's entry
        (``file`` relative to the folder's parent, ``count``, ``sha256``, ``docs``, ``bytes``)."""
        if self._file is not None:
            if self._count:
                self._finish()
            else:
                self.abort()
                self._partial.unlink(missing_ok=True)
        return self.shards

    def abort(self) -> None:
        """Closes the open shard's ``.partial`` file, which a resume may continue (finished
        shards stay)."""
        if self._file is not None:
            self._file.close()
            self._file = None
