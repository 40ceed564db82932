"""Memmapped token domains sampled on the host with the current mixture, plus a prefetcher.

For corpora too large for device memory (the Pile, SlimPajama, FineWeb as ``.bin`` token files).
The batch of step ``t`` is a pure function of ``(seed, t, weights_D)``: a generator seeded with
``SeedSequence([seed, t])`` draws each sequence's domain by inverse CDF of ``weights_D`` and a
uniform window start inside that domain, so nothing but ``(seed, step)`` has to be saved::

    source = HostSource(open_domains(corpus_dir, "train", min_tokens=T + 1), batch_size=B, seq_len=T)
    it = Prefetcher(source, seed=0, lag=1)                  # or Prefetcher.restore(source, saved)
    for step in ...:
        batch = it.next(np.asarray(train_state.mixer_state.weights))   # numpy int32 arrays
        train_state, metrics = train_step(train_state, FixedBatch(batch))   # data.base.FixedBatch
        saved = it.state                                     # checkpoint with the train state

``lag``: with ``lag=0`` batch ``t`` uses the weights passed at call ``t`` (exact, no overlap with
the device step). With ``lag=k >= 1`` batch ``t`` uses the weights passed at call ``t - k``
(the initial weights for ``t < k``) and is drawn in a background thread while step ``t - 1``
runs; the ``k`` pending weight vectors are part of ``state``, so a restored iterator replays the
same batches. Either way batch ``t`` is a pure function of ``(seed, t, weights history)``.
Why not grain: grain mixes datasets with weights fixed when the pipeline is built; here they
change every step from inside the train state, and the whole position is two integers.
"""

from __future__ import annotations

import concurrent.futures as cf
from typing import Mapping, NamedTuple

import numpy as np

from ado_jax.mixing.base import check_weights


class PrefetchState(NamedTuple):
    """Checkpointable position of a ``Prefetcher``.

    Attributes:
      seed: [] int64; step: [] int64 — the step of the next batch ``next`` returns.
      pending_weights: [lag, D] float32 — weights of the batches for steps step..step+lag-1.
    """

    seed: np.ndarray
    step: np.ndarray
    pending_weights: np.ndarray


def draw_domains(rng: np.random.Generator, weights_D: np.ndarray, batch_size: int) -> np.ndarray:
    """[B] int32 domain ids ~ Categorical(weights_D) by inverse CDF (zero-weight domains never drawn)."""
    cdf_D = np.cumsum(np.asarray(weights_D, np.float64))
    u_B = rng.random(batch_size) * cdf_D[-1]
    return np.minimum(np.searchsorted(cdf_D, u_B, side="right"), len(cdf_D) - 1).astype(np.int32)


class HostSource:
    """Random ``seq_len + 1`` windows from per-domain token arrays (np.memmap or ndarray)."""

    def __init__(self, domains: Mapping[str, np.ndarray], batch_size: int, seq_len: int,
                 vocab_size: int | None = None):
        if not domains:
            raise ValueError("no domains given: expected at least one {name: tokens} entry")
        if batch_size <= 0 or seq_len <= 0:
            raise ValueError(f"batch_size and seq_len must be positive, got {batch_size}, {seq_len}")
        self.names = tuple(domains)
        self.arrays = [domains[n] for n in self.names]
        for name, arr in zip(self.names, self.arrays):
            if arr.ndim != 1 or arr.size < seq_len + 1:
                raise ValueError(f"domain {name!r} has {arr.size} tokens; need at least seq_len+1={seq_len + 1}")
        self.lengths = np.array([a.size for a in self.arrays], np.int64)
        self.batch_size, self.seq_len, self.vocab_size = batch_size, seq_len, vocab_size

    @property
    def num_domains(self) -> int:
        return len(self.names)

    def sizes(self) -> np.ndarray:
        """[D] tokens per domain (for the natural mixture)."""
        return self.lengths.copy()

    def sample(self, seed: int, step: int, weights_D) -> dict:
        """The batch of ``step``: inputs/targets int32[B, T], domain int32[B] (numpy)."""
        w_D = check_weights(weights_D, self.num_domains)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(step)]))
        domain_B = draw_domains(rng, w_D, self.batch_size)
        T = self.seq_len
        start_B = (rng.random(self.batch_size) * (self.lengths[domain_B] - T)).astype(np.int64)
        seq_BT = np.empty((self.batch_size, T + 1), np.int32)
        for i, (d, s) in enumerate(zip(domain_B.tolist(), start_B.tolist())):
            seq_BT[i] = self.arrays[d][s:s + T + 1]
        if self.vocab_size is not None and seq_BT.max() >= self.vocab_size:
            row = int(np.argmax(seq_BT.max(axis=1) >= self.vocab_size))
            raise ValueError(f"token id {int(seq_BT.max())} >= vocab_size {self.vocab_size} in domain "
                             f"{self.names[domain_B[row]]!r} near offset {start_B[row]} (corrupted token file?)")
        return {"inputs": seq_BT[:, :-1], "targets": seq_BT[:, 1:], "domain": domain_B}


class Prefetcher:
    """Iterates a source's batches, drawing up to ``lag`` batches ahead in background threads.

    ``source`` is any object with ``num_domains`` and ``sample(seed, step, weights_D) -> batch``
    (``HostSource``, ``ArrayRecordSource``).
    """

    def __init__(self, source, seed: int = 0, lag: int = 1, initial_weights=None, step: int = 0,
                 workers: int | None = None):
        """``workers``: threads drawing batches (default ``lag``; batches are independent, so
        I/O-bound sources such as array_record scale with more; numpy releases the GIL on copies)."""
        if lag < 0:
            raise ValueError(f"lag must be >= 0, got {lag}")
        D = source.num_domains
        w0 = check_weights(np.full(D, 1.0 / D) if initial_weights is None else initial_weights, D,
                           "initial_weights")
        self._init(source, PrefetchState(np.int64(seed), np.int64(step), np.tile(w0, (lag, 1))), workers)

    @classmethod
    def restore(cls, source, state: PrefetchState, workers: int | None = None) -> "Prefetcher":
        """A prefetcher resuming exactly at a saved ``state`` (e.g. from a checkpoint)."""
        self = cls.__new__(cls)
        pending = np.asarray(state.pending_weights, np.float32).reshape(-1, source.num_domains)
        self._init(source, PrefetchState(np.int64(state.seed), np.int64(state.step), pending), workers)
        return self

    def _init(self, source, state: PrefetchState, workers: int | None) -> None:
        self.source, self.lag = source, state.pending_weights.shape[0]
        self._seed, self._step = int(state.seed), int(state.step)
        self._pending = [np.asarray(w, np.float32) for w in state.pending_weights]
        self._pool = cf.ThreadPoolExecutor(max_workers=workers or self.lag) if self.lag else None
        self._futures = [self._submit(self._step + j, w) for j, w in enumerate(self._pending)]

    def _submit(self, step: int, weights_D: np.ndarray):
        return self._pool.submit(self.source.sample, self._seed, step, weights_D)

    @property
    def state(self) -> PrefetchState:
        """The position to checkpoint: the next ``next`` call returns batch ``state.step``."""
        pending = np.stack(self._pending) if self._pending else np.zeros((0, self.source.num_domains), np.float32)
        return PrefetchState(np.int64(self._seed), np.int64(self._step), pending)

    def next(self, weights_D) -> dict:
        """Returns the batch of the current step; ``weights_D`` [D] is the train state's mixture now."""
        w_D = check_weights(weights_D, self.source.num_domains)
        if self.lag == 0:
            batch = self.source.sample(self._seed, self._step, w_D)
        else:
            batch = self._futures.pop(0).result()
            self._pending = self._pending[1:] + [w_D]
            self._futures.append(self._submit(self._step + self.lag, w_D))
        self._step += 1
        return batch

    def close(self) -> None:
        """Stops the background thread (pending batches are dropped; ``state`` still restores them)."""
        self._pool = stop_pool(self._pool, self._futures)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def stop_pool(pool, futures) -> None:
    """Cancels ``futures`` not yet started and shuts ``pool`` down, waiting for the running one;
    returns None (for ``self._pool = stop_pool(...)``). A None ``pool`` is already stopped."""
    if pool is not None:
        for f in futures:
            f.cancel()
        pool.shutdown(wait=True)
