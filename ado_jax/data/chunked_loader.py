"""The host loader for a corpus in an object store (``data.corpus_dir=gs://...``, ``data.loader=host``).

A ``Loader`` (``ado_jax.data.base``) like ``setup.HostLoader``, over a ``ChunkedSource``: each
process reads and fills only its own rows of every global batch, from chunks of
``data.chunk_mb`` read ahead by ``data.reader_threads`` threads within ``data.readahead_mb``
(optionally cached in ``data.cache_dir``). Its position, ``ChunkedState`` (seed, step, pending
weights, and the ``[P, D]`` stream positions), replaces ``TrainState.stream_state`` in every
checkpoint, so a resumed run draws exactly the batches the interrupted one would have.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ado_jax.data.base import FixedBatch
from ado_jax.data.chunked_source import ChunkedPrefetcher, ChunkedSource, ChunkedState

MiB = 1 << 20


def source_from_config(cfg, domains, process_index: int | None = None,
                       process_count: int | None = None) -> ChunkedSource:
    """A ``ChunkedSource`` over ``domains`` (``{name: RemoteTokens}``) with the run's batch shape and
    ``data`` reader settings; this process's index and count by default."""
    d, t = cfg.data, cfg.train
    return ChunkedSource(domains, t.batch_size, t.seq_len, cfg.model.vocab_size or None,
                         chunk_bytes=int(d.chunk_mb * MiB), readahead_bytes=int(d.readahead_mb * MiB),
                         threads=d.reader_threads, cache_dir=d.cache_dir or None,
                         process_index=jax.process_index() if process_index is None else process_index,
                         process_count=jax.process_count() if process_count is None else process_count)


class ChunkedLoader:
    """Host batches cut from object-store chunks, with the train state's mixture, ``lag`` ahead."""

    def __init__(self, cfg, mesh, domains):
        from ado_jax.sharding import global_batch

        self.source = source_from_config(cfg, domains)
        self.names = tuple(self.source.names)
        self.lag, self.seed, self.mesh, self._global = cfg.data.prefetch, cfg.train.seed, mesh, global_batch
        self.prefetcher = None

    def sizes(self) -> np.ndarray:
        """``[D]`` tokens per domain."""
        return self.source.sizes()

    def init_state(self, key, weights_D) -> ChunkedState:
        """A fresh run's position: ``train.seed``, step 0, ``weights_D: [D]`` pending for the first
        ``lag`` batches, every stream at window 0 (``consumed: [P, D]``). Traceable; ``key`` unused."""
        w = jnp.tile(jnp.asarray(weights_D, jnp.float32), (self.lag, 1))
        consumed = jnp.zeros((self.source.P, self.source.num_domains), jnp.int32)
        return ChunkedState(jnp.int32(self.seed), jnp.int32(0), w, consumed)

    def start(self, stream_state: ChunkedState) -> None:
        """Starts (or resumes) at the position saved in ``stream_state``."""
        if self.prefetcher is not None:
            self.prefetcher.close()
        self.prefetcher = ChunkedPrefetcher(self.source, ChunkedState(*jax.device_get(tuple(stream_state))))

    def state(self, stream_state) -> ChunkedState:
        """The loader's position as arrays, to checkpoint (the step leaves ``stream_state`` stale)."""
        s = self.prefetcher.state
        return ChunkedState(jnp.int32(s.seed), jnp.int32(s.step), jnp.asarray(s.pending_weights),
                            jnp.asarray(s.consumed, jnp.int32))

    def step_input(self, weights_D) -> FixedBatch:
        """This step's batch as global arrays, this process's rows filled here, drawn with
        ``weights_D: [D]`` (or, with ``lag`` k, the weights of k calls earlier)."""
        batch = self.prefetcher.next(np.asarray(jax.device_get(weights_D)))
        return FixedBatch(self._global(batch, self.mesh))

    def close(self) -> None:
        """Stops the fill thread and the reader's threads."""
        if self.prefetcher is not None:
            self.prefetcher.close()
        self.source.close()
