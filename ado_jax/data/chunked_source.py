"""Host batches from token domains in an object store: sequences cut from large chunks read ahead.

A memmapped file can give a uniform random window per sequence; a GET per sequence is
latency-bound (50 ms each: 20 sequences/s per thread). ``ChunkedSource`` instead reads each
domain in *chunks* of ``chunk_bytes`` (default 8 MiB) and cuts every sequence from a chunk in
memory; ``chunk_reader.ChunkReader`` fetches the chunks the next batches will need in background
threads, under a memory cap.

Layout: domain ``d`` has ``N`` tokens and ``S = N - T`` window starts (windows are ``T + 1``
tokens). Its starts are split into ``n = ceil(S / (C - T))`` equal runs for chunks of ``C``
tokens; chunk ``c`` is the token range that holds every window starting in its run (neighbours
overlap by ``T`` tokens, so no window is lost at a boundary), and it gives ``W`` windows, about
as many as fit in it end to end.

Sampling: the domains of the global batch of step ``t`` are drawn exactly as ``HostSource`` draws
them (``SeedSequence([seed, t])``, inverse CDF of the weights). Process ``p`` of ``P`` fills only
its rows ``[p B/P, (p+1) B/P)``; each (process, domain) pair is a stream of windows: its ``j``-th
window is window ``j mod W`` of its entry ``k = j // W``, entry ``k`` being chunk
``perm_e[g mod n]`` with ``g = p + k P`` and ``perm_e`` a seeded permutation of the ``n`` chunks
for pass ``e = g // n`` (so the processes read disjoint chunks of a pass), and the ``W`` window
starts of an entry uniform within its chunk, seeded by ``(seed, domain, g)``. The whole position
is ``consumed[P, D]``, the windows each stream has given, advanced deterministically by each
step's draw on every process: saved with the step and the pending weights it makes resume exact.
"""

from __future__ import annotations

import concurrent.futures as cf
import zlib
from typing import Mapping, NamedTuple

import numpy as np

from ado_jax.data.chunk_reader import ChunkReader
from ado_jax.data.host_source import draw_domains, stop_pool
from ado_jax.mixing.base import check_weights

MAX_AHEAD = 16  # read-ahead entries per domain at most (the memory cap usually binds first)


class ChunkedState(NamedTuple):
    """Checkpointable position of a ``ChunkedPrefetcher``.

    Attributes:
      seed: []; step: [] — the step of the next batch ``next`` returns.
      pending_weights: [lag, D] float32 — weights of the batches for steps step..step+lag-1.
      consumed: [P, D] — windows each process's stream of each domain gave before batch ``step``.
    """

    seed: np.ndarray
    step: np.ndarray
    pending_weights: np.ndarray
    consumed: np.ndarray


class ChunkedSource:
    """Batches from ``domains`` (``{name: RemoteTokens [N]}``) cut out of chunks read ahead.

    ``plan`` (cheap, in step order, on every process) draws a global batch's domains and
    advances the stream positions; ``fill`` (one thread) cuts this process's rows out of chunks.
    """

    def __init__(self, domains: Mapping, batch_size: int, seq_len: int, vocab_size: int | None = None, *,
                 chunk_bytes: int = 8 << 20, readahead_bytes: int = 1 << 30, threads: int = 4,
                 cache_dir: str | None = None, process_index: int = 0, process_count: int = 1):
        if batch_size <= 0 or seq_len <= 0 or batch_size % process_count:
            raise ValueError(f"batch_size {batch_size} must be positive and divisible by the {process_count} "
                             f"processes; seq_len {seq_len} positive")
        self.names, T = tuple(domains), seq_len
        self.batch_size, self.seq_len, self.vocab_size = batch_size, seq_len, vocab_size
        self.p, self.P, self.rows = process_index, process_count, batch_size // process_count
        self.arrays = [domains[n] for n in self.names]
        self.lengths = np.array([a.size for a in self.arrays], np.int64)
        for name, n in zip(self.names, self.lengths):
            if n < T + 1:
                raise ValueError(f"domain {name!r} has {n} tokens; need at least seq_len+1={T + 1}")
        C = np.array([max(1, chunk_bytes // a.dtype.itemsize) for a in self.arrays], np.int64)
        self.starts = self.lengths - T                                  # [D] window starts
        self.n_chunks = -(-self.starts // np.maximum(C - T, 1))         # [D]
        self.windows = np.maximum(1, -(-(self.starts // self.n_chunks) // (T + 1)))  # [D] W
        self._crc = [zlib.crc32(n.encode()) for n in self.names]
        biggest = [((-(-s // n)) + T) * a.dtype.itemsize for s, n, a in zip(self.starts, self.n_chunks, self.arrays)]
        need = sum(biggest) + max(biggest)
        if readahead_bytes < need:
            raise ValueError(f"data.readahead_mb={readahead_bytes / 2**20:g} MiB cannot hold one chunk of each of the "
                             f"{len(self.names)} domains plus one ({need / 2**20:.1f} MiB): raise data.readahead_mb "
                             "or lower data.chunk_mb")
        self.reader = ChunkReader(self.arrays, readahead_bytes, threads, cache_dir)
        self._perms: dict = {}
        self._cur: dict[int, tuple] = {}                     # d -> (seed, k, key, data, starts_W)
        self._next = np.zeros(len(self.names), np.int64)     # this process's next window per domain (fill side)
        self._rate = np.zeros(len(self.names))               # this process's windows per batch, EMA (plan side)
        self._ar = np.arange(T + 1)

    @property
    def num_domains(self) -> int:
        return len(self.names)

    def sizes(self) -> np.ndarray:
        """[D] tokens per domain (for the natural mixture)."""
        return self.lengths.copy()

    def plan(self, seed: int, step: int, weights_D, consumed_PD: np.ndarray):
        """``(domain_B int32 [B], window_B int64 [B], consumed_PD after)``: the global batch's
        domains (as ``HostSource``) and each row's window index in its (process, domain) stream."""
        D, R = self.num_domains, self.rows
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(step)]))
        domain_B = draw_domains(rng, check_weights(weights_D, D), self.batch_size)
        consumed = np.array(consumed_PD, np.int64).reshape(self.P, D)
        window_B = np.empty(self.batch_size, np.int64)
        for p in range(self.P):
            dom = domain_B[p * R:(p + 1) * R]
            order = np.argsort(dom, kind="stable")
            counts = np.bincount(dom, minlength=D)
            first = np.concatenate([[0], np.cumsum(counts)[:-1]])
            rank = np.empty(R, np.int64)
            rank[order] = np.arange(R) - first[dom[order]]
            window_B[p * R:(p + 1) * R] = consumed[p, dom] + rank
            consumed[p] += counts
            if p == self.p:
                self._rate = counts if not self._rate.any() else 0.9 * self._rate + 0.1 * counts
        return domain_B, window_B, consumed

    def _perm(self, seed: int, d: int, epoch: int) -> np.ndarray:
        key = (seed, d, epoch)
        if key not in self._perms:
            if len(self._perms) > 64 * self.num_domains:  # read-ahead spans a few passes of small domains
                self._perms.clear()
            rng = np.random.default_rng(np.random.SeedSequence([seed, self._crc[d], epoch, 1]))
            self._perms[key] = rng.permutation(int(self.n_chunks[d]))
        return self._perms[key]

    def entry(self, seed: int, d: int, k: int) -> tuple[tuple[int, int, int], int]:
        """``(chunk key (d, lo, hi), g)`` of entry ``k`` of this process's stream of domain ``d``."""
        g = self.p + k * self.P
        n, S, T = int(self.n_chunks[d]), int(self.starts[d]), self.seq_len
        c = int(self._perm(seed, d, g // n)[g % n])
        lo, hi = c * S // n, (c + 1) * S // n
        return (d, lo, hi + T), g

    def _window_starts(self, seed: int, d: int, key, g: int) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence([seed, self._crc[d], g, 2]))
        return rng.integers(0, key[2] - key[1] - self.seq_len, int(self.windows[d]))

    def _use(self, seed: int, d: int, k: int):
        cur = self._cur.get(d)
        if cur is not None and cur[:2] == (seed, k):
            return cur[3], cur[4]
        key, g = self.entry(seed, d, k)
        data = self.reader.get(key)
        if cur is not None:
            self.reader.release(cur[2])
        self._cur[d] = (seed, k, key, data, self._window_starts(seed, d, key, g))
        return data, self._cur[d][4]

    def fill(self, seed: int, domain_B: np.ndarray, window_B: np.ndarray) -> dict:
        """This process's rows of the planned batch: inputs/targets int32[B/P, T], domain int32[B/P]."""
        sl = slice(self.p * self.rows, (self.p + 1) * self.rows)
        dom_R, win_R = domain_B[sl], window_B[sl]
        out = np.empty((self.rows, self.seq_len + 1), np.int32)
        groups = []
        for d in np.unique(dom_R).tolist():
            rows = np.flatnonzero(dom_R == d)
            k_r, i_r = np.divmod(win_R[rows], self.windows[d])
            groups += [(d, int(k), rows[k_r == k], i_r[k_r == k]) for k in np.unique(k_r)]
            self._next[d] = win_R[rows].max() + 1
        self.reader.want([self.entry(seed, d, k)[0] for d, k, _, _ in groups] + self._ahead(seed))
        for d, k, rows, idx in groups:
            data, starts_W = self._use(seed, d, k)
            out[rows] = data[starts_W[idx][:, None] + self._ar]
        if self.vocab_size is not None and out.size and out.max() >= self.vocab_size:
            row = int(np.argmax(out.max(axis=1) >= self.vocab_size))
            raise ValueError(f"token id {int(out.max())} >= vocab_size {self.vocab_size} in domain "
                             f"{self.names[dom_R[row]]!r} (corrupted token file?)")
        self.reader.want(self._ahead(seed))
        return {"inputs": out[:, :-1], "targets": out[:, 1:], "domain": dom_R.astype(np.int32)}

    def _ahead(self, seed: int) -> list:
        """Chunk keys to read ahead, soonest needed first (by each domain's recent rate), as many as
        the memory cap leaves room for beside the chunks in use. Chunks already read stay on the
        list before new ones are added, so a chunk is not dropped and read again when the order
        of two domains' next chunks flips with the batches' noise."""
        soon, rate = [], self._rate
        room = self.reader.cap_bytes - sum(self.reader.nbytes(c[2]) for c in self._cur.values())
        for d in np.flatnonzero(rate > 0).tolist():
            W, nxt = int(self.windows[d]), int(self._next[d])
            k0 = nxt // W
            t = ((k0 + 1) * W - nxt) / rate[d]
            fits = room // self.reader.nbytes(self.entry(seed, d, k0 + 1)[0])  # more could not be held anyway
            for j in range(1, min(MAX_AHEAD, fits + 1) + 1):
                soon.append((t + (j - 1) * W / rate[d], d, k0 + j))
        pinned = {c[2] for c in self._cur.values()}
        order = list(dict.fromkeys(k for _, d, kk in sorted(soon) if (k := self.entry(seed, d, kk)[0]) not in pinned))
        held, keep = self.reader.held_keys(), set()
        for key in [k for k in order if k in held] + [k for k in order if k not in held]:
            room -= self.reader.nbytes(key)
            if room < 0:
                break
            keep.add(key)
        return [k for k in order if k in keep]

    def close(self) -> None:
        """Stops the reader's threads and drops its chunks."""
        self.reader.close()


class ChunkedPrefetcher:
    """Iterates a ``ChunkedSource``'s batches, planning them in step order and filling up to
    ``lag`` ahead in a background thread (the ``host_source.Prefetcher`` contract: batch ``t``
    uses the weights passed ``lag`` calls earlier)."""

    def __init__(self, source: ChunkedSource, state: ChunkedState):
        self.source = source
        D = source.num_domains
        pending = np.asarray(state.pending_weights, np.float32).reshape(-1, D)
        self.lag, self._seed, self._step = pending.shape[0], int(state.seed), int(state.step)
        consumed = np.asarray(state.consumed, np.int64)
        if consumed.shape != (source.P, D):
            raise ValueError(f"the loader state holds positions for {consumed.shape} (processes, domains); this "
                             f"run has ({source.P}, {D}): resume with the same number of processes and domains")
        self._consumed = consumed
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []   # (weights, consumed before)
        self._futures: list[cf.Future] = []
        self._pool = cf.ThreadPoolExecutor(max_workers=1) if self.lag else None
        for j, w in enumerate(pending):
            self._submit(self._step + j, w)

    def _plan(self, step: int, w_D: np.ndarray):
        before = self._consumed
        domain_B, window_B, self._consumed = self.source.plan(self._seed, step, w_D, before)
        return before, domain_B, window_B

    def _submit(self, step: int, w_D: np.ndarray) -> None:
        before, domain_B, window_B = self._plan(step, w_D)
        self._pending.append((np.asarray(w_D, np.float32), before))
        self._futures.append(self._pool.submit(self.source.fill, self._seed, domain_B, window_B))

    @property
    def state(self) -> ChunkedState:
        """The position to checkpoint: the next ``next`` call returns batch ``state.step``."""
        D = self.source.num_domains
        pending = (np.stack([w for w, _ in self._pending]) if self._pending else np.zeros((0, D), np.float32))
        consumed = self._pending[0][1] if self._pending else self._consumed
        return ChunkedState(np.int64(self._seed), np.int64(self._step), pending, consumed.copy())

    def next(self, weights_D) -> dict:
        """This process's rows of the current step's batch; ``weights_D`` [D] is the mixture now."""
        w_D = check_weights(weights_D, self.source.num_domains)
        if self.lag == 0:
            _, domain_B, window_B = self._plan(self._step, w_D)
            batch = self.source.fill(self._seed, domain_B, window_B)
        else:
            batch = self._futures.pop(0).result()
            self._pending.pop(0)
            self._submit(self._step + self.lag, w_D)
        self._step += 1
        return batch

    def close(self) -> None:
        """Stops the fill thread (pending batches are dropped; ``state`` still restores them)."""
        self._pool = stop_pool(self._pool, self._futures)
