"""In-context linear regression as a pure, jittable stream (§2.1, App. B.1 of
"Lowering Data Diversity can Accelerate Training: Case Studies in Synthetic Tasks").

Each sequence holds ``num_points`` pairs ``(x_i, y_i)`` with ``x_i ~ N(0, I_d)``,
``y_i = <w, x_i> + eps_i``, ``eps_i ~ N(0, noise_std^2)``. The task vector ``w`` is drawn

* fresh from ``N(0, (1 - beta) I + beta v v^T)`` for every sequence (``num_tasks=None``; the
  test distribution is ``beta = 0``), or
* from a finite pool ``W_K = {w_1..w_K}`` drawn once from that Gaussian (paper §4.1), with task
  ``k ~ Categorical(weights_D)``; the domains are the pool's tasks, so Zipf over tasks (§4.2),
  task-count curricula (App. A: uniform over the first ``k(t)`` tasks) and any mixer act
  through ``weights_D``.

A batch is ``{"inputs": float32[B, N, d] (the x_i), "targets": float32[B, N] (the y_i),
"domain": int32[B] (pool index, 0 for fresh tasks)}``; the model interleaves the prompt
``[x_1, y_1, ..., x_N, y_N]`` itself (``ado_jax.synthetic.gpt_tasks``).
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from ado_jax.synthetic.sampling import sample_domains

Array = jax.Array


class ICLState(NamedTuple):
    """Stream state: ``key`` (PRNG), ``pool_KD: [K, d]`` task pool (``[1, d]`` unused when
    infinite), ``v_D: [d]`` unit direction of the covariance bias, ``step: []`` int32."""

    key: Array
    pool_KD: Array
    v_D: Array
    step: Array


def sample_tasks(key: Array, n: int, dim: int, v_D: Array, beta: float) -> Array:
    """Draws ``[n, d]`` tasks from ``N(0, (1 - beta) I + beta v v^T)`` (paper §4.3)."""
    kz, kg = jax.random.split(key)
    z_ND = jax.random.normal(kz, (n, dim))
    g_N1 = jax.random.normal(kg, (n, 1))
    return jnp.sqrt(1.0 - beta) * z_ND + jnp.sqrt(beta) * g_N1 * v_D[None, :]


class ICLRegression(eqx.Module):
    """Pure stream of in-context linear-regression sequences.

    Attributes:
      dim: d (paper: 20).  num_points: N pairs per sequence (paper: 41).
      noise_std: sigma (paper App. B.1 says "noise std sigma^2 = 1").
      batch_size: B (paper: 128).  num_tasks: K for a finite pool, or None for fresh Gaussians.
      cov_beta: beta of the covariance bias toward a random unit ``v`` (0 = isotropic).
    """

    dim: int = 20
    num_points: int = 41
    noise_std: float = 1.0
    batch_size: int = 128
    num_tasks: int | None = None
    cov_beta: float = 0.0

    def __check_init__(self):
        if self.dim < 1 or self.num_points < 1 or self.batch_size < 1:
            raise ValueError(f"dim, num_points, batch_size must be >= 1, got {self.dim}, "
                             f"{self.num_points}, {self.batch_size}")
        if self.num_tasks is not None and self.num_tasks < 1:
            raise ValueError(f"num_tasks must be None (infinite) or >= 1, got {self.num_tasks}")
        if not 0.0 <= self.cov_beta <= 1.0:
            raise ValueError(f"cov_beta must lie in [0, 1], got {self.cov_beta}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")

    @property
    def num_domains(self) -> int:
        return 1 if self.num_tasks is None else self.num_tasks

    @property
    def seq_len(self) -> int:
        return 2 * self.num_points

    def init(self, key: Array) -> ICLState:
        """Draws the bias direction ``v`` and (if finite) the task pool from ``key``."""
        kv, kp, ks = jax.random.split(key, 3)
        v_D = jax.random.normal(kv, (self.dim,))
        v_D = v_D / jnp.linalg.norm(v_D)
        k = 1 if self.num_tasks is None else self.num_tasks
        pool_KD = sample_tasks(kp, k, self.dim, v_D, self.cov_beta)
        return ICLState(ks, pool_KD, v_D, jnp.zeros((), jnp.int32))

    def sample(self, key: Array, w_BD: Array) -> tuple[Array, Array]:
        """Given tasks ``w_BD: [B, d]`` returns ``xs: [B, N, d]``, ``ys: [B, N]``."""
        kx, ke = jax.random.split(key)
        b = w_BD.shape[0]
        xs_BND = jax.random.normal(kx, (b, self.num_points, self.dim))
        eps_BN = self.noise_std * jax.random.normal(ke, (b, self.num_points))
        return xs_BND, jnp.einsum("bnd,bd->bn", xs_BND, w_BD) + eps_BN

    def next(self, state: ICLState, weights_D: Array | None = None):
        """One batch; pool tasks ~ ``Categorical(weights_D)`` (uniform when None)."""
        key, kt, kd = jax.random.split(state.key, 3)
        if self.num_tasks is None:
            w_BD = sample_tasks(kt, self.batch_size, self.dim, state.v_D, self.cov_beta)
            domain_B = jnp.zeros((self.batch_size,), jnp.int32)
        else:
            if weights_D is None:
                weights_D = jnp.ones((self.num_tasks,))
            domain_B = sample_domains(kt, weights_D, (self.batch_size,))
            w_BD = state.pool_KD[domain_B]
        xs_BND, ys_BN = self.sample(kd, w_BD)
        batch = {"inputs": xs_BND, "targets": ys_BN, "domain": domain_B}
        return batch, state._replace(key=key, step=state.step + 1)

    def test_batch(self, key: Array, batch_size: int, v_D: Array | None = None, beta: float = 0.0):
        """A batch from the test distribution (fresh tasks, ``N(0, I)`` unless ``beta`` > 0)."""
        kt, kd = jax.random.split(key)
        v_D = jnp.ones((self.dim,)) / jnp.sqrt(self.dim) if v_D is None else v_D
        w_BD = sample_tasks(kt, batch_size, self.dim, v_D, beta)
        xs_BND, ys_BN = self.sample(kd, w_BD)
        return {"inputs": xs_BND, "targets": ys_BN, "domain": jnp.zeros((batch_size,), jnp.int32),
                "tasks": w_BD}


def paper_preset(**overrides) -> ICLRegression:
    """The paper's App. B.1: d = 20, 41 points, noise 1, batch 128, infinite Gaussian tasks."""
    return ICLRegression(**{**dict(dim=20, num_points=41, noise_std=1.0, batch_size=128), **overrides})


def cpu_preset(**overrides) -> ICLRegression:
    """Our CPU-scale setting (docs/synthetic.md): d = 5, 10 points, batch 64."""
    return ICLRegression(**{**dict(dim=5, num_points=10, noise_std=1.0, batch_size=64), **overrides})
