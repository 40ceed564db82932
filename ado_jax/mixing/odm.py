"""Online Data Mixing (ODM; Albalak et al. 2023, "Efficient online data mixing for LM pre-training").

ODM treats each domain as an arm of a multi-armed bandit and runs EXP3 with the training loss
as the reward. As the Aioli paper (Chen et al. 2024, "Aioli: A Unified Optimization Framework for
Language Model Data Mixing", arXiv:2411.05735, App. B.1) writes its update, for K domains:

    ε_t      = min(1/K, sqrt(ln K / (K t)))                                   (exploration rate)
    π_t(j)   = (1 − K ε_t) exp(ε_{t−1} R_j) / Σ_i exp(ε_{t−1} R_i) + ε_t
    R_j      ← α R_j + (1 − α) L_j / π(j)       if domain j was trained on, else unchanged

``reward="smoothed"`` (default) is that moving-average estimate. ``reward="cumulative"`` is the
classic EXP3 sum ``R_j ← R_j + L_j / π(j)`` used by the reference code
(alon-albalak/online-data-mixing, ``Exp3WeightUpdater``, which also scales the loss by 1/10:
``reward_scale=0.1``). Only the cumulative form is a no-regret learner: the smoothed R stays
bounded while ε_t → 0, so π_t drifts back toward uniform.

Mixed batches. ODM trains each batch on one domain; here the batch is sampled from π and holds
several. The importance weight ``1/π(j)`` is replaced by 1 / P(domain j appears in a batch of
n sequences) = ``1 / (1 − (1 − π_j)^n)`` (``importance="batch"``), which equals ``1/π_j`` for
single-domain batches (n = 1) and keeps the reward estimate unbiased for any n;
``importance="reference"`` divides by ``π_j`` as the reference's ``group_update`` does.
"""

from __future__ import annotations

import dataclasses

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ado_jax.mixing.registry import MixerConfig, option, prior_weights, register
from ado_jax.mixing.base import (DomainStats, Mixer, check_choice, check_fraction, check_num_domains, check_number,
                                 check_weights, normalize)


class ODMState(NamedTuple):
    """weights: [D] π_t (next batch's mixture); reward: [D] estimated rewards R;
    eps_prev: [] ε_{t−1}; step: [] int32 updates done."""

    weights: jax.Array
    reward: jax.Array
    eps_prev: jax.Array
    step: jax.Array


def exploration_rate(num_domains: int, t) -> jax.Array:
    """[] ε_t = min(1/K, sqrt(ln K / (K t))) for 1-based iteration ``t`` (ODM Alg. 1)."""
    k = float(num_domains)
    t = jnp.maximum(jnp.asarray(t, jnp.float32), 1.0)
    return jnp.minimum(1.0 / k, jnp.sqrt(math.log(k) / (k * t)))


def odm(*, reward: str = "smoothed", alpha: float = 0.9, reward_scale: float = 1.0,
        importance: str = "batch", p_init=None) -> Mixer:
    """The ODM EXP3 mixer.

    Args:
      reward: ``"smoothed"`` (moving average, as the Aioli paper states ODM) or
        ``"cumulative"`` (classic EXP3, the reference implementation).
      alpha: smoothing α of the moving average, in [0, 1) (only for ``"smoothed"``).
      reward_scale: multiplies the loss before it becomes a reward (reference: 0.1).
      importance: ``"batch"`` (probability the domain is in the batch) or ``"reference"`` (π_j).
      p_init: [D] initial mixture (default uniform); ODM's first step uses it as π_0.
    """
    check_choice("reward", reward, ("smoothed", "cumulative"))
    check_choice("importance", importance, ("batch", "reference"))
    check_fraction("alpha", alpha, high_open=True)
    check_number("reward_scale", reward_scale, low=0.0, low_open=True, finite=True)
    p0 = None if p_init is None else check_weights(p_init, name="p_init")

    def init(num_domains) -> ODMState:
        d = check_num_domains(num_domains)
        if p0 is not None and p0.size != d:
            raise ValueError(f"p_init has {p0.size} entries but init got num_domains={d}")
        w = jnp.full((d,), 1.0 / d, jnp.float32) if p0 is None else jnp.asarray(p0)
        z = jnp.zeros((d,), jnp.float32)
        return ODMState(w, z, jnp.asarray(1.0 / d, jnp.float32), jnp.zeros((), jnp.int32))

    def update(stats: DomainStats, state: ODMState):
        d = state.weights.shape[0]
        loss_D = stats.mean_loss()
        seen_D = (stats.count > 0) & jnp.isfinite(loss_D)
        if importance == "batch":
            n = jnp.maximum(jnp.sum(stats.count), 1.0)
            prob_D = -jnp.expm1(n * jnp.log1p(-jnp.minimum(state.weights, 1.0 - 1e-7)))
        else:
            prob_D = state.weights
        r_D = reward_scale * jnp.where(seen_D, loss_D, 0.0) / jnp.maximum(prob_D, 1e-12)
        if reward == "cumulative":
            new_r = state.reward + r_D
        else:
            new_r = alpha * state.reward + (1.0 - alpha) * r_D
        est_D = jnp.where(seen_D & jnp.isfinite(new_r), new_r, state.reward)
        step = state.step + 1
        eps_t = exploration_rate(d, step)
        soft_D = jax.nn.softmax(state.eps_prev * est_D)
        w = normalize((1.0 - d * eps_t) * soft_D + eps_t)
        return w, ODMState(w, est_D, eps_t, step)

    return Mixer(init, update)


@register("odm")
@dataclasses.dataclass
class ODMConfig(MixerConfig):
    """Online Data Mixing (arXiv:2312.02406): an EXP3 bandit over domains."""

    prior: str = option("natural", "initial mixture: natural | uniform")
    reward: str = option("smoothed", "smoothed (moving average, Aioli's statement) | cumulative (EXP3 reference)")
    alpha: float = option(0.9, "smoothing alpha of the moving-average reward")

    def build(self, sizes_D, total_steps: int | None = None, seed: int = 0) -> Mixer:
        """The ODM mixer starting from the prior over ``sizes_D: [D]``."""
        del total_steps, seed
        return odm(reward=self.reward, alpha=self.alpha, p_init=prior_weights(self.prior, sizes_D))
