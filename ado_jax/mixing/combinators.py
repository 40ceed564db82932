"""Mixer combinators, as in Optax: wrap mixers into new mixers.

- ``with_floor(mixer, min_prob)``: every domain gets at least ``min_prob``.
- ``ema(mixer, decay)``: exponential moving average of another mixer's weights.
- ``schedule(boundaries, mixers)``: piecewise over steps (curricula).
- ``warmup(static_mixer, adaptive_mixer, steps)``: ``static`` for ``steps`` steps, then adaptive.

Every wrapped state keeps the inner states, so the result is still one fixed-shape pytree.
Inner weights pass through ``normalize`` first, so a misbehaving inner mixer (NaN, negative)
cannot push the combined weights off the simplex.
"""

from __future__ import annotations

import operator
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from ado_jax.mixing.base import DomainStats, Mixer, check_fraction, check_int, check_num_domains, normalize
from ado_jax.mixing.basic import static


def floor_probability(p_D: jax.Array, min_prob: float) -> jax.Array:
    """Exact floor: ``w_i = max(min_prob, c * p_i)`` with ``c`` chosen so that ``sum w = 1``.

    Unlike the ADO paper's one-pass clip (``ado_policy.clip_min_probability``), every output is
    ``>= min_prob`` (up to float rounding) and entries above the floor keep their ratios.

    Args:
      p_D: [D] scores; projected with ``normalize`` first.
      min_prob: the floor, with ``min_prob * D <= 1`` (at equality the result is uniform).

    Returns:
      [D] float32 weights on the simplex.
    """
    p_D = normalize(p_D)
    d = p_D.shape[-1]
    q_D = jnp.sort(p_D)[::-1]
    j_D = jnp.arange(1, d + 1, dtype=jnp.float32)
    c_D = (1.0 - (d - j_D) * min_prob) / jnp.maximum(jnp.cumsum(q_D), 1e-30)
    ok_D = (q_D > 0) & (c_D * q_D >= min_prob)
    # Water filling: the top-j entries are scaled, the rest sit on the floor; j = largest valid.
    j_star = jnp.max(jnp.where(ok_D, jnp.arange(d), -1))
    c = c_D[jnp.maximum(j_star, 0)]
    w_D = jnp.where(j_star >= 0, jnp.maximum(min_prob, c * p_D), jnp.full_like(p_D, 1.0 / d))
    return normalize(w_D)


class FloorState(NamedTuple):
    """``weights: [D]`` floored weights; ``inner``: the wrapped mixer's state."""

    weights: jax.Array
    inner: Any


def with_floor(mixer: Mixer, min_prob: float) -> Mixer:
    """Wraps ``mixer`` so that every domain keeps probability ``>= min_prob`` (exact floor).

    Raises ValueError if ``min_prob`` is outside [0, 1], or at ``init`` if ``min_prob * D > 1``.
    """
    m = check_fraction("with_floor min_prob", min_prob)

    def init(num_domains) -> FloorState:
        d = check_num_domains(num_domains)
        if m * d > 1.0 + 1e-6:
            raise ValueError(f"with_floor min_prob={m} is infeasible for {d} domains (min_prob * D > 1)")
        inner = mixer.init(d)
        return FloorState(floor_probability(inner.weights, m), inner)

    def update(stats: DomainStats, state: FloorState):
        w_D, inner = mixer.update(stats, state.inner)
        w_D = floor_probability(w_D, m)
        return w_D, FloorState(w_D, inner)

    return Mixer(init, update, lambda state: mixer.metrics(state.inner))


class EmaState(NamedTuple):
    """``weights: [D]`` the moving average; ``inner``: the wrapped mixer's state."""

    weights: jax.Array
    inner: Any


def ema(mixer: Mixer, decay: float) -> Mixer:
    """Smooths ``mixer``: ``w(t) = decay * w(t-1) + (1 - decay) * inner_w(t)``.

    Starts from the inner mixer's initial weights (so there is no bias to correct).
    Raises ValueError unless ``0 <= decay < 1``.
    """
    g = check_fraction("ema decay", decay, high_open=True)

    def init(num_domains) -> EmaState:
        inner = mixer.init(check_num_domains(num_domains))
        return EmaState(normalize(inner.weights), inner)

    def update(stats: DomainStats, state: EmaState):
        w_D, inner = mixer.update(stats, state.inner)
        w_D = normalize(g * state.weights + (1.0 - g) * normalize(w_D))
        return w_D, EmaState(w_D, inner)

    return Mixer(init, update, lambda state: mixer.metrics(state.inner))


class ScheduleState(NamedTuple):
    """``weights: [D]`` the active mixer's weights; ``inner``: tuple of every mixer's state."""

    weights: jax.Array
    inner: tuple


def _check_boundaries(boundaries) -> tuple[int, ...]:
    out = []
    for b in boundaries:
        try:
            out.append(operator.index(b))
        except TypeError:
            raise ValueError(f"schedule boundaries must be ints, got {b!r} in {list(boundaries)}") from None
    if any(b < 0 for b in out) or any(b2 <= b1 for b1, b2 in zip(out, out[1:])):
        raise ValueError(f"schedule boundaries must be non-negative and strictly increasing, got {out}")
    return tuple(out)


def schedule(boundaries: Sequence[int], mixers: Sequence[Mixer]) -> Mixer:
    """Piecewise mixer over train steps: ``mixers[i]`` is active for steps in
    ``[boundaries[i-1], boundaries[i])`` (``mixers[0]`` before ``boundaries[0]``, the last one
    from ``boundaries[-1]`` on). Entries may be ``Mixer``s or weight vectors (wrapped in ``static``).

    Every mixer is updated every step, so an adaptive mixer keeps tracking losses while another
    one is active. The step is read from ``stats.step``; the weights returned by the update at
    step ``t`` are those of the mixer active at ``t + 1`` (the next batch).

    Raises ValueError if ``len(mixers) != len(boundaries) + 1`` or boundaries are not
    non-negative, strictly increasing ints.
    """
    bounds = _check_boundaries(boundaries)
    mixers = tuple(m if isinstance(m, Mixer) else static(m) for m in mixers)
    if len(mixers) != len(bounds) + 1:
        raise ValueError(f"schedule needs len(boundaries) + 1 mixers: got {len(bounds)} boundaries "
                         f"and {len(mixers)} mixers")
    bounds_arr = jnp.asarray(bounds, jnp.int32)

    def pick(step, inner):
        idx = jnp.sum(jnp.asarray(step, jnp.int32) >= bounds_arr)
        w_MD = jnp.stack([normalize(s.weights) for s in inner])
        return w_MD[idx]

    def init(num_domains) -> ScheduleState:
        d = check_num_domains(num_domains)
        inner = tuple(m.init(d) for m in mixers)
        return ScheduleState(pick(0, inner), inner)

    def update(stats: DomainStats, state: ScheduleState):
        inner = tuple(m.update(stats, s)[1] for m, s in zip(mixers, state.inner))
        w_D = pick(stats.step + 1, inner)
        return w_D, ScheduleState(w_D, inner)

    def metrics(state: ScheduleState) -> dict:  # every inner mixer's (all are updated every step)
        return {k: v for m, s in zip(mixers, state.inner) for k, v in m.metrics(s).items()}

    return Mixer(init, update, metrics)


def warmup(static_mixer, adaptive_mixer: Mixer, steps: int) -> Mixer:
    """``static_mixer`` (a Mixer or a weight vector) for the first ``steps`` steps, then
    ``adaptive_mixer``, which is updated throughout so it has tracked the losses by then.

    Raises ValueError if ``steps`` is not a non-negative int.
    """
    n = check_int("warmup steps", steps, low=0)
    return schedule([n], [static_mixer, adaptive_mixer])
