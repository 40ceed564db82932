"""Diversity-lowering data interventions as mixture weights (§4 and App. A of
"Lowering Data Diversity can Accelerate Training: Case Studies in Synthetic Tasks").

Every synthetic stream exposes its "tasks" as domains (ICL: pool tasks; parity: dataset chunks
or fixed batches; facts: subjects), so each intervention here is a weights vector ``[D]`` or a
schedule ``step -> weights [D]`` fed to ``stream.next(state, weights_D)``:

* subsampling / truncation to ``k`` tasks (§4.1): ``truncate(D, k)``, ``subsample(D, rho)``;
* Zipf over tasks / batches / subjects (§4.2): ``zipf(D, alpha, key)``;
* curricula (App. A): ``piecewise(...)``, ``doubling(...)`` and the paper's three presets;
  ``schedule_mixer(fn)`` turns any schedule into a ``Mixer`` so a train loop that runs mixers
  runs curricula unchanged.
The covariance bias (§4.3) is a stream field (``ICLRegression.cov_beta``).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from ado_jax.mixing.base import DomainStats, Mixer

Array = jax.Array
Schedule = Callable[[Array], Array]  # step [] int32 -> weights [D] float32


def truncate(num_domains: int, k: int) -> Array:
    """``[D]`` uniform over the first ``k`` domains, 0 elsewhere (subject truncation, §4.1)."""
    if not 1 <= k <= num_domains:
        raise ValueError(f"k must lie in [1, {num_domains}], got {k}")
    return (jnp.arange(num_domains) < k).astype(jnp.float32) / k


def subsample(num_domains: int, rho: float) -> Array:
    """``[D]`` uniform over the first ``round(rho * D)`` domains (a fraction ``rho`` of the data)."""
    k = int(round(rho * num_domains))
    if not 0.0 < rho <= 1.0 or k < 1:
        raise ValueError(f"rho={rho} must lie in (0, 1] and keep >= 1 of {num_domains} domains")
    return truncate(num_domains, k)


def zipf(num_domains: int, alpha: float, key: Array | None = None) -> Array:
    """``[D]`` with ``p_i ∝ 1 / rank_i^alpha``; ranks randomly assigned by ``key`` (§4.2).

    ``alpha = 0`` is uniform; large ``alpha`` concentrates on one domain. ``key=None`` keeps
    rank = index + 1.
    """
    if alpha < 0 or num_domains < 1:
        raise ValueError(f"need alpha >= 0 and num_domains >= 1, got {alpha}, {num_domains}")
    rank_D = jnp.arange(1, num_domains + 1, dtype=jnp.float32)
    if key is not None:
        rank_D = jax.random.permutation(key, rank_D)
    w_D = rank_D ** (-alpha)
    return w_D / jnp.sum(w_D)


def piecewise(boundaries: list[int], weights: list[Array]) -> Schedule:
    """Schedule using ``weights[i]`` while ``step < boundaries[i]`` and the last one after."""
    if len(weights) != len(boundaries) + 1:
        raise ValueError(f"need len(weights) == len(boundaries) + 1, got {len(weights)}, "
                         f"{len(boundaries)}")
    if list(boundaries) != sorted(boundaries):
        raise ValueError(f"boundaries must be increasing, got {boundaries}")
    w_SD = jnp.stack([jnp.asarray(w, jnp.float32) for w in weights])
    b_S = jnp.asarray(boundaries, jnp.int32)

    def fn(step):
        return w_SD[jnp.sum(jnp.asarray(step) >= b_S)]

    return fn


def doubling(num_domains: int, start: int, hold: int, every: int) -> Schedule:
    """Uniform over the first ``k(t)`` domains: ``k = start`` for ``t < hold``, then doubled
    every ``every`` steps (capped at D); earlier tasks are kept when new ones are added."""
    if start < 1 or hold < 0 or every < 1:
        raise ValueError(f"need start >= 1, hold >= 0, every >= 1, got {start}, {hold}, {every}")

    def fn(step):
        n = jnp.where(step < hold, 0, (jnp.asarray(step) - hold) // every + 1)
        k = jnp.minimum(start * 2.0 ** n.astype(jnp.float32), num_domains)
        mask_D = jnp.arange(num_domains) < k
        return mask_D.astype(jnp.float32) / jnp.sum(mask_D)

    return fn


def icl_curriculum(pool_size: int) -> Schedule:
    """App. A: 32 tasks for 30 steps, then doubled every 20 steps (pool = the final set)."""
    return doubling(pool_size, start=32, hold=30, every=20)


def parity_curriculum(num_chunks: int, rho: float = 0.02, switch: int = 100) -> Schedule:
    """App. A: ``rho = 0.02`` until step 100, then all the data."""
    return piecewise([switch], [subsample(num_chunks, rho), jnp.full((num_chunks,), 1.0 / num_chunks)])


def facts_curriculum(num_subjects: int = 100, k: int = 20, switch: int = 100) -> Schedule:
    """App. A: ``k = 20`` subjects until step 100, then all ``num_subjects``."""
    return piecewise([switch], [truncate(num_subjects, k), truncate(num_subjects, num_subjects)])


class ScheduleState(NamedTuple):
    """``weights: [D]`` for the next batch."""

    weights: Array


def schedule_mixer(fn: Schedule) -> Mixer:
    """A ``Mixer`` that ignores losses and follows ``fn(step)``: after the stats of step ``t``
    it returns the weights for step ``t + 1``."""

    def init(num_domains: int) -> ScheduleState:
        w_D = fn(jnp.zeros((), jnp.int32))
        if w_D.shape != (num_domains,):
            raise ValueError(f"schedule gives {w_D.shape[0]} weights but num_domains={num_domains}")
        return ScheduleState(w_D)

    def update(stats: DomainStats, state: ScheduleState):
        w_D = fn(stats.step + 1)
        return w_D, ScheduleState(w_D)

    return Mixer(init, update)
