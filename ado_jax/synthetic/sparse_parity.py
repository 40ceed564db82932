"""Sparse parity as a pure, jittable stream (§2.2, App. B.2, C.3 of
"Lowering Data Diversity can Accelerate Training: Case Studies in Synthetic Tasks").

Inputs are points of the hypercube written as ``{-1, +1}^d`` (the paper writes ``{0, 1}^d`` but
then the product of bits is an AND, not a parity; we use the standard +-1 encoding of Barak et
al. 2022). The target is ``chi_k(x) = prod_{i<k} x_i`` or, for the staircase intervention
(App. C.3), ``chi_k + eps * sum_{1<=j<k} chi_j``.

The training set is *virtual*: example ``i`` is the bit string drawn from ``fold_in(data_key, i)``,
so a dataset of ``num_examples`` (paper: steps x batch = 1e6) costs no memory. It is cut into
``num_chunks`` equal, contiguous chunks — the stream's domains:

* ``whole_chunk=False``: each example picks a chunk ~ ``Categorical(weights_D)`` and an example
  uniformly inside it. Subsampling a fraction ``rho`` (§4.1) = uniform weights over the first
  ``rho * num_chunks`` chunks; the App. A curriculum switches those weights at step 100.
  Sampling is with replacement (the paper runs ``1/rho`` epochs; same expected repeats).
* ``whole_chunk=True``: chunks are fixed batches (chunk size must equal ``batch_size``) and a
  whole batch is drawn with ``Categorical(weights_D)`` — Zipf over batches (§4.2).
* ``num_examples=None``: fresh uniform samples every step (the test distribution).
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from ado_jax.synthetic.sampling import sample_domains

Array = jax.Array


class ParityState(NamedTuple):
    """Stream state: ``key`` for sampling, ``data_key`` naming the virtual dataset, ``step``."""

    key: Array
    data_key: Array
    step: Array


def parity_target(x_BD: Array, k: int, staircase_eps: float = 0.0) -> Array:
    """``[B]`` target ``chi_k(x) + eps * sum_{j=1}^{k-1} chi_j(x)`` for ``x_BD`` in {-1, +1}."""
    prefix_BK = jnp.cumprod(x_BD[:, :k], axis=1)
    stairs_B = jnp.sum(prefix_BK[:, : k - 1], axis=1) if k > 1 else 0.0
    return prefix_BK[:, k - 1] + staircase_eps * stairs_B


def examples(data_key: Array, idx_B: Array, dim: int) -> Array:
    """The virtual dataset's examples ``idx_B: [B]`` as ``[B, d]`` float32 in {-1, +1}."""
    bits = jax.vmap(lambda i: jax.random.bernoulli(jax.random.fold_in(data_key, i), 0.5, (dim,)))(idx_B)
    return jnp.where(bits, 1.0, -1.0)


class SparseParity(eqx.Module):
    """Pure stream of sparse-parity batches ``{"inputs": float32[B, d], "targets": float32[B],
    "domain": int32[B], "index": int32[B]}`` (``index`` = example id, -1 for fresh samples).

    Attributes:
      dim: d (paper 20).  k: parity degree (paper 6).  batch_size: B (paper 20).
      num_examples: virtual dataset size, or None for fresh samples.
      num_chunks: domains (equal contiguous chunks).  whole_chunk: draw whole chunks as batches.
      staircase_eps: eps of the staircase target (0 = plain parity).
      data_seed: if set, the virtual dataset is ``PRNGKey(data_seed)`` for every init key (the
        same dataset across seeds, e.g. to select a subset of it once); else drawn from the key.
    """

    dim: int = 20
    k: int = 6
    batch_size: int = 20
    num_examples: int | None = None
    num_chunks: int = 1
    whole_chunk: bool = False
    staircase_eps: float = 0.0
    data_seed: int | None = None

    def __check_init__(self):
        if not 1 <= self.k <= self.dim:
            raise ValueError(f"need 1 <= k <= dim, got k={self.k}, dim={self.dim}")
        if self.num_chunks < 1:
            raise ValueError(f"num_chunks must be >= 1, got {self.num_chunks}")
        if self.num_examples is not None and self.num_examples % self.num_chunks:
            raise ValueError(f"num_examples={self.num_examples} must be a multiple of "
                             f"num_chunks={self.num_chunks}")
        if self.whole_chunk and (self.num_examples is None
                                 or self.num_examples // self.num_chunks != self.batch_size):
            raise ValueError(f"whole_chunk needs num_examples / num_chunks == batch_size "
                             f"({self.batch_size}), got {self.num_examples} / {self.num_chunks}")

    @property
    def num_domains(self) -> int:
        return self.num_chunks

    @property
    def seq_len(self) -> int:
        return 1  # one input vector per example

    def init(self, key: Array) -> ParityState:
        """Names the virtual dataset and the sampling key from ``key``."""
        kd, ks = jax.random.split(key)
        if self.data_seed is not None:
            kd = jax.random.PRNGKey(self.data_seed)
        return ParityState(ks, kd, jnp.zeros((), jnp.int32))

    def next(self, state: ParityState, weights_D: Array | None = None):
        """One batch; chunks ~ ``Categorical(weights_D)`` (uniform when None)."""
        key, kc, ki = jax.random.split(state.key, 3)
        b = self.batch_size
        if self.num_examples is None:
            x_BD = jnp.where(jax.random.bernoulli(ki, 0.5, (b, self.dim)), 1.0, -1.0)
            domain_B = jnp.zeros((b,), jnp.int32)
            idx_B = jnp.full((b,), -1, jnp.int32)
        else:
            if weights_D is None:
                weights_D = jnp.ones((self.num_chunks,))
            size = self.num_examples // self.num_chunks
            if self.whole_chunk:
                chunk = sample_domains(kc, weights_D)
                domain_B = jnp.full((b,), chunk, jnp.int32)
                idx_B = chunk * size + jnp.arange(b, dtype=jnp.int32)
            else:
                domain_B = sample_domains(kc, weights_D, (b,))
                idx_B = domain_B * size + jax.random.randint(ki, (b,), 0, size, jnp.int32)
            x_BD = examples(state.data_key, idx_B, self.dim)
        batch = {"inputs": x_BD, "targets": parity_target(x_BD, self.k, self.staircase_eps),
                 "domain": domain_B, "index": idx_B}
        return batch, state._replace(key=key, step=state.step + 1)

    def test_batch(self, key: Array, batch_size: int):
        """Fresh uniform hypercube points with the plain parity target ``chi_k`` (test set)."""
        x_BD = jnp.where(jax.random.bernoulli(key, 0.5, (batch_size, self.dim)), 1.0, -1.0)
        return {"inputs": x_BD, "targets": parity_target(x_BD, self.k),
                "domain": jnp.zeros((batch_size,), jnp.int32)}


def paper_preset(**overrides) -> SparseParity:
    """The paper's App. B.2: d = 20, k = 6, batch 20 (50k steps -> 1e6 examples when finite)."""
    return SparseParity(**{**dict(dim=20, k=6, batch_size=20), **overrides})
