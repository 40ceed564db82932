"""The power law ``L(n) = exp(log_eps) + exp(log_beta) * n^-alpha`` and the box its fits live in.

``PowerLaw`` holds a law per domain; ``predict`` evaluates it. A fit (``scaling_law``) searches
(log_eps, log_beta, alpha) inside a box, ``FitBounds``: ``"reference"``, the box of the ADO
reference code ("Adaptive Data Optimization: Dynamic Sample Selection with Scaling Laws",
arXiv:2410.11820, App. A.1 states the same box), or ``"data"`` (the default), each domain's box
from its own history (``data_bounds``), so that a bound is only reached where the data put the
fit there. ``FitInfo`` says which parameters of a fit sit on a bound, and its in-sample error.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ado_jax.mixing import scaling_law_solvers as solvers

Array = jax.Array


class PowerLaw(NamedTuple):
    """Fitted law per domain; each field is [D] float32 (or [] for one domain)."""

    log_eps: Array
    log_beta: Array
    alpha: Array


class FitBounds(NamedTuple):
    """Box on the fit's parameters: ``lower <= (log_eps, log_beta, alpha) <= upper``.

    Each is a ``PowerLaw`` of [D] (or [] / scalars, broadcast to every domain) float32;
    bounds may be infinite (never binding), but the alpha bounds should be finite (the alpha
    scan spans them; an infinite one falls back to [0, 0.8]). Jittable and vmappable (a
    pytree of arrays); build one with ``data_bounds`` or ``reference_bounds``, or by hand.
    """

    lower: PowerLaw
    upper: PowerLaw


class FitInfo(NamedTuple):
    """Per-domain diagnostics of a fit ([D], or [] for one domain).

    Attributes:
      on_bound: int32 bitmask of the parameters that sit on a bound of the box (within
        1e-4 of it, relative when the bound is above 1 in size): bit ``2 i`` the lower,
        bit ``2 i + 1`` the upper bound of parameter ``i`` in (log_eps, log_beta, alpha)
        order, i.e. 1 = eps at its lower, 2 = eps at its upper, 4 / 8 = beta lower / upper,
        16 / 32 = alpha lower (0) / upper. 0: an interior fit. See ``bound_names``.
      err: float32 in-sample error, the mean over valid points of ``|log predict - log loss|``
        (NaN for a domain without a fit).
      steps: int32 Levenberg-Marquardt steps the fit ran on the domain, summed over its
        refined starts (cold: ``refine_top_k x lm_steps``; a warm refit: its previous fit's
        start until it converged, the guard starts, and a cold fit if one ran). None when not
        recorded (e.g. a ``FitInfo`` built by hand).
      cold: bool, the domain got a cold (multi-start) fit: always without ``init``; with it,
        where the warm refit fell back to one. None when not recorded.
    """

    on_bound: Array
    err: Array
    steps: Array | None = None
    cold: Array | None = None


BOUNDS = ("data", "reference")
ALPHA_MAX = 0.8          # the paper's (and reference's) alpha bound, kept by the data box
DATA_FLOOR = 10.0        # data box: eps and beta may go e^-10 (4.5e-5) x the smallest loss down
DATA_SMOOTH = 0          # data box: points either side in a moving average of log loss (0: none)
DATA_MARGIN = 0.0        # data box: log_eps upper = log(smallest (smoothed) loss) - DATA_MARGIN
_BOUND_NAMES = ("eps min", "eps max", "beta min", "beta max", "alpha min", "alpha max")


def bound_names(on_bound) -> list[str]:
    """Names of the bounds set in one ``FitInfo.on_bound`` bitmask, e.g. ``["eps min"]``
    (``[]`` for 0 or a non-finite value, as logged before a domain's first fit)."""
    try:
        code = int(on_bound)
    except (TypeError, ValueError, OverflowError):
        return []
    return [name for i, name in enumerate(_BOUND_NAMES) if code > 0 and code >> i & 1]


def reference_bounds(num_domains: int | None = None) -> FitBounds:
    """The reference code's box (``log_eps >= 0.5``, ``log_beta <= 6.5``, ``0 <= alpha <= 0.8``)
    as ``FitBounds`` of [num_domains] (scalars when None)."""
    shape = () if num_domains is None else (int(num_domains),)
    full = lambda v3: PowerLaw(*(jnp.full(shape, v, jnp.float32) for v in v3))
    return FitBounds(full(solvers.LOWER_3), full(solvers.UPPER_3))


def predict(params: PowerLaw, n_DT) -> Array:
    """``exp(log_eps) + exp(log_beta) * n^-alpha``; params [D] broadcast against ``n_DT: [D, T]``
    (use ``n_T: [T]`` with [] params for one domain). Returns loss_DT, same shape as the broadcast."""
    n = jnp.asarray(n_DT, jnp.float32)
    expand = lambda x: jnp.asarray(x, jnp.float32)[..., None] if jnp.ndim(x) else jnp.asarray(x, jnp.float32)
    le, lb, a = expand(params.log_eps), expand(params.log_beta), expand(params.alpha)
    return jnp.exp(jnp.logaddexp(le, lb - a * jnp.log(n)))


def prepare(n_T, loss_T, mask_T):
    """Safe log inputs and normalised weights; invalid points get weight 0 and harmless values.

    Returns (logn_T, logy_T, w_T, count[]): ``w_T`` sums to 1 when ``count > 0``.
    """
    n_T = jnp.asarray(n_T, jnp.float32)
    loss_T = jnp.asarray(loss_T, jnp.float32)
    ok_T = jnp.isfinite(loss_T) & (loss_T > 0) & jnp.isfinite(n_T) & (n_T > 0)
    if mask_T is not None:
        ok_T = ok_T & jnp.asarray(mask_T, bool)
    count = jnp.sum(ok_T.astype(jnp.float32))
    logn_T = jnp.log(jnp.where(ok_T, n_T, 1.0))
    logy_T = jnp.log(jnp.where(ok_T, loss_T, 1.0))
    w_T = ok_T.astype(jnp.float32) / jnp.maximum(count, 1.0)
    return logn_T, logy_T, w_T, count


def stack_params(params: PowerLaw) -> Array:
    """``[..., 3]``: the law's (log_eps, log_beta, alpha) stacked on a last axis."""
    return jnp.stack([jnp.asarray(p, jnp.float32) for p in params], axis=-1)


def _data_box(logn_T, logy_T, w_T, alpha_max, smooth, margin, floor):
    """([3], [3]) one domain's data box from its prepared history (see ``data_bounds``)."""
    ok_T = w_T > 0
    ok_s, y_s = ok_T, logy_T
    if smooth:
        order_T = jnp.argsort(jnp.where(ok_T, logn_T, jnp.inf))    # by n; invalid points last
        ok_s, y_s = ok_T[order_T], logy_T[order_T]
        k = jnp.ones((2 * smooth + 1,), jnp.float32)
        num = jnp.convolve(jnp.where(ok_s, y_s, 0.0), k, mode="same")
        den = jnp.convolve(ok_s.astype(jnp.float32), k, mode="same")
        y_s = num / jnp.maximum(den, 1.0)
    low = jnp.min(jnp.where(ok_s, y_s, jnp.inf))            # log smallest (smoothed) loss
    high = jnp.max(jnp.where(ok_T, logy_T, -jnp.inf))       # log largest loss
    top = jnp.maximum(jnp.max(jnp.where(ok_T, logn_T, -jnp.inf)), 0.0)   # log largest n
    lo_3 = jnp.stack([low - floor, low - floor, jnp.float32(0.0)])
    hi_3 = jnp.stack([low - margin, high + alpha_max * top + 1.0, jnp.float32(alpha_max)])
    any_ok = jnp.any(ok_T)                                  # no data: the reference box (unused)
    return (jnp.where(any_ok, lo_3, jnp.asarray(solvers.LOWER_3, jnp.float32)),
            jnp.where(any_ok, hi_3, jnp.asarray(solvers.UPPER_3, jnp.float32)))


def data_bounds(n_DT, loss_DT, mask_DT=None, *, alpha_max: float = ALPHA_MAX,
                smooth: int = DATA_SMOOTH, margin: float = DATA_MARGIN,
                floor: float = DATA_FLOOR) -> FitBounds:
    """Each domain's box from its own history (``fit_power_law``'s default, ``bounds="data"``).

    With ``y`` the valid losses (as ``fit_power_law`` selects them) and ``n`` their sample counts:

    - ``log_eps <= log(min y) - margin``: the irreducible loss lies below the losses reached
      (``L(n) - eps = beta n^-alpha > 0``). By default (``smooth=0``, ``margin=0``) eps is at
      most the smallest observed loss. Noise puts that minimum a little below the curve, so
      on a curve that has flattened to within its noise eps can end on this bound, which the
      data then put it on (the forecast is unharmed: the power-law term takes up the rest).
      ``smooth > 0`` takes the minimum of the moving average of ``log y`` over
      ``2 smooth + 1`` points ordered by ``n`` instead;
    - ``log_eps >= log(min y) - floor`` and ``log_beta >= log(min y) - floor``:
      with ``floor = 10``, an eps or a power-law term below 4.5e-5 of every loss (and so of
      Huber's delta = 1e-3 in log loss) changes no prediction; a fit there means "no floor
      detected" / "a flat curve", and the bound only stops log_eps or log_beta drifting to
      -inf. Relative to the data, so the box (and the fit) scales with the losses;
    - ``log_beta <= log(max y) + alpha_max * log(max n) + 1``: any larger beta puts the
      power-law term above e x the largest loss at every point (for alpha <= alpha_max and
      ``n >= 1``), far from any fit; with float32 ``n`` up to 1e12 it stays below ~28;
    - ``0 <= alpha <= alpha_max`` (paper: ``0 < alpha < 0.8``).

    Args:
      n_DT: [D, T] (or [T]) samples seen at each history point.
      loss_DT: [D, T] (or [T]: a single domain, scalar bounds) observed losses.
      mask_DT: optional [D, T] bool, False drops a point.
      alpha_max: upper bound of alpha.
      smooth: points either side in the moving average (0: the raw smallest loss).
      margin: log_eps upper bound below the log smallest (smoothed) loss.
      floor: lower bounds of log_eps and log_beta, below the log smallest (smoothed) loss.

    Returns:
      ``FitBounds`` of [D] (the reference box for a domain without a valid point).
    """
    loss = jnp.asarray(loss_DT, jnp.float32)
    single = loss.ndim == 1
    loss = loss[None] if single else loss
    n = jnp.broadcast_to(jnp.asarray(n_DT, jnp.float32), loss.shape)
    mask = None if mask_DT is None else jnp.broadcast_to(jnp.asarray(mask_DT, bool), loss.shape)
    logn, logy, w, _ = jax.vmap(prepare, in_axes=(0, 0, None if mask is None else 0))(n, loss, mask)
    box = lambda *d: _data_box(*d, float(alpha_max), int(smooth), float(margin), float(floor))
    lo_D3, hi_D3 = jax.vmap(box)(logn, logy, w)
    bounds = _as_bounds(lo_D3, hi_D3)
    return jax.tree.map(lambda x: x[0], bounds) if single else bounds


def _as_bounds(lo_D3, hi_D3) -> FitBounds:
    return FitBounds(PowerLaw(*(lo_D3[..., i] for i in range(3))),
                     PowerLaw(*(hi_D3[..., i] for i in range(3))))


def box_arrays(bounds, data, num_domains: int):
    """([D, 3], [D, 3]) lower and upper bounds from a ``bounds`` option and prepared data."""
    if isinstance(bounds, str):
        if bounds == "reference":
            ref = lambda v3: jnp.broadcast_to(jnp.asarray(v3, jnp.float32), (num_domains, 3))
            return ref(solvers.LOWER_3), ref(solvers.UPPER_3)
        if bounds == "data":
            box = lambda *d: _data_box(*d, ALPHA_MAX, DATA_SMOOTH, DATA_MARGIN, DATA_FLOOR)
            return jax.vmap(box)(*data)
        raise ValueError(f"bounds={bounds!r}: expected one of {BOUNDS} or a FitBounds")
    if not isinstance(bounds, FitBounds):
        raise ValueError(f"bounds has type {type(bounds).__name__}: expected one of {BOUNDS} "
                         "or a FitBounds")
    side = lambda p: jnp.stack([jnp.broadcast_to(jnp.asarray(x, jnp.float32), (num_domains,))
                                for x in p], axis=-1)
    return side(bounds.lower), side(bounds.upper)


def check_bounds(bounds):
    """Returns ``bounds`` if it is a valid ``bounds`` option of ``fit_power_law``, else raises
    ValueError (for early checks, e.g. in ``ado``)."""
    if isinstance(bounds, FitBounds) or (isinstance(bounds, str) and bounds in BOUNDS):
        return bounds
    raise ValueError(f"bounds={bounds!r}: expected one of {BOUNDS} or a FitBounds")
