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

import operator
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
      grad_dot: [D, D] float32 or None — ``grad_dot[i, j] = <g_i, g_j>``, the inner products of
        the batch's per-domain mean training gradients (the model before the update; a domain
        absent from the batch has ``g = 0``). The train step computes it only for a mixer that
        asks (``wants_grad_dot``, DoGE); None otherwise (no leaf, so other mixers are unchanged).
    """

    loss_sum: Array
    count: Array
    step: Array
    heldout_loss: Array
    heldout_valid: Array
    grad_dot: Array | None = None

    @staticmethod
    def create(loss_sum, count, step, heldout_loss=None, grad_dot=None) -> "DomainStats":
        """Builds stats from ``loss_sum: [D]``, ``count: [D]``, ``step: []``; held-out losses [D]
        and gradient inner products ``grad_dot: [D, D]`` optional."""
        loss_sum = jnp.asarray(loss_sum, jnp.float32)
        count = jnp.asarray(count, jnp.float32)
        valid = heldout_loss is not None
        heldout = jnp.zeros_like(loss_sum) if heldout_loss is None else jnp.asarray(heldout_loss, jnp.float32)
        gd = None if grad_dot is None else jnp.asarray(grad_dot, jnp.float32)
        return DomainStats(loss_sum, count, jnp.asarray(step, jnp.int32), heldout, jnp.asarray(valid), gd)

    def mean_loss(self) -> Array:
        """[D] mean loss per domain this step; NaN where the domain had no sequences."""
        return jnp.where(self.count > 0, self.loss_sum / jnp.maximum(self.count, 1.0), jnp.nan)


def no_metrics(state: MixerState) -> dict:
    """The default ``Mixer.metrics``: nothing to log."""
    del state
    return {}


class Mixer(NamedTuple):
    """A data-mixture policy as a pair of pure, jittable functions.

    Attributes:
      init: ``num_domains -> state``; ``state.weights`` is the initial mixture ``[D]``.
      update: ``(stats: DomainStats, state) -> (weights [D], new_state)``.
      metrics: ``state -> {name: array}``, what a training loop should log about the mixer
        (``[D]`` or ``[D, D]`` arrays, e.g. ADO's fitted scaling laws); ``{}`` by default.
    """

    init: Callable[[int], MixerState]
    update: Callable[[DomainStats, MixerState], tuple[Array, MixerState]]
    metrics: Callable[[MixerState], dict] = no_metrics


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


def domain_stats(loss_B: Array, domain_B: Array, num_domains: int, step) -> DomainStats:
    """Reduces per-sequence losses to per-domain sums and counts.

    Correct when the batch is sharded: ``jax.ops.segment_sum`` over the global batch array lets
    XLA insert the cross-device reduction.

    Args:
      loss_B: [B] float — each sequence's mean token loss.
      domain_B: [B] int32 — each sequence's domain id in ``[0, num_domains)``.
      num_domains: D.
      step: [] int — the step these losses belong to.

    Returns:
      ``DomainStats`` with ``loss_sum: [D]`` and ``count: [D]``; non-finite losses are left out
      of both (they never reach a mixer).
    """
    loss_B = loss_B.astype(jnp.float32)
    ok_B = jnp.isfinite(loss_B)
    loss_sum_D = jax.ops.segment_sum(jnp.where(ok_B, loss_B, 0.0), domain_B, num_segments=num_domains)
    count_D = jax.ops.segment_sum(ok_B.astype(jnp.float32), domain_B, num_segments=num_domains)
    return DomainStats.create(loss_sum_D, count_D, step)


def wants_heldout(mixer_state: MixerState) -> Array | bool:
    """[] bool: whether the next ``update`` of this mixer state needs held-out losses.

    The held-out contract, shared by all mixers: a mixer state may carry a field
    ``wants_heldout: [] bool`` saying that the NEXT ``update`` needs ``stats.heldout_loss``, the
    per-domain held-out loss of the model AFTER the train step those stats belong to. The train
    step calls ``wants_heldout(mixer_state)`` before the update, evaluates the held-out batches
    under ``lax.cond`` when it is true, and sets ``stats.heldout_valid`` accordingly.

    Reads a ``wants_heldout`` field; a state without one (e.g. a combinator's) is searched for
    nested NamedTuple states and their answers are OR-ed. When no (nested) state has the field,
    the answer is the Python constant ``False``, so a trainer can skip compiling the evaluation.
    """
    return _nested_flag(mixer_state, "wants_heldout")


def wants_grad_dot(mixer_state: MixerState) -> Array | bool:
    """[] bool: whether the next ``update`` needs ``stats.grad_dot`` (per-domain gradient inner products).

    The same contract as ``wants_heldout``, for the field ``wants_grad_dot: [] bool`` (DoGE's
    state has it): the train step then computes the per-domain mean gradients of this step's
    batch and passes ``DomainStats.grad_dot [D, D]``. A state tree without the field anywhere
    answers the Python constant ``False``, and the train step is then exactly what it was.
    """
    return _nested_flag(mixer_state, "wants_grad_dot")


def _nested_flag(mixer_state: MixerState, field: str) -> Array | bool:
    """The OR of ``field`` over ``mixer_state`` and its nested NamedTuple states; False if none has it."""
    if hasattr(mixer_state, field):
        return jnp.asarray(getattr(mixer_state, field), bool)
    out = False
    children = mixer_state if isinstance(mixer_state, (tuple, list)) else ()
    for child in children:
        if isinstance(child, tuple):
            out = out | _nested_flag(child, field)
    return out


# Argument checks shared by every mixer, the tracker and the combinators. Each returns the value
# as a plain Python number (or the choice itself) and raises ValueError naming the argument, the
# bad value and what was expected.


def _bounds(low, high, low_open: bool = False, high_open: bool = False) -> str:
    """``"in [0, 1)"``, ``">= 1"``, ``"> 0"``, ``"<= 1"`` or ``""``: the bounds as text."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def check_int(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """Returns ``value`` as a Python int; ValueError unless it is an integer in ``[low, high]``.

    Python and numpy integers pass; bools, floats (even ``2.0``) and strings do not.
    """
    expected = " ".join(filter(None, ["an int", _bounds(low, high)]))
    try:
        if isinstance(value, bool):
            raise TypeError
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be {expected}, got {value!r}") from None
    if (low is not None and v < low) or (high is not None and v > high):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return int(v)


def check_num_domains(num_domains) -> int:
    """Returns ``num_domains`` as a Python int >= 1; ValueError naming a bad value."""
    return check_int("num_domains", num_domains, low=1)


def check_number(name: str, value, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, finite: bool = False) -> float:
    """Returns ``value`` as a float; ValueError unless it is a number within the given bounds.

    Args:
      name: the argument's name, as the error message should show it.
      value: the value to check (anything ``float()`` accepts; NaN never passes).
      low: lower bound, or None.
      high: upper bound, or None.
      low_open: the lower bound itself is excluded (``> low`` instead of ``>= low``).
      high_open: the upper bound itself is excluded.
      finite: also reject +-inf.
    """
    bounds = _bounds(low, high, low_open, high_open)
    expected = ("lie " if bounds.startswith("in ") else "be ") + (bounds or "a number")
    if finite:
        expected = "be finite and " + expected.removeprefix("be ") if bounds else "be a finite number"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must {expected}, got {value!r}") from None
    ok = v == v and (not finite or abs(v) != float("inf"))
    if low is not None:
        ok = ok and (v > low if low_open else v >= low)
    if high is not None:
        ok = ok and (v < high if high_open else v <= high)
    if not ok:
        raise ValueError(f"{name} must {expected}, got {value!r}")
    return v


def check_fraction(name: str, value, *, low_open: bool = False, high_open: bool = False) -> float:
    """``check_number`` on ``[0, 1]``, each end closed unless ``low_open`` / ``high_open``."""
    return check_number(name, value, low=0.0, high=1.0, low_open=low_open, high_open=high_open)


def check_choice(name: str, value, choices):
    """Returns ``value`` if it is one of ``choices``; else ValueError listing them."""
    if value not in tuple(choices):
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value
