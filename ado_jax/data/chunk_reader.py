"""Background range reads of remote token domains, under a memory cap, with an optional disk cache.

A *chunk* is a contiguous token range ``[lo, hi)`` of one domain (``remote_tokens.RemoteTokens``),
megabytes long, named by a key ``(domain, lo, hi)``. ``ChunkReader`` holds chunks in memory for
``chunked_source.ChunkedSource``:

* ``get(key)`` returns a chunk's tokens, fetching it now when it is not there yet (an *urgent*
  fetch, ahead of everything else), and **pins** it: it stays until ``release(key)``;
* ``want(keys)`` is the read-ahead list, most urgent first: ``threads`` background threads fetch
  those not held yet, as long as every chunk held (pinned, read ahead, or in flight) fits in
  ``cap_bytes``. A chunk dropped from the list and not pinned is evicted when room is needed.

Every held chunk counts against the cap from the moment its fetch starts, so the memory the reader
holds never exceeds ``cap_bytes`` (``stats["peak_bytes"]``), except that pinned chunks are never
evicted: the source pins at most one chunk per domain plus the one it moves to, and checks at
start that ``cap_bytes`` covers that. With ``cache_dir``, a fetched chunk is also written there
(temporary file + rename) and a later fetch of the same bytes (a rerun, a resume, another process
on the host) reads the file instead of the store.
"""

from __future__ import annotations

import collections
import hashlib
import os
import threading
import time
from typing import Sequence

import numpy as np

Key = tuple[int, int, int]  # (domain index, first token, end token)


class _Chunk:
    __slots__ = ("nbytes", "data", "error", "pins")

    def __init__(self, nbytes: int):
        self.nbytes, self.data, self.error, self.pins = nbytes, None, None, 0


class ChunkReader:
    """Fetches chunks of ``domains`` (``RemoteTokens``, indexed by the key's first field)."""

    def __init__(self, domains: Sequence, cap_bytes: int, threads: int = 4, cache_dir: str | None = None):
        if threads < 1 or cap_bytes <= 0:
            raise ValueError(f"need threads >= 1 and cap_bytes > 0, got {threads}, {cap_bytes}")
        self.domains, self.cap_bytes, self.cache_dir = list(domains), int(cap_bytes), cache_dir or None
        self._ids = [hashlib.sha256(d.identity().encode()).hexdigest()[:16] for d in self.domains]
        self._held: dict[Key, _Chunk] = {}
        self._bytes = 0
        self._urgent: collections.deque[Key] = collections.deque()
        self._want: list[Key] = []
        self._cond = threading.Condition()
        self._closed = False
        self.fetched: list[Key] = []  # the chunks read from the store, in order
        self.stats = {"requests": 0, "bytes_read": 0, "chunks_fetched": 0, "cache_hits": 0, "evicted": 0,
                      "peak_bytes": 0, "wait_s": 0.0}
        self._n_threads, self._threads = threads, []  # started at the first want / get

    def _start(self) -> None:
        """Starts the fetch threads (under the lock), once."""
        if not self._threads:
            self._threads = [threading.Thread(target=self._work, name=f"chunk-reader-{i}", daemon=True)
                             for i in range(self._n_threads)]
            for t in self._threads:
                t.start()

    def nbytes(self, key: Key) -> int:
        """Bytes of the chunk ``key`` in memory."""
        d, lo, hi = key
        return (hi - lo) * self.domains[d].dtype.itemsize

    @property
    def held_bytes(self) -> int:
        """Bytes of every chunk held now (pinned, read ahead, in flight)."""
        with self._cond:
            return self._bytes

    def held_keys(self) -> set:
        """The keys of the chunks held now (read, or in flight)."""
        with self._cond:
            return {k for k, c in self._held.items() if c.error is None}

    def want(self, keys: Sequence[Key]) -> None:
        """Sets the read-ahead list (most urgent first); wakes the fetch threads."""
        with self._cond:
            self._check_open()
            self._start()
            self._want = list(dict.fromkeys(keys))
            self._cond.notify_all()

    def get(self, key: Key) -> np.ndarray:
        """The tokens ``[hi - lo]`` of chunk ``key``, pinned until ``release(key)``; waits for its fetch
        (started now, ahead of the read-ahead list, when it was not under way). Raises the fetch's error."""
        t0 = time.perf_counter()
        failures = 0
        with self._cond:
            self._start()
            while True:
                self._check_open()
                chunk = self._held.get(key)
                if chunk is None:  # not asked for yet, or evicted before this wait woke up
                    if key not in self._urgent:
                        self._urgent.append(key)
                        self._cond.notify_all()
                elif chunk.data is not None:
                    chunk.pins += 1
                    self.stats["wait_s"] += time.perf_counter() - t0
                    return chunk.data
                elif chunk.error is not None:
                    self._drop(key)
                    failures += 1
                    if failures > 1:  # a failed read-ahead is tried once more, now
                        raise chunk.error
                    continue
                self._cond.wait()

    def release(self, key: Key) -> None:
        """Unpins a chunk ``get`` returned; it stays while it is on the read-ahead list and room allows."""
        with self._cond:
            chunk = self._held.get(key)
            if chunk is not None and chunk.pins > 0:
                chunk.pins -= 1
                self._cond.notify_all()

    def close(self) -> None:
        """Stops the fetch threads (fetches in flight finish first) and drops every chunk."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=60)
        with self._cond:
            self._held.clear()
            self._bytes = 0

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the chunk reader is closed")

    def _drop(self, key: Key) -> None:
        chunk = self._held.pop(key)
        self._bytes -= chunk.nbytes

    def _make_room(self, need: int, urgent: bool) -> bool:
        """Evicts unpinned, fetched chunks off the read-ahead list (for an urgent fetch, the least
        urgent ones on it too) until ``need`` more bytes fit; True when they fit."""
        if self._bytes + need <= self.cap_bytes:
            return True
        rank = {k: i for i, k in enumerate(self._want)}
        idle = [k for k, c in self._held.items() if c.pins == 0 and c.data is not None
                and (urgent or k not in rank)]
        for k in sorted(idle, key=lambda k: -rank.get(k, len(rank))):
            self._drop(k)
            self.stats["evicted"] += 1
            if self._bytes + need <= self.cap_bytes:
                return True
        return False

    def _next_job(self) -> Key | None:
        """The next chunk to fetch (reserving its bytes), or None to wait. Called under the lock."""
        while self._urgent:
            key = self._urgent[0]
            if key in self._held:  # already fetched or under way
                self._urgent.popleft()
                continue
            if not self._make_room(self.nbytes(key), urgent=True):
                if any(c.data is None and c.error is None for c in self._held.values()):
                    return None  # in-flight fetches will become evictable
                raise MemoryError(f"data.readahead_mb: {self.cap_bytes / 2**20:.1f} MiB cannot hold the chunks "
                                  f"pinned now ({self._bytes / 2**20:.1f} MiB) plus one more; raise it")
            self._urgent.popleft()
            return self._reserve(key)
        for key in self._want:
            if key not in self._held:
                if self._make_room(self.nbytes(key), urgent=False):
                    return self._reserve(key)
                return None  # the list is in order: a later chunk must not overtake this one
        return None

    def _reserve(self, key: Key) -> Key:
        self._held[key] = _Chunk(self.nbytes(key))
        self._bytes += self._held[key].nbytes
        self.stats["peak_bytes"] = max(self.stats["peak_bytes"], self._bytes)
        return key

    def _work(self) -> None:
        while True:
            with self._cond:
                key = None
                while not self._closed:
                    try:
                        key = self._next_job()
                    except MemoryError as e:  # handed to the get() that waits for it (holds no bytes)
                        failed = _Chunk(0)
                        failed.error = e
                        self._held[self._urgent.popleft()] = failed
                        self._cond.notify_all()
                        continue
                    if key is not None:
                        break
                    self._cond.wait()
                if self._closed:
                    return
            try:
                data, err = self._fetch(key), None
            except Exception as e:  # handed to the get() that waits for this chunk
                data, err = None, e
            with self._cond:
                chunk = self._held.get(key)
                if chunk is not None:
                    chunk.data, chunk.error = data, err
                self._cond.notify_all()

    def _cache_path(self, key: Key) -> str:
        d, lo, hi = key
        return os.path.join(self.cache_dir, self._ids[d], f"{lo}-{hi}.bin")

    def _fetch(self, key: Key) -> np.ndarray:
        d, lo, hi = key
        dom = self.domains[d]
        if self.cache_dir:
            path = self._cache_path(key)
            if os.path.exists(path) and os.path.getsize(path) == self.nbytes(key):
                with self._cond:
                    self.stats["cache_hits"] += 1
                return np.fromfile(path, dom.dtype)
        data = dom.read(lo, hi)
        with self._cond:
            self.stats["requests"] += len(dom.pieces(lo, hi))
            self.stats["bytes_read"] += data.nbytes
            self.stats["chunks_fetched"] += 1
            self.fetched.append(key)
        if self.cache_dir:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
            data.tofile(tmp)
            os.replace(tmp, path)
        return data
