"""Streaming writer of one domain split's token shards, in constant memory.

``ShardWriter(folder, stem, vocab_size, shard_tokens)`` appends encoded documents to
``<folder>/<stem>-<k>.bin.tmp-<pid>`` and, once a shard holds ``shard_tokens`` tokens or more
(it is cut only between write calls, so between documents), writes its sidecar and renames it to
``<stem>-<k>.bin`` (``k`` = 0000, 0001, ...). A shard is therefore either complete on disk or
absent: a crash leaves at most temporary files, which the next run overwrites or ``abort`` removes.
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

    def _start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._name = f"{self.stem}-{len(self.shards):04d}.bin"
        self._tmp = self.folder / f"{self._name}.tmp-{os.getpid()}"
        self._file = open(self._tmp, "wb")
        self._hash, self._count, self._docs, self._bytes = hashlib.sha256(), 0, 0, 0

    def write(self, ids: np.ndarray, docs: int, text_bytes: int) -> None:
        """Appends ``ids: [n]`` (whole documents, eos included): ``docs`` documents of
        ``text_bytes`` UTF-8 bytes; ids must lie in ``[0, vocab_size)``."""
        if ids.size and int(ids.max()) >= self.vocab_size:
            raise ValueError(f"{self.stem}: token id {int(ids.max())} is outside the vocabulary [0, {self.vocab_size})")
        if self._file is None:
            self._start()
        data = np.ascontiguousarray(ids.astype(self.dtype)).tobytes()
        self._file.write(data)
        self._hash.update(data)
        self._count, self._docs, self._bytes = self._count + ids.size, self._docs + docs, self._bytes + text_bytes
        if self._count >= self.shard_tokens:
            self._finish()

    def _finish(self) -> None:
        self._file.close()
        self._file = None
        meta = {"format": FORMAT, "dtype": self.dtype.name, "vocab_size": self.vocab_size,
                "count": int(self._count), "sha256": self._hash.hexdigest()}
        path = self.folder / self._name
        side_tmp = path.with_name(path.stem + f".json.tmp-{os.getpid()}")
        side_tmp.write_text(json.dumps(meta, indent=1))
        os.replace(self._tmp, path)
        os.replace(side_tmp, path.with_suffix(".json"))
        self.shards.append({"file": f"{self.folder.name}/{self._name}", "count": meta["count"],
                            "sha256": meta["sha256"], "docs": self._docs, "bytes": self._bytes})

    def close(self) -> list[dict]:
        """Finishes the open shard (if it has any tokens); returns every finished shard's entry
        (``file`` relative to the folder's parent, ``count``, ``sha256``, ``docs``, ``bytes``)."""
        if self._file is not None:
            if self._count:
                self._finish()
            else:
                self.abort()
        return self.shards

    def abort(self) -> None:
        """Drops the open shard's temporary file (finished shards stay)."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self._tmp.unlink(missing_ok=True)
