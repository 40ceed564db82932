"""Turns a run's ``DataConfig`` into data: in-step streams or a host-side loader.

``data.loader="device"``: every domain's tokens live on the device and the jitted step samples
them (``InMemoryDomains``). ``data.loader="host"``: memmapped token files sampled on the host
with the mixture read from the train state each step (``HostSource`` + ``Prefetcher``); its
position is stored in ``TrainState.stream_state`` so a checkpoint restores it exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ado_jax.data.host_source import HostSource, Prefetcher, PrefetchState
from ado_jax.data.in_memory import InMemoryDomains


def ensure_corpus(corpus_dir: str):
    """Uses the corpus at ``corpus_dir`` (built-in or ``corpus encode``d); builds the built-in one
    there (atomically) when the directory holds no corpus yet. The token files are checked when
    they are opened (``open_domains``), so an existing corpus is not re-read here."""
    from pathlib import Path

    from ado_jax.data.corpus import MANIFEST, build_corpus

    if (Path(corpus_dir) / MANIFEST).exists():
        return Path(corpus_dir)
    return build_corpus(corpus_dir)


def _domain_arrays(cfg, split: str, min_tokens: int) -> dict:
    d = cfg.data
    if d.source == "builtin":
        from ado_jax.data.builtin import builtin_domains, split_tokens

        train, held = split_tokens(builtin_domains(d.max_bytes_per_domain), d.heldout_fraction)
        arrays = train if split == "train" else held
    else:
        from ado_jax.data.corpus import load_manifest
        from ado_jax.data.token_files import open_domains

        ensure_corpus(d.corpus_dir)  # the manifest's domain list is what must be there
        arrays = open_domains(d.corpus_dir, split, load_manifest(d.corpus_dir)["names"], min_tokens=min_tokens)
    if d.domains:
        unknown = sorted(set(d.domains) - set(arrays))
        if unknown:
            raise ValueError(f"data.domains: unknown domain(s) {unknown}; available: {sorted(arrays)}")
        arrays = {k: arrays[k] for k in d.domains}
    return arrays


def data_vocab_size(cfg) -> int:
    """Vocabulary the data needs: 256 for builtin bytes, the corpus tokenizer's otherwise."""
    if cfg.data.source == "builtin":
        return 256
    from ado_jax.data.tokenizer import load_tokenizer

    return load_tokenizer(ensure_corpus(cfg.data.corpus_dir)).vocab_size


def train_stream(cfg) -> InMemoryDomains:
    """The in-step training stream over every domain's train split."""
    T = cfg.train.seq_len
    return InMemoryDomains.from_arrays(_domain_arrays(cfg, "train", T + 2), cfg.train.batch_size, T,
                                       cfg.model.vocab_size)


def heldout_stream(cfg) -> InMemoryDomains:
    """The held-out split as a stream (for fixed evaluation batches of micro-batch size)."""
    T = cfg.train.seq_len
    return InMemoryDomains.from_arrays(_domain_arrays(cfg, "heldout", T + 2),
                                       cfg.train.batch_size // cfg.train.grad_accum, T, cfg.model.vocab_size)


class HostLoader:
    """Host-side batches drawn with the train state's current mixture, prefetched ``lag`` ahead."""

    def __init__(self, cfg, mesh):
        from ado_jax.sharding import global_batch

        t = cfg.train
        self.source = HostSource(_domain_arrays(cfg, "train", t.seq_len + 2), t.batch_size, t.seq_len,
                                 cfg.model.vocab_size)
        self.names = tuple(self.source.names)
        self.lag, self.seed, self.mesh, self._global = cfg.data.prefetch, t.seed, mesh, global_batch
        self.prefetcher = None

    def init_state(self, weights_D) -> PrefetchState:
        """The stream state of a fresh run, as device-friendly arrays."""
        w = np.tile(np.asarray(weights_D, np.float32), (self.lag, 1))
        return PrefetchState(jnp.int32(self.seed), jnp.int32(0), jnp.asarray(w))

    def start(self, stream_state: PrefetchState) -> None:
        """Starts (or resumes) prefetching at the position saved in ``stream_state``."""
        self.prefetcher = Prefetcher.restore(self.source, jax.device_get(stream_state))

    def state(self) -> PrefetchState:
        """The loader's position (seed, step, pending weights ``[k, D]``) as arrays, to checkpoint."""
        s = self.prefetcher.state
        return PrefetchState(jnp.int32(s.seed), jnp.int32(s.step), jnp.asarray(s.pending_weights))

    def next(self, weights_D) -> dict:
        """This step's batch as global arrays; each process contributes its rows of the batch."""
        batch = self.prefetcher.next(np.asarray(jax.device_get(weights_D)))
        n, i = jax.process_count(), jax.process_index()
        rows = len(batch["domain"]) // n
        return self._global({k: v[i * rows:(i + 1) * rows] for k, v in batch.items()}, self.mesh)

    def close(self) -> None:
        """Stops the prefetch thread, if any."""
        if self.prefetcher is not None:
            self.prefetcher.close()
