"""Turns a run's ``DataConfig`` into data: one ``Loader`` the loop drives, in-step or host-side.

``data.loader="device"``: every domain's tokens live on the device and the jitted step samples
them (``InMemoryDomains`` behind a ``DeviceLoader``). ``data.loader="host"``: memmapped token
files sampled on the host with the mixture read from the train state each step (``HostSource`` +
``Prefetcher`` behind a ``HostLoader``); its position is stored in ``TrainState.stream_state`` so
a checkpoint restores it exactly. A corpus in an object store (``data.corpus_dir=gs://...``) is
read by byte ranges (``remote_tokens``): with ``data.loader="host"`` in chunks read ahead
(``chunked_loader.ChunkedLoader``), else downloaded whole. All follow ``ado_jax.data.base.Loader``;
``train_loader`` picks one from the config.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ado_jax.data.base import FixedBatch, Stream
from ado_jax.data.host_source import HostSource, Prefetcher, PrefetchState
from ado_jax.data.in_memory import InMemoryDomains, StreamState


def ensure_corpus(corpus_dir: str):
    """Uses the corpus at ``corpus_dir`` (built-in or ``corpus encode``d); builds the built-in one
    there (atomically) when the directory holds no corpus yet, saying so in one line first when
    the directory does not exist (a mistyped path). The token files are checked when they are
    opened (``open_domains``), so an existing corpus is not re-read here. An object-store
    ``corpus_dir`` (``gs://...``) must hold an uploaded corpus (FileNotFoundError saying how to
    upload one otherwise)."""
    from pathlib import Path

    from ado_jax.data.corpus import MANIFEST, build_corpus

    if "://" in str(corpus_dir):  # an object store: never built there (`ado-jax corpus upload` fills it)
        from ado_jax.data.remote_tokens import read_manifest

        read_manifest(corpus_dir)
        return corpus_dir
    if (Path(corpus_dir) / MANIFEST).exists():
        return Path(corpus_dir)
    if not Path(corpus_dir).exists():  # a mistyped data.corpus_dir would otherwise build silently
        print(f"data.corpus_dir={corpus_dir} does not exist: building the built-in corpus at "
              f"{Path(corpus_dir).resolve()} (set data.corpus_dir to an existing corpus to use that)", flush=True)
    return build_corpus(corpus_dir)


def parse_groups(groups) -> dict[str, list[str]]:
    """``["name=a+b", ...]`` (``data.groups``) as ``{name: [a, b]}``; ValueError naming a bad entry."""
    out = {}
    for item in groups:
        name, eq, members = str(item).partition("=")
        parts = [m.strip() for m in members.split("+") if m.strip()]
        if not eq or not name.strip() or not parts:
            raise ValueError(f"data.groups entry {item!r}: expected name=domain+domain+..., e.g. tech=code+manpages")
        if name.strip() in out:
            raise ValueError(f"data.groups: group {name.strip()!r} is defined twice")
        out[name.strip()] = parts
    return out


def _domain_arrays(cfg, split: str, min_tokens: int) -> tuple[dict, dict]:
    """``({name: tokens [N]}`` of the trained domains (``data.domains`` minus
    ``data.eval_only_domains``, merged per ``data.groups``), ``{name: tokens [N]}`` of the
    evaluation-only domains``)``, from one read of the source."""
    arrays = _source_arrays(cfg, split, min_tokens)
    d = cfg.data
    missing = sorted(set(d.eval_only_domains) - set(arrays))
    if missing:
        raise ValueError(f"data.eval_only_domains: unknown domain(s) {missing}; available: {sorted(arrays)}")
    eval_only = {k: arrays[k] for k in d.eval_only_domains}
    if d.domains:
        unknown = sorted(set(d.domains) - set(arrays))
        if unknown:
            raise ValueError(f"data.domains: unknown domain(s) {unknown}; available: {sorted(arrays)}")
        both = sorted(set(d.domains) & set(d.eval_only_domains))
        if both:
            raise ValueError(f"domain(s) {both} are both in data.domains and data.eval_only_domains")
        arrays = {k: arrays[k] for k in d.domains}
    else:
        arrays = {k: v for k, v in arrays.items() if k not in eval_only}
    return _merge_groups(arrays, parse_groups(d.groups)), eval_only


def _merge_groups(arrays: dict, groups: dict[str, list[str]]) -> dict:
    """Each group's member domains concatenated into one domain, at its first member's place;
    domains in no group stay as they are. (A host loader's memmaps are copied into memory; an
    object-store domain's objects are listed one after another, nothing is read.)"""
    if not groups:
        return arrays
    owner = {}
    for name, members in groups.items():
        for m in members:
            if m not in arrays:
                raise ValueError(f"data.groups: {name}={'+'.join(members)} names {m!r}, which is not a trained "
                                 f"domain; trained: {sorted(arrays)}")
            if m in owner:
                raise ValueError(f"data.groups: domain {m!r} is in two groups ({owner[m]}, {name})")
            owner[m] = name
    clash = sorted(set(groups) & (set(arrays) - set(owner)))
    if clash:
        raise ValueError(f"data.groups: group name(s) {clash} clash with ungrouped domains")
    from ado_jax.data.remote_tokens import RemoteTokens

    out = {}
    for k, v in arrays.items():
        if k not in owner:
            out[k] = v
        elif owner[k] not in out:
            members = [arrays[m] for m in groups[owner[k]]]
            out[owner[k]] = (RemoteTokens.concat(members) if isinstance(v, RemoteTokens)
                             else np.concatenate([np.asarray(a) for a in members]))
    return out


def _source_arrays(cfg, split: str, min_tokens: int) -> dict:
    """Every domain of the configured source (builtin text or a corpus directory), by name."""
    d = cfg.data
    if d.source == "builtin":
        from ado_jax.data.builtin import builtin_domains, split_tokens

        train, held = split_tokens(builtin_domains(d.max_bytes_per_domain), d.heldout_fraction)
        arrays = train if split == "train" else held
    elif "://" in d.corpus_dir:  # an object store: metadata now, tokens by byte ranges when read
        from ado_jax.data.remote_tokens import open_remote_domains

        arrays = open_remote_domains(d.corpus_dir, split, min_tokens=min_tokens)
    else:
        from ado_jax.data.corpus import load_manifest
        from ado_jax.data.token_files import open_domains

        ensure_corpus(d.corpus_dir)  # the manifest's domain list is what must be there
        arrays = open_domains(d.corpus_dir, split, load_manifest(d.corpus_dir)["names"], min_tokens=min_tokens)
    return arrays


def data_vocab_size(cfg) -> int:
    """Vocabulary the data needs: 256 for builtin bytes, the corpus tokenizer's otherwise."""
    if cfg.data.source == "builtin":
        return 256
    if "://" in cfg.data.corpus_dir:
        from ado_jax.data.remote_tokens import remote_vocab_size

        return remote_vocab_size(cfg.data.corpus_dir)
    from ado_jax.data.tokenizer import load_tokenizer

    return load_tokenizer(ensure_corpus(cfg.data.corpus_dir)).vocab_size


def resolve_vocab_size(cfg):
    """``cfg`` with ``model.vocab_size`` taken from the data when it is 0 (``data_vocab_size``).

    Returns a copy (``dataclasses.replace``) when it resolves, ``cfg`` itself otherwise; ``cfg``
    is never changed."""
    if cfg.model.vocab_size != 0:
        return cfg
    import dataclasses

    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=data_vocab_size(cfg)))


def train_stream(cfg) -> InMemoryDomains:
    """The in-step training stream over every domain's train split."""
    T = cfg.train.seq_len
    return InMemoryDomains.from_arrays(_domain_arrays(cfg, "train", T + 2)[0], cfg.train.batch_size, T,
                                       cfg.model.vocab_size)


def heldout_stream(cfg, with_eval_only: bool = False) -> InMemoryDomains:
    """The held-out split of the trained domains as a stream (for fixed evaluation batches of
    micro-batch size): what a mixer sees. ``with_eval_only``: followed by the evaluation-only
    domains (``data.eval_only_domains``), for the run's evaluation."""
    T = cfg.train.seq_len
    arrays, eval_only = _domain_arrays(cfg, "heldout", T + 2)
    if with_eval_only:
        arrays = {**arrays, **eval_only}
    return InMemoryDomains.from_arrays(arrays, cfg.train.batch_size // cfg.train.grad_accum, T, cfg.model.vocab_size)


def train_loader(cfg, mesh):
    """The run's training data as a ``Loader``: ``HostLoader`` when ``data.loader="host"`` (a
    ``ChunkedLoader`` when ``data.corpus_dir`` is in an object store), else a ``DeviceLoader``
    over ``train_stream(cfg)``. ``model.vocab_size`` must be resolved."""
    if cfg.data.loader != "host":
        return DeviceLoader(train_stream(cfg))
    if cfg.data.source == "corpus" and "://" in cfg.data.corpus_dir:
        from ado_jax.data.chunked_loader import ChunkedLoader

        return ChunkedLoader(cfg, mesh, _domain_arrays(cfg, "train", cfg.train.seq_len + 2)[0])
    return HostLoader(cfg, mesh)


class DeviceLoader:
    """An in-step stream as a ``Loader``: the step receives the stream itself and samples with
    ``state.mixer_state.weights`` inside jit; the stream state (its PRNG key) lives in the train
    state, so nothing runs on the host between steps.

    Attributes:
      stream: the ``InMemoryDomains`` (or any stream with ``names`` and ``sizes()``).
      names: its ``D`` domain names.
    """

    def __init__(self, stream: Stream):
        self.stream = stream
        self.names = tuple(stream.names)

    def sizes(self) -> np.ndarray:
        """``[D]`` tokens per domain."""
        return self.stream.sizes()

    def init_state(self, key, weights_D) -> StreamState:
        """``stream.init(key)``: the PRNG key ``[2]`` the first batch is drawn with (weights unused)."""
        return self.stream.init(key)

    def start(self, stream_state) -> None:
        """Nothing to start: the stream state travels inside the train state."""

    def step_input(self, weights_D) -> Stream:
        """The stream itself (its token arrays are arguments of the jitted step); ``weights_D``
        ``[D]`` is read in the step from the train state instead."""
        return self.stream

    def state(self, stream_state) -> StreamState:
        """``stream_state`` as is: the step has already advanced it."""
        return stream_state

    def close(self) -> None:
        """Nothing to release."""


class HostLoader:
    """Host-side batches drawn with the train state's current mixture, prefetched ``lag`` ahead.

    A ``Loader``: each step receives ``FixedBatch(batch)``; the step passes
    ``TrainState.stream_state`` through unchanged, and ``state`` gives the prefetcher's position
    to checkpoint in its place.
    """

    def __init__(self, cfg, mesh):
        from ado_jax.sharding import global_batch

        t = cfg.train
        self.source = HostSource(_domain_arrays(cfg, "train", t.seq_len + 2)[0], t.batch_size, t.seq_len,
                                 cfg.model.vocab_size)
        self.names = tuple(self.source.names)
        self.lag, self.seed, self.mesh, self._global = cfg.data.prefetch, t.seed, mesh, global_batch
        self.prefetcher = None

    def sizes(self) -> np.ndarray:
        """``[D]`` tokens per domain."""
        return self.source.sizes()

    def init_state(self, key, weights_D) -> PrefetchState:
        """The stream state of a fresh run, as device-friendly arrays: ``train.seed``, step 0 and
        ``weights_D: [D]`` pending for the first ``lag`` batches (``key`` is unused). Traceable."""
        w = jnp.tile(jnp.asarray(weights_D, jnp.float32), (self.lag, 1))
        return PrefetchState(jnp.int32(self.seed), jnp.int32(0), w)

    def start(self, stream_state: PrefetchState) -> None:
        """Starts (or resumes) prefetching at the position saved in ``stream_state``."""
        self.prefetcher = Prefetcher.restore(self.source, jax.device_get(stream_state))

    def state(self, stream_state) -> PrefetchState:
        """The loader's position (seed, step, pending weights ``[k, D]``) as arrays, to checkpoint
        (the train state's ``stream_state`` is stale: the step does not advance it)."""
        s = self.prefetcher.state
        return PrefetchState(jnp.int32(s.seed), jnp.int32(s.step), jnp.asarray(s.pending_weights))

    def step_input(self, weights_D) -> FixedBatch:
        """This step's batch as global arrays (each process contributes its rows of the batch),
        drawn with ``weights_D: [D]`` (or, with ``lag`` k, the weights of k calls earlier)."""
        batch = self.prefetcher.next(np.asarray(jax.device_get(weights_D)))
        n, i = jax.process_count(), jax.process_index()
        rows = len(batch["domain"]) // n
        return FixedBatch(self._global({k: v[i * rows:(i + 1) * rows] for k, v in batch.items()}, self.mesh))

    def close(self) -> None:
        """Stops the prefetch thread, if any."""
        if self.prefetcher is not None:
            self.prefetcher.close()
