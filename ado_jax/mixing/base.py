"""The mixer interface: an Optax-like pair of pure functions over a pytree state.

A mixer decides the data mixture ``weights: [D]`` (a point on the probability simplex over
``D`` domains) from what training observed. Like ``optax.GradientTransformation``::

    mixer = ado_jax.mixing.balanced()
    state = mixer.init(num_domains)          # pytree of fixed-shape arrays
    weights_D = state.weights                # the mixture to sample the next batch with
    weights_D, state = mixer.update(stats, state)

Convention: every mixer state has a ``weights`` field ([D] float32) holding the mixture the
next batch should be drawn with, so a training loop can sample before the first update and
combinators can read an inner mixer's current weights. ``update`` returns ``state.weights``
as its first output.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
MixerState = Any  # a pytree (usually a NamedTuple) with a ``weights: [D]`` field


class DomainStats(NamedTuple):
    """What one train step observed, per domain. All fields are fixed-shape arrays.

    Attributes:
      loss_sum: [D] float32 — sum over the batch's sequences of each sequence's mean token loss,
        grouped by domain (non-finite losses already excluded).
      count: [D] float32 — number of sequences of each domain in the batch that were counted.
      step: [] int32 — the train step these statistics belong to (0-based).
      heldout_loss: [D] float32 — per-domain held-out loss, meaningful only where
        ``heldout_valid`` is true (Aioli, DoReMi evaluate it inside the step).
      heldout_valid: [] bool — whether ``heldout_loss`` was evaluated at this step.
    """

    loss_sum: Array
    count: Array
    step: Array
    heldout_loss: Array
    heldout_valid: Array

    @staticmethod
    def create(loss_sum, count, step, heldout_loss=None) -> "DomainStats":
        """Builds stats from ``loss_sum: [D]``, ``count: [D]``, ``step: []``; held-out optional."""
        loss_sum = jnp.asarray(loss_sum, jnp.float32)
        count = jnp.asarray(count, jnp.float32)
        valid = heldout_loss is not None
        heldout = jnp.zeros_like(loss_sum) if heldout_loss is None else jnp.asarray(heldout_loss, jnp.float32)
        return DomainStats(loss_sum, count, jnp.asarray(step, jnp.int32), heldout, jnp.asarray(valid))

    def mean_loss(self) -> Array:
        """[D] mean loss per domain this step; NaN where the domain had no sequences."""
        return jnp.where(self.count > 0, self.loss_sum / jnp.maximum(self.count, 1.0), jnp.nan)


class Mixer(NamedTuple):
    """A data-mixture policy as a pair of pure, jittable functions.

    Attributes:
      init: ``num_domains -> state``; ``state.weights`` is the initial mixture ``[D]``.
      update: ``(stats: DomainStats, state) -> (weights [D], new_state)``.
    """

    init: Callable[[int], MixerState]
    update: Callable[[DomainStats, MixerState], tuple[Array, MixerState]]


def normalize(x_D: Array, eps: float = 0.0) -> Array:
    """Projects non-negative scores ``[D]`` onto the simplex, robust to NaN/inf/zero.

    Non-finite or negative entries count as 0; an all-zero (or overflowing) vector becomes
    uniform. Rescales by the max before summing so 1e30-sized inputs do not overflow.
    """
    x_D = jnp.asarray(x_D, jnp.float32)
    x_D = jnp.where(jnp.isfinite(x_D) & (x_D > 0), x_D, 0.0) + eps
    scale = jnp.max(x_D)
    x_D = x_D / jnp.where(scale > 0, scale, 1.0)
    total = jnp.sum(x_D)
    uniform = jnp.full_like(x_D, 1.0 / x_D.shape[-1])
    return jnp.where(total > 0, x_D / jnp.where(total > 0, total, 1.0), uniform)


def check_weights(weights, num_domains: int | None = None, name: str = "weights"):
    """Validates host-side mixture weights; returns them as a float32 numpy array [D].

    Raises ValueError naming the bad value: wrong length, negative, non-finite, or all zero.
    """
    import numpy as np

    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {w.shape}")
    if num_domains is not None and w.size != num_domains:
        raise ValueError(f"{name} has {w.size} entries but there are {num_domains} domains")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"{name} must be finite and non-negative, got {w.tolist()}")
    if w.sum() <= 0:
        raise ValueError(f"{name} must not be all zero, got {w.tolist()}")
    return (w / w.sum()).astype(np.float32)

