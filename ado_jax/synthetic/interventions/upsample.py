"""Upsampling examples that are learned late, as mixture weights.

"Data Distribution as a Lever for Guiding Optimizers Toward Superior Generalization in LLMs"
(Gangavarapu et al.; we worked from its abstract) argues that SAM learns "harder" features more
evenly than GD, and that *changing the data distribution* — upsampling the examples that are
not learned early in training — gets part of SAM's benefit at GD's cost. We implement that
recipe over any stream's domains (examples, chunks, tasks, subjects):

1. train normally for a short first phase while ``track`` records each domain's running loss
   (an EMA of its per-step mean loss, from ``DomainStats``);
2. ``late_learned(loss_D, quantile)`` marks the domains still above the loss quantile
   (not yet learned);
3. ``upsample_weights(mask_D, factor)`` gives them ``factor`` times the sampling weight; the
   rest of training uses those weights (e.g. via ``diversity.piecewise``).
The threshold rule (loss quantile) and EMA are our choices; the paper's exact split (it
clusters early-epoch outputs) is not in the text we have.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ado_jax.mixing.base import DomainStats

Array = jax.Array


class LossTrack(NamedTuple):
    """``loss_D: [D]`` EMA of each domain's loss (NaN until first seen), ``seen_D: [D]`` bool."""

    loss_D: Array
    seen_D: Array


def track_init(num_domains: int) -> LossTrack:
    """Empty tracker over ``num_domains`` domains."""
    return LossTrack(jnp.full((num_domains,), jnp.nan), jnp.zeros((num_domains,), bool))


def track(stats: DomainStats, state: LossTrack, decay: float = 0.9) -> LossTrack:
    """Folds one step's per-domain mean losses into the EMA (domains absent this step keep theirs)."""
    present_D = stats.count > 0
    mean_D = stats.mean_loss()
    new_D = jnp.where(state.seen_D, decay * state.loss_D + (1 - decay) * mean_D, mean_D)
    return LossTrack(jnp.where(present_D, new_D, state.loss_D), state.seen_D | present_D)


def late_learned(loss_D: Array, quantile: float = 0.5) -> Array:
    """``[D]`` bool: domains whose loss is above the ``quantile`` of seen losses, or never seen."""
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must lie in [0, 1], got {quantile}")
    thresh = jnp.nanquantile(loss_D, quantile)
    return jnp.isnan(loss_D) | (loss_D > thresh)


def upsample_weights(mask_D: Array, factor: float = 2.0, base_D: Array | None = None) -> Array:
    """``[D]`` weights: ``base_D`` (uniform when None) times ``factor`` where ``mask_D``, normalized."""
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    base_D = jnp.ones(mask_D.shape) if base_D is None else jnp.asarray(base_D, jnp.float32)
    w_D = base_D * jnp.where(mask_D, factor, 1.0)
    return w_D / jnp.sum(w_D)


class UpsampleState(NamedTuple):
    """``weights: [D]`` for the next batch; ``track``: per-domain loss EMA."""

    weights: Array
    track: LossTrack


def upsample_mixer(switch_step: int, factor: float = 2.0, quantile: float = 0.5, decay: float = 0.9):
    """A ``Mixer``: uniform until ``switch_step``, tracking per-domain losses; from then on the
    domains still above the loss ``quantile`` at the switch get ``factor`` x weight (frozen)."""
    from ado_jax.mixing.base import Mixer

    def init(num_domains: int) -> UpsampleState:
        return UpsampleState(jnp.full((num_domains,), 1.0 / num_domains), track_init(num_domains))

    def update(stats: DomainStats, state: UpsampleState):
        before = stats.step + 1 < switch_step
        tr = jax.tree.map(lambda a, b: jnp.where(before, a, b), track(stats, state.track, decay), state.track)
        at_switch = stats.step + 1 == switch_step
        w_D = jnp.where(at_switch, upsample_weights(late_learned(tr.loss_D, quantile), factor), state.weights)
        return w_D, UpsampleState(w_D, tr)

    return Mixer(init, update)
