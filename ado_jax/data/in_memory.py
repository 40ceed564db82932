"""In-memory domains sampled *inside* the jitted step with the current mixture weights.

All domains' tokens live in one flat device array; a batch draws each sequence's domain from
``Categorical(weights_D)`` and a uniformly random window inside that domain. Pure and keyed:
the stream state is one PRNG key, so a restored key replays exactly the same batches.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


class StreamState(NamedTuple):
    """key: uint32[2] — the PRNG key of the next batch."""

    key: Array


class InMemoryDomains(eqx.Module):
    """A mixture stream over in-memory token arrays, one per domain.

    Attributes:
      tokens: [N] uint8/uint16/int32 — every domain's tokens, concatenated.
      starts: [D] int32 — offset of each domain in ``tokens``.
      lengths: [D] int32 — tokens per domain.
    """

    tokens: Array
    starts: Array
    lengths: Array
    names: tuple = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    seq_len: int = eqx.field(static=True)

    @staticmethod
    def from_arrays(domains: dict[str, np.ndarray], batch_size: int, seq_len: int,
                    vocab_size: int | None = None) -> "InMemoryDomains":
        """Builds the stream from ``{name: int array [N_d]}``; checks sizes and token ids."""
        if not domains:
            raise ValueError("no domains given: expected at least one {name: tokens} entry")
        arrays = []
        for name, arr in domains.items():
            arr = np.asarray(arr)
            if arr.ndim != 1 or arr.size < seq_len + 2:
                raise ValueError(f"domain {name!r} has {arr.size} tokens; need at least seq_len+2={seq_len + 2}")
            if vocab_size is not None and arr.size and int(arr.max()) >= vocab_size:
                raise ValueError(f"domain {name!r} has token id {int(arr.max())} >= vocab_size {vocab_size}")
            arrays.append(arr)
        lengths = np.array([a.size for a in arrays], np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        dtype = np.uint8 if all(a.dtype == np.uint8 for a in arrays) else np.int32
        flat = np.concatenate([a.astype(dtype) for a in arrays])
        return InMemoryDomains(jnp.asarray(flat), jnp.asarray(starts, jnp.int32), jnp.asarray(lengths, jnp.int32),
                               tuple(domains), batch_size, seq_len)

    @property
    def num_domains(self) -> int:
        return len(self.names)

    def sizes(self) -> np.ndarray:
        """[D] tokens per domain (for the natural mixture)."""
        return np.asarray(self.lengths)

    def init(self, key: Array) -> StreamState:
        """The stream state: just the PRNG key ``[2]`` uint32 (or a typed key) batches are drawn with."""
        return StreamState(key=key)

    def windows(self, domain_B: Array, offset_B: Array) -> dict:
        """Cuts ``[B, T+1]`` windows at ``offset_B`` inside each sequence's domain into a batch."""
        T = self.seq_len

        def one(d, off):
            return jax.lax.dynamic_slice(self.tokens, (self.starts[d] + off,), (T + 1,))

        seq_BT = jax.vmap(one)(domain_B, offset_B).astype(jnp.int32)
        return {"inputs": seq_BT[:, :-1], "targets": seq_BT[:, 1:], "domain": domain_B.astype(jnp.int32)}

    def next(self, state: StreamState, weights_D: Array) -> tuple[dict, StreamState]:
        """Draws ``batch_size`` sequences: domains ~ Categorical(weights_D), offsets uniform."""
        key, k_dom, k_off = jax.random.split(state.key, 3)
        logits_D = jnp.log(jnp.clip(weights_D.astype(jnp.float32), 0.0, 1.0))
        domain_B = jax.random.categorical(k_dom, logits_D, shape=(self.batch_size,))
        max_off_B = self.lengths[domain_B] - self.seq_len - 1
        offset_B = jnp.floor(jax.random.uniform(k_off, (self.batch_size,)) * max_off_B).astype(jnp.int32)
        return self.windows(domain_B, offset_B), StreamState(key=key)

    def fixed_batches(self, num_batches: int) -> dict:
        """Deterministic evaluation batches: per domain, ``num_batches * batch_size`` evenly spaced
        windows. Returns arrays shaped ``[D, num_batches, B, T]`` (``domain``: ``[D, num_batches, B]``)."""
        D, n = self.num_domains, num_batches * self.batch_size
        frac_N = (np.arange(n) + 0.5) / n
        max_off_D = np.asarray(self.lengths) - self.seq_len - 1
        offset_DN = jnp.asarray((frac_N[None, :] * max_off_D[:, None]).astype(np.int32))
        domain_DN = jnp.repeat(jnp.arange(D, dtype=jnp.int32)[:, None], n, axis=1)
        batch = self.windows(domain_DN.reshape(-1), offset_DN.reshape(-1))
        return {k: v.reshape(D, num_batches, self.batch_size, *v.shape[1:]) for k, v in batch.items()}
