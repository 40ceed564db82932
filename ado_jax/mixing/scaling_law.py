"""Per-domain power-law fits ``L(n) = exp(log_eps) + exp(log_beta) * n^-alpha`` in pure JAX.

ADO (papers/002, App. A.1, eq. 6) fits each domain's loss curve by minimising the Huber
(delta = 1e-3) loss between log prediction and log observed loss, by L-BFGS from a grid of
starts, keeping the best start. The reference code (yidingjiang/ado, `fit_scaling_law`)
runs ``jaxopt.LBFGS(maxiter=200, tol=1e-5)`` from all 8x8x8 = 512 starts. Here the objective
is first evaluated on the whole grid (cheap: one pass over the data per start), and only the
best ``refine_top_k`` starts (by default 2 of them from a closed-form alpha scan on the
valley floor, ``scaling_law_solvers.alpha_scan``, which short curves need) are refined, by
default with projected Levenberg-Marquardt steps specialised to this 3-parameter law (IRLS for
the Huber loss, ``scaling_law_solvers.irls_lm``); ``optax.lbfgs`` (followed by those steps) and the
reference's ``jaxopt.LBFGS`` are options. Everything is vmapped over domains x starts with a
static iteration count, so a fit can sit inside a jitted train step under ``lax.cond``; the
start axis can be sharded over devices with ``grid_sharding``. See docs/fitter.md.

Objective (what we found in the reference ``loss_fn`` and what we do):
  - residual ``log(eps + beta n^-alpha) - log(loss)``, log prediction via logaddexp;
  - the reference SUMS Huber over points; we take the MEAN over valid points so the
    objective does not scale with the history length (``objective(..., reduction="sum")``
    gives the reference's scale). The minimiser is the same while no bound is active;
  - hinge penalties of weight 1: ``max(alpha-0.8, 0)``, ``max(-alpha, 0)``,
    ``max(log_beta-6.5, 0)``, ``max(0.5-log_eps, 0)``. The eps bound really is on log_eps
    (reference: ``-min(e - 0.5, 0)`` with ``e`` = log eps), i.e. eps >= e^0.5 ~ 1.65. The
    reference writes the alpha>0 term as ``-min(alpha, 0.001)``, i.e. ours minus 0.001 for
    alpha >= 0.001 (a constant offset); we drop the offset.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ado_jax.mixing import scaling_law_solvers as solvers

Array = jax.Array
SOLVERS = ("lm", "lbfgs", "jaxopt")


class PowerLaw(NamedTuple):
    """Fitted law per domain; each field is [D] float32 (or [] for one domain)."""

    log_eps: Array
    log_beta: Array
    alpha: Array


def make_grid(grid="paper") -> np.ndarray:
    """[G, 3] initial guesses in (log_eps, log_beta, alpha) order.

    ``"paper"``: App. A.1, 6 x 8 x 7 = 336 (log_eps0 in {-2,-1.5,-1,-0.5,1,1.5}, log_beta0 in
    -2..5, alpha0 in 0.1..0.7). ``"reference"``: the reference code's 8 x 8 x 8 = 512
    (log_eps0 = -2..1.5 step 0.5, log_beta0 = -2..5, alpha0 = 0..0.7). Or any [G, 3] array.
    """
    if isinstance(grid, str):
        if grid == "paper":
            axes = ([-2, -1.5, -1, -0.5, 1, 1.5], np.arange(-2, 6.0), np.arange(1, 8) / 10)
        elif grid == "reference":
            axes = (np.arange(-4, 4) / 2, np.arange(-2, 6.0), np.arange(8) / 10)
        else:
            raise ValueError(f"grid={grid!r}: expected 'paper', 'reference' or a [G, 3] array")
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=-1).astype(np.float32)
    grid = np.asarray(grid, np.float32)
    if grid.ndim != 2 or grid.shape[1] != 3 or grid.shape[0] < 1:
        raise ValueError(f"grid has shape {grid.shape}: expected [G, 3] (log_eps, log_beta, alpha)")
    return grid


def predict(params: PowerLaw, n_DT) -> Array:
    """``exp(log_eps) + exp(log_beta) * n^-alpha``; params [D] broadcast against ``n_DT: [D, T]``
    (use ``n_T: [T]`` with [] params for one domain). Returns loss_DT, same shape as the broadcast."""
    n = jnp.asarray(n_DT, jnp.float32)
    expand = lambda x: jnp.asarray(x, jnp.float32)[..., None] if jnp.ndim(x) else jnp.asarray(x, jnp.float32)
    le, lb, a = expand(params.log_eps), expand(params.log_beta), expand(params.alpha)
    return jnp.exp(jnp.logaddexp(le, lb - a * jnp.log(n)))


def _prepare(n_T, loss_T, mask_T):
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


def _theta(params: PowerLaw) -> Array:
    return jnp.stack([jnp.asarray(p, jnp.float32) for p in params], axis=-1)


def objective(params: PowerLaw, n_T, loss_T, mask_T=None, delta: float = 1e-3,
              reduction: str = "mean") -> Array:
    """[] one domain's fit objective (eq. 6 + bound penalties).

    ``mean`` over valid points (mask true, loss finite and > 0, n finite and > 0) of
    ``Huber_delta(log predict(params, n) - log loss)``, plus the hinge penalties (weight 1)
    for alpha outside [0, 0.8], log_beta > 6.5, log_eps < 0.5. ``reduction="sum"`` sums the
    Huber terms as the reference does. NaN when no point is valid.

    Args:
      params: ``PowerLaw`` of [] scalars.
      n_T: [T] sample counts.
      loss_T: [T] observed losses.
      mask_T: optional [T] bool, False drops a point.
      reduction: ``"mean"`` or ``"sum"`` of the Huber terms.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction={reduction!r}: expected 'mean' or 'sum'")
    logn_T, logy_T, w_T, count = _prepare(n_T, loss_T, mask_T)
    if reduction == "sum":
        w_T = w_T * count
    value = solvers.objective_3(_theta(params), logn_T, logy_T, w_T, delta)
    return jnp.where(count > 0, value, jnp.nan)


def _constrain(x, sharding: NamedSharding | None, spec):
    if sharding is None:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(sharding.mesh, spec))


def _refine(theta_3, data, solver, maxiter, lm_steps, delta):
    logn_T, logy_T, w_T = data
    f = lambda th: solvers.objective_3(th, logn_T, logy_T, w_T, delta)
    if solver == "lbfgs":
        theta_3 = solvers.lbfgs_optax(f, theta_3, maxiter)
    elif solver == "jaxopt":
        theta_3 = solvers.lbfgs_jaxopt(f, theta_3, maxiter)
    if lm_steps:
        theta_3 = solvers.irls_lm(theta_3, logn_T, logy_T, w_T, delta, lm_steps)
    return theta_3


def fit_power_law(n_DT, loss_DT, mask_DT=None, *, solver: str = "lm", grid="paper",
                  maxiter: int = 30, refine_top_k: int | None = 8, lm_steps: int = 40,
                  delta: float = 1e-3, grid_sharding: NamedSharding | None = None,
                  scan_starts: int = 2, alpha_scan: int = 32):
    """Fits ``L_d(n) = exp(log_eps_d) + exp(log_beta_d) n^-alpha_d`` for every domain d.

    Pipeline (all static shapes, jittable, vmapped over domains x starts):
      1. evaluate ``objective`` at every grid start (starts outside the bounds are projected
         onto the box first: the weight-1 hinges would pull them there anyway; starts that
         coincide after that are evaluated once), and at ``alpha_scan`` starts per domain on
         the valley floor (``scaling_law_solvers.alpha_scan``: for each alpha, the closed-form
         best eps and beta);
      2. keep the ``refine_top_k - scan_starts`` best grid starts and the ``scan_starts``
         best scan starts per domain (``refine_top_k=None``: all grid starts, as the
         reference, plus the scan starts; at least one grid start is always kept, so
         ``refine_top_k=1`` refines only the best grid start);
      3. refine each with ``solver`` for ``maxiter`` iterations, then ``lm_steps`` projected
         IRLS-Levenberg-Marquardt steps (0 to skip);
      4. keep the best refined start per domain.

    Args:
      n_DT: [D, T] (or [T], shared by all domains) samples seen at each history point.
      loss_DT: [D, T] observed losses (or [T] for one domain: outputs are then scalars).
        NaN/inf/non-positive entries are ignored.
      mask_DT: optional [D, T] bool — which history points are valid.
      solver: "lm" (default: only the specialised IRLS-LM steps), "lbfgs" (``maxiter`` steps
        of optax.lbfgs, then the ``lm_steps``) or "jaxopt" (jaxopt.LBFGS with tol=1e-5, the
        reference's; it stops early, so its cost is bounded by ``maxiter`` but not fixed).
        The Huber delta of 1e-3 makes the objective nearly piecewise linear in the log
        residuals; L-BFGS handles that poorly, and on benchmarks/fit_bench.py "lm" reaches a
        lower objective than "lbfgs" (+ the same LM steps) in a fraction of the time.
      maxiter: L-BFGS iterations (ignored by "lm").
      refine_top_k: starts refined per domain (None: every grid start, as the reference).
      lm_steps: LM steps (0 to skip for L-BFGS).
      delta: the Huber threshold (paper: 1e-3).
      grid: "paper", "reference" or a [G, 3] array of (log_eps, log_beta, alpha) starts.
      grid_sharding: optional ``NamedSharding`` for a [G, 3] array (e.g. ``P("x", None)``);
        its mesh axis on dim 0 shards the start axis of every stage.
      scan_starts: refined starts taken from the alpha scan (0: the grid only, as the paper).
        Without them a short curve (n over one decade) can end in the valley far from its
        minimum: LM crawls along it and the grid's best starts all lie on one side.
      alpha_scan: number of alphas in the scan, the midpoints of ``alpha_scan`` equal
        cells of [0, 0.8].

    Returns:
      ``(PowerLaw [D] each, objective_D [D])``. A domain with no valid point gets NaN
      parameters and objective (``keep_finite`` then keeps the previous fit).
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r}: expected one of {SOLVERS}")
    if maxiter < 0 or lm_steps < 0 or (solver == "lm" and lm_steps == 0):
        raise ValueError(f"maxiter={maxiter}, lm_steps={lm_steps}: expected >= 0 (lm_steps > 0 for 'lm')")
    loss = jnp.asarray(loss_DT, jnp.float32)
    single = loss.ndim == 1
    loss = loss[None] if single else loss
    if loss.ndim != 2:
        raise ValueError(f"loss_DT has shape {loss.shape}: expected [D, T] or [T]")
    n = jnp.broadcast_to(jnp.asarray(n_DT, jnp.float32), loss.shape)
    mask = None if mask_DT is None else jnp.broadcast_to(jnp.asarray(mask_DT, bool), loss.shape)
    grid_G3 = np.clip(make_grid(grid), np.float32(solvers.LOWER_3), np.float32(solvers.UPPER_3))
    _, first = np.unique(grid_G3, axis=0, return_index=True)   # paper grid: 336 -> 168 starts
    grid_G3 = jnp.asarray(grid_G3[np.sort(first)])
    num_starts = grid_G3.shape[0]
    if not 0 <= scan_starts <= alpha_scan:
        raise ValueError(f"scan_starts={scan_starts}, alpha_scan={alpha_scan}: expected "
                         "0 <= scan_starts <= alpha_scan")
    k = num_starts + scan_starts if refine_top_k is None else int(refine_top_k)
    if not 1 <= k <= num_starts + scan_starts:
        raise ValueError(f"refine_top_k={refine_top_k}: expected 1..{num_starts + scan_starts} "
                         f"({num_starts} distinct grid starts + scan_starts={scan_starts}) or None")
    scan_starts = min(scan_starts, k - 1)              # at least one grid start is refined
    k_grid = k - scan_starts
    axis = None if grid_sharding is None else grid_sharding.spec[0]
    grid_G3 = _constrain(grid_G3, grid_sharding, P(axis, None))

    prep = jax.vmap(_prepare, in_axes=(0, 0, None if mask is None else 0))
    logn_DT, logy_DT, w_DT, count_D = prep(n, loss, mask)
    data = (logn_DT, logy_DT, w_DT)
    per_start = lambda th, d: solvers.objective_3(th, *d, delta)
    f_grid = jax.vmap(jax.vmap(per_start, in_axes=(0, None)), in_axes=(None, 0))
    obj_DG = _constrain(f_grid(grid_G3, data), grid_sharding, P(None, axis))

    finite = lambda o: jnp.where(jnp.isfinite(o), o, jnp.inf)
    if k_grid < num_starts:
        start_DK3 = grid_G3[jax.lax.top_k(-finite(obj_DG), k_grid)[1]]
    else:
        start_DK3 = jnp.broadcast_to(grid_G3, (loss.shape[0],) + grid_G3.shape)
    if scan_starts:
        alphas_A = (np.arange(alpha_scan) + 0.5) * (solvers.UPPER_3[2] / alpha_scan)
        scan_DA3 = jax.vmap(solvers.alpha_scan, in_axes=(0, 0, 0, None))(*data, alphas_A)
        obj_DA = jax.vmap(jax.vmap(per_start, in_axes=(0, None)))(scan_DA3, data)
        idx_DS = jax.lax.top_k(-finite(obj_DA), scan_starts)[1]
        scan_DS3 = jnp.take_along_axis(scan_DA3, idx_DS[:, :, None], axis=1)
        # (a NaN scan start, from a singular solve, refines to NaN and is never picked)
        start_DK3 = jnp.concatenate([start_DK3, scan_DS3], axis=1)
    start_DK3 = _constrain(start_DK3, grid_sharding, P(None, axis, None))
    refine = lambda th, d: _refine(th, d, solver, maxiter, lm_steps, delta)
    theta_DK3 = jax.vmap(jax.vmap(refine, in_axes=(0, None)))(start_DK3, data)
    theta_DK3 = _constrain(theta_DK3, grid_sharding, P(None, axis, None))
    obj_DK = jax.vmap(jax.vmap(per_start, in_axes=(0, None)))(theta_DK3, data)
    obj_DK = jnp.where(jnp.isfinite(obj_DK), obj_DK, jnp.inf)

    best_D = jnp.argmin(obj_DK, axis=1)
    theta_D3 = jnp.take_along_axis(theta_DK3, best_D[:, None, None], axis=1)[:, 0]
    obj_D = jnp.take_along_axis(obj_DK, best_D[:, None], axis=1)[:, 0]
    bad_D = (count_D == 0) | ~jnp.isfinite(obj_D)
    theta_D3 = jnp.where(bad_D[:, None], jnp.nan, theta_D3)
    obj_D = jnp.where(bad_D, jnp.nan, obj_D)
    params = PowerLaw(theta_D3[:, 0], theta_D3[:, 1], theta_D3[:, 2])
    if single:
        return PowerLaw(*(p[0] for p in params)), obj_D[0]
    return params, obj_D


def keep_finite(new: PowerLaw, new_obj_D, prev: PowerLaw, prev_obj_D):
    """Per domain, keeps ``prev`` where the new fit or its objective is not finite.

    Args:
      new: ``PowerLaw`` of [D] (or []) — the new fit.
      new_obj_D: [D] its objective.
      prev: ``PowerLaw`` of [D] — the fit to keep where the new one is not finite.
      prev_obj_D: [D] its objective.

    Returns:
      ``(PowerLaw, objective_D)``, merged per domain.
    """
    ok_D = jnp.isfinite(new_obj_D)
    for p in new:
        ok_D = ok_D & jnp.isfinite(p)
    pick = lambda a, b: jnp.where(ok_D, a, b)
    return PowerLaw(*(pick(a, b) for a, b in zip(new, prev))), pick(new_obj_D, prev_obj_D)
