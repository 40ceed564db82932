"""A pure-JAX mixing-law simulator: cheap stand-ins for training runs, to test and compare mixers.

Two environments, both ``eqx.Module`` s with fixed shapes (jit / vmap over seeds / scan):

- ``LinearLawEnv``: the linear dynamic mixing law of Aioli (Chen et al. 2024, "Aioli: A Unified
  Optimization Framework for Language Model Data Mixing", arXiv:2411.05735, eq. 2 with σ = Id)
  ``L^{t+1} = L^t - A p^t (+ process noise)``, ``A: [D, D]`` known, so estimates can be checked.
- ``PowerLawEnv``: per-domain power laws with cross-domain transfer,
  ``L_i = eps_i + beta_i (1 + sum_j T_ij n_j / scale)^(-alpha_i)`` where ``n_j`` counts the
  sequences of domain j seen so far; diminishing returns make the best mixture interior.

``run(mixer, env, steps, key)`` scans ``mixer.update`` over the environment. Each step: sample the
batch with ``state.weights``, observe noisy per-domain training losses (of the model *before*
the step, as a train step does), advance the environment, and — when ``wants_heldout(state)``
asked for it — pass the held-out losses of the model *after* the step in ``DomainStats``.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from ado_jax.mixing.base import DomainStats, Mixer, wants_heldout

Array = jax.Array


class SimState(NamedTuple):
    """Environment state. ``loss: [D]`` true held-out loss now; ``seen: [D]`` sequences seen."""

    loss: Array
    seen: Array
    step: Array


class SimResult(NamedTuple):
    """What ``run`` returns. ``weights: [S, D]`` mixture used at each step; ``loss: [S, D]`` true
    held-out loss after each step; final ``mixer_state``, ``env_state`` and PRNG ``key`` (pass all
    three to ``run_from`` to continue exactly where this run stopped)."""

    weights: Array
    loss: Array
    mixer_state: object
    env_state: SimState
    key: Array


def _counts(key, w_D, batch_size: int, sample: bool) -> Array:
    """[D] sequences per domain in a batch: multinomial draws, or the expectation ``B w``."""
    if not sample:
        return batch_size * w_D
    logits = jnp.log(jnp.maximum(w_D, 1e-30))
    ids_B = jax.random.categorical(key, logits, shape=(batch_size,))
    return jax.ops.segment_sum(jnp.ones((batch_size,), jnp.float32), ids_B, num_segments=w_D.shape[0])


class _Env(eqx.Module):
    """Shared observation model: Gaussian noise, std ``noise / sqrt(count)`` on training losses."""

    def _observe(self, state: SimState, w_D: Array, key) -> tuple[Array, Array, Array]:
        k_count, k_noise = jax.random.split(key)
        count_D = _counts(k_count, w_D, self.batch_size, self.sample_counts)
        eps_D = jax.random.normal(k_noise, count_D.shape) * self.noise / jnp.sqrt(jnp.maximum(count_D, 1.0))
        train_D = state.loss + eps_D
        return train_D, count_D, count_D / self.batch_size

    def heldout(self, state: SimState, key) -> Array:
        """[D] held-out losses: the true loss plus N(0, heldout_noise^2)."""
        return state.loss + self.heldout_noise * jax.random.normal(key, state.loss.shape)

    def step(self, state: SimState, w_D: Array, key) -> tuple[Array, Array, SimState]:
        """One train step on mixture ``w_D [D]``: returns (train loss [D], counts [D], new state)."""
        k_obs, k_dyn = jax.random.split(key)
        train_D, count_D, frac_D = self._observe(state, w_D, k_obs)
        seen_D = state.seen + count_D
        loss_D = self._next_loss(state, frac_D, seen_D, k_dyn)
        return train_D, count_D, SimState(loss_D, seen_D, state.step + 1)


class LinearLawEnv(_Env):
    """``L^{t+1} = L^t - A p^t + N(0, process_noise^2)`` with ``p^t`` the batch's domain fractions.

    Attributes:
      a: [D, D] float32 — ``a[i, j]``: loss drop on domain i per step trained only on domain j.
      loss0: [D] float32 — initial losses.
      noise, heldout_noise, process_noise: observation / held-out / dynamics noise std.
      batch_size: sequences per batch (static); sample_counts: multinomial batch composition
        if true, else the expected counts ``B p`` (noiseless, deterministic).
    """

    a: Array
    loss0: Array
    noise: float = 0.0
    heldout_noise: float = 0.0
    process_noise: float = 0.0
    batch_size: int = eqx.field(static=True, default=64)
    sample_counts: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        d = self.loss0.shape[0]
        if self.a.shape != (d, d):
            raise ValueError(f"a must be [D, D] = [{d}, {d}] to match loss0, got {self.a.shape}")

    def init(self) -> SimState:
        """Initial state: ``loss = loss0``, nothing seen."""
        z = jnp.zeros_like(self.loss0, dtype=jnp.float32)
        return SimState(jnp.asarray(self.loss0, jnp.float32), z, jnp.zeros((), jnp.int32))

    def local_a(self, seen_D: Array) -> Array:
        """[D, D] the mixing law's ``A`` (constant here: ``self.a``; ``seen_D`` is ignored)."""
        del seen_D
        return jnp.asarray(self.a, jnp.float32)

    def _next_loss(self, state, frac_D, seen_D, key):
        del seen_D
        return state.loss - self.a @ frac_D + self.process_noise * jax.random.normal(key, frac_D.shape)


class PowerLawEnv(_Env):
    """``L_i = eps_i + beta_i (1 + (T n)_i / scale)^(-alpha_i)``, ``n: [D]`` sequences seen.

    Attributes:
      eps, beta, alpha: [D] float32 power-law parameters (irreducible loss, scale, exponent).
      transfer: [D, D] float32 — ``T[i, j]``: how much a sequence of domain j counts for domain i
        (identity = no transfer).
      scale: sequences per unit of "effective data" (sets how fast losses fall).
      noise, heldout_noise, batch_size, sample_counts: as in ``LinearLawEnv``.
    """

    eps: Array
    beta: Array
    alpha: Array
    transfer: Array
    scale: float = 1000.0
    noise: float = 0.0
    heldout_noise: float = 0.0
    batch_size: int = eqx.field(static=True, default=64)
    sample_counts: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        d = self.eps.shape[0]
        for name in ("beta", "alpha"):
            if getattr(self, name).shape != (d,):
                raise ValueError(f"{name} must be [D] = [{d}] like eps, got {getattr(self, name).shape}")
        if self.transfer.shape != (d, d):
            raise ValueError(f"transfer must be [D, D] = [{d}, {d}], got {self.transfer.shape}")

    def loss_at(self, seen_D: Array) -> Array:
        """[D] true loss after seeing ``seen_D [D]`` sequences per domain."""
        n_D = self.transfer @ seen_D / self.scale
        return self.eps + self.beta * (1.0 + n_D) ** (-self.alpha)

    def local_a(self, seen_D: Array) -> Array:
        """[D, D] the linear mixing law ``L^{t+1} = L^t - A p^t`` that holds to first order at
        ``seen_D``: ``A[i, j] = -batch_size * dL_i / dn_j``, the loss drop on domain i per step
        trained only on domain j (the true ``A^t`` that Aioli estimates, in ``LinearLawEnv``'s units)."""
        n_D = self.transfer @ seen_D / self.scale
        slope_D = self.alpha * self.beta * (1.0 + n_D) ** (-self.alpha - 1.0)
        return self.batch_size * slope_D[:, None] * self.transfer / self.scale

    def init(self) -> SimState:
        """Initial state: nothing seen, ``loss = eps + beta``."""
        z = jnp.zeros(self.eps.shape, jnp.float32)
        return SimState(self.loss_at(z), z, jnp.zeros((), jnp.int32))

    def _next_loss(self, state, frac_D, seen_D, key):
        del state, frac_D, key
        return self.loss_at(seen_D)


def run(mixer: Mixer, env: _Env, steps: int, key) -> SimResult:
    """Scans ``steps`` train steps of ``mixer`` against ``env`` (jittable; vmap it over ``key``).

    Args:
      mixer: any ``Mixer``; held-out losses are passed when ``wants_heldout(state)`` is true.
      env: a ``LinearLawEnv`` or ``PowerLawEnv``.
      steps: number of steps S (static).
      key: PRNG key for batch composition and noise.

    Returns:
      ``SimResult`` with ``weights: [S, D]``, ``loss: [S, D]`` and the final states.
    """
    env_state = env.init()
    return run_from(mixer, env, steps, key, mixer.init(env_state.loss.shape[0]), env_state)


def run_from(mixer: Mixer, env: _Env, steps: int, key, mixer_state, env_state: SimState) -> SimResult:
    """Like ``run`` but continues from given mixer / environment states and key (exact resume)."""
    if int(steps) < 1:
        raise ValueError(f"steps must be a positive int, got {steps}")

    def body(carry, _):
        m_state, e_state, k = carry
        k, k_step, k_held = jax.random.split(k, 3)
        w_D = m_state.weights
        want = jnp.asarray(wants_heldout(m_state), bool)
        train_D, count_D, e_next = env.step(e_state, w_D, k_step)
        held_D = jnp.where(want, env.heldout(e_next, k_held), 0.0)
        stats = DomainStats(train_D * count_D, count_D, e_state.step, held_D, want)
        _, m_next = mixer.update(stats, m_state)
        return (m_next, e_next, k), (w_D, e_next.loss)

    (m_state, e_state, key), (w_SD, loss_SD) = jax.lax.scan(
        body, (mixer_state, env_state, key), None, length=int(steps)
    )
    return SimResult(w_SD, loss_SD, m_state, e_state, key)


def static_runs(env: _Env, mixtures_ND, steps: int, key) -> Array:
    """[N, D] true held-out losses after ``steps`` steps of static-mixture runs, one per row of
    ``mixtures_ND: [N, D]``, all vmapped (the run table of an offline fit: DML, RegMix, grid search).

    Every run uses the same ``key`` (common random numbers); add observation noise yourself.
    """
    from ado_jax.mixing.basic import WeightsState, static

    w_ND = jnp.asarray(mixtures_ND, jnp.float32)
    w_ND = w_ND / jnp.sum(w_ND, axis=1, keepdims=True)
    mixer = static(jnp.ones((w_ND.shape[1],)))
    one = lambda w: run_from(mixer, env, steps, key, WeightsState(w), env.init()).env_state.loss
    return jax.jit(jax.vmap(one))(w_ND)
