"""Per-domain power-law fits ``L(n) = exp(log_eps) + exp(log_beta) * n^-alpha`` in pure JAX.

ADO ("Adaptive Data Optimization: Dynamic Sample Selection with Scaling Laws", Jiang et al. 2024,
arXiv:2410.11820; App. A.1, eq. 6) fits each domain's loss curve by minimising the Huber
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
  - hinge penalties of weight 1 for leaving a box on (log_eps, log_beta, alpha), the
    ``bounds`` argument (``FitBounds``, per domain):
      * ``"reference"``: the reference code's box, ``max(alpha-0.8, 0)``, ``max(-alpha, 0)``,
        ``max(log_beta-6.5, 0)``, ``max(0.5-log_eps, 0)``. The eps bound really is on log_eps
        (reference: ``-min(e - 0.5, 0)`` with ``e`` = log eps), i.e. eps >= e^0.5 ~ 1.65
        nats. The reference writes the alpha>0 term as ``-min(alpha, 0.001)``, i.e. ours
        minus 0.001 for alpha >= 0.001 (a constant offset); we drop the offset. The paper
        (App. A.1) states the same box, "purely preventative in cases of numerical
        instability and ... almost never saturated": true for GPT-2-token losses of 2-4
        nats on the Pile, but with byte-level tokens, code, or long runs the irreducible
        loss is below 1.65 nats and the box clamps every fit.
      * ``"data"`` (default): each domain's box follows its own history (``data_bounds``), so
        that, as the paper intends, a bound is only reached where the data put the fit
        there: 0 < eps at most the smallest observed loss, 0 <= alpha <= 0.8 (the paper's
        alpha bound), and a log_beta range wider than any law that fits the data.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ado_jax.mixing import scaling_law_solvers as solvers
from ado_jax.mixing.power_law import (ALPHA_MAX, BOUNDS, DATA_FLOOR, DATA_MARGIN, DATA_SMOOTH, FitBounds, FitInfo,
                                      PowerLaw, box_arrays, prepare, stack_params, bound_names, check_bounds,
                                      data_bounds, predict, reference_bounds)

__all__ = ["ALPHA_MAX", "BOUNDS", "DATA_FLOOR", "DATA_MARGIN", "DATA_SMOOTH", "FitBounds", "FitInfo", "PowerLaw",
           "SOLVERS", "bound_names", "check_bounds", "data_bounds", "fit_power_law", "keep_finite", "make_grid",
           "objective", "predict", "reference_bounds"]
Array = jax.Array
SOLVERS = ("lm", "lbfgs", "jaxopt")
WARM_TOL = 1e-6      # warm refit: LM stops after PATIENCE steps that each gain at most this x the objective
WARM_SCAN = 8       # warm refit: alphas in the guard's alpha scan (at most alpha_scan)
GUARD_STEPS = 10     # warm refit: LM steps for each guard start
GUARD_GAIN = 0.01    # warm refit: a cold fit where a guard start ends this much (relative) below the warm fit
COLD_ABOVE = 2.0     # warm refit: a cold fit where the objective rose above this x the previous fit's
COLD_SHARE = 0.125   # warm refit: up to this share of the domains are refit cold on their own


def make_grid(grid="paper") -> np.ndarray:
    """[G, 3] initial guesses in (log_eps, log_beta, alpha) order.

    ``"paper"``: App. A.1, 6 x 8 x 7 = 336 (log_eps0 in {-2,-1.5,-1,-0.5,1,1.5}, log_beta0 in
    -2..5, alpha0 in 0.1..0.7). ``"reference"``: the reference code's 8 x 8 x 8 = 512
    (log_eps0 = -2..1.5 step 0.5, log_beta0 = -2..5, alpha0 = 0..0.7). ``"coarse"``: 2 x 3 x 2 = 12
    starts of the paper grid (log_eps0 in {-1, 1}, log_beta0 in {0, 2, 4}, alpha0 in {0.2, 0.5}),
    the guard starts of a warm refit. Or any [G, 3] array.
    """
    if isinstance(grid, str):
        if grid == "paper":
            axes = ([-2, -1.5, -1, -0.5, 1, 1.5], np.arange(-2, 6.0), np.arange(1, 8) / 10)
        elif grid == "reference":
            axes = (np.arange(-4, 4) / 2, np.arange(-2, 6.0), np.arange(8) / 10)
        elif grid == "coarse":
            axes = ([-1.0, 1.0], [0.0, 2.0, 4.0], [0.2, 0.5])
        else:
            raise ValueError(f"grid={grid!r}: expected 'paper', 'reference', 'coarse' or a [G, 3] array")
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=-1).astype(np.float32)
    grid = np.asarray(grid, np.float32)
    if grid.ndim != 2 or grid.shape[1] != 3 or grid.shape[0] < 1:
        raise ValueError(f"grid has shape {grid.shape}: expected [G, 3] (log_eps, log_beta, alpha)")
    return grid


def objective(params: PowerLaw, n_T, loss_T, mask_T=None, delta: float = 1e-3,
              reduction: str = "mean", bounds="data") -> Array:
    """[] one domain's fit objective (eq. 6 + bound penalties), as ``fit_power_law`` minimises it.

    ``mean`` over valid points (mask true, loss finite and > 0, n finite and > 0) of
    ``Huber_delta(log predict(params, n) - log loss)``, plus the hinge penalties (weight 1)
    for leaving the box ``bounds`` (``"reference"``: alpha outside [0, 0.8], log_beta > 6.5,
    log_eps < 0.5). ``reduction="sum"`` sums the Huber terms as the reference does. NaN when
    no point is valid.

    Args:
      params: ``PowerLaw`` of [] scalars.
      n_T: [T] sample counts.
      loss_T: [T] observed losses.
      mask_T: optional [T] bool, False drops a point.
      delta: the Huber threshold.
      reduction: ``"mean"`` or ``"sum"`` of the Huber terms.
      bounds: ``"data"`` (the box ``data_bounds`` derives from these points), ``"reference"``
        or a ``FitBounds`` of scalars.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction={reduction!r}: expected 'mean' or 'sum'")
    logn_T, logy_T, w_T, count = prepare(n_T, loss_T, mask_T)
    lo_13, hi_13 = box_arrays(check_bounds(bounds), (logn_T[None], logy_T[None], w_T[None]), 1)
    if reduction == "sum":
        w_T = w_T * count
    value = solvers.objective_3(stack_params(params), logn_T, logy_T, w_T, delta, lo_13[0], hi_13[0])
    return jnp.where(count > 0, value, jnp.nan)


def _constrain(x, sharding: NamedSharding | None, spec):
    if sharding is None:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(sharding.mesh, spec))


def _refine(theta_3, data, solver, maxiter, lm_steps, delta, tol=0.0):
    """One start refined: ``([3], [] int32 LM steps run)``."""
    logn_T, logy_T, w_T, lo_3, hi_3 = data
    f = lambda th: solvers.objective_3(th, logn_T, logy_T, w_T, delta, lo_3, hi_3)
    if solver == "lbfgs":
        theta_3 = solvers.lbfgs_optax(f, theta_3, maxiter)
    elif solver == "jaxopt":
        theta_3 = solvers.lbfgs_jaxopt(f, theta_3, maxiter)
    if lm_steps:
        return solvers.irls_lm(theta_3, logn_T, logy_T, w_T, delta, lm_steps, lo_3, hi_3, tol=tol,
                               return_steps=True)
    return theta_3, jnp.zeros((), jnp.int32)


def _info(theta_3, data, tol=1e-4) -> FitInfo:
    """One domain's ``FitInfo`` of ``theta_3`` (NaN parameters: 0 and NaN)."""
    logn_T, logy_T, w_T, lo_3, hi_3 = data
    slack = lambda b: tol * jnp.maximum(1.0, jnp.abs(b))
    at_lo_3 = jnp.isfinite(lo_3) & (theta_3 <= lo_3 + slack(lo_3))
    at_hi_3 = jnp.isfinite(hi_3) & (theta_3 >= hi_3 - slack(hi_3))
    bits_3 = at_lo_3.astype(jnp.int32) * jnp.array([1, 4, 16]) + at_hi_3.astype(jnp.int32) * jnp.array([2, 8, 32])
    err = jnp.sum(w_T * jnp.abs(solvers.log_predict(theta_3, logn_T) - logy_T))
    return FitInfo(jnp.sum(bits_3).astype(jnp.int32), jnp.where(jnp.all(jnp.isfinite(theta_3)), err, jnp.nan))


_finite = lambda o: jnp.where(jnp.isfinite(o), o, jnp.inf)


def _per_start(start_DS3, data, delta) -> Array:
    """[D, S] objective of every domain's starts ``start_DS3: [D, S, 3]``."""
    per_start = lambda th, d: solvers.objective_3(th, d[0], d[1], d[2], delta, d[3], d[4])
    return jax.vmap(jax.vmap(per_start, in_axes=(0, None)))(start_DS3, data)


def _best_starts(start_DS3, obj_DS, k: int) -> Array:
    """[D, k, 3] the ``k`` starts of lowest objective per domain."""
    if k >= start_DS3.shape[1]:
        return start_DS3
    idx_DK = jax.lax.top_k(-_finite(obj_DS), k)[1]
    return jnp.take_along_axis(start_DS3, idx_DK[:, :, None], axis=1)


def _scan(data, alpha_scan: int, delta) -> tuple[Array, Array]:
    """``([D, A, 3], [D, A])``: each domain's alpha-scan starts and their objectives."""
    logn_DT, logy_DT, w_DT, lo_D3, hi_D3 = data
    a_lo_D = jnp.where(jnp.isfinite(lo_D3[:, 2]), lo_D3[:, 2], 0.0)
    a_hi_D = jnp.where(jnp.isfinite(hi_D3[:, 2]), hi_D3[:, 2], a_lo_D + ALPHA_MAX)
    cells_A = (np.arange(alpha_scan, dtype=np.float32) + 0.5) / alpha_scan
    alphas_DA = a_lo_D[:, None] + cells_A[None] * (a_hi_D - a_lo_D)[:, None]
    scan_DA3 = jax.vmap(solvers.alpha_scan)(logn_DT, logy_DT, w_DT, alphas_DA, lo_D3, hi_D3)
    return scan_DA3, _per_start(scan_DA3, data, delta)


def _refine_all(start_DK3, data, solver, maxiter, lm_steps, delta, tol=0.0, sharding=None, axis=None):
    """Refines every start: ``([D, K, 3], [D, K] objective (inf if not finite), [D, K] LM steps)``."""
    refine = lambda th, d: _refine(th, d, solver, maxiter, lm_steps, delta, tol)
    theta_DK3, steps_DK = jax.vmap(jax.vmap(refine, in_axes=(0, None)))(start_DK3, data)
    theta_DK3 = _constrain(theta_DK3, sharding, P(None, axis, None))
    return theta_DK3, _finite(_per_start(theta_DK3, data, delta)), steps_DK


def _pick(theta_DK3, obj_DK):
    """``([D, 3], [D])`` the best refined start per domain."""
    best_D = jnp.argmin(obj_DK, axis=1)
    return (jnp.take_along_axis(theta_DK3, best_D[:, None, None], axis=1)[:, 0],
            jnp.take_along_axis(obj_DK, best_D[:, None], axis=1)[:, 0])


def _cold(data, grid_G3, k_grid, scan_starts, alpha_scan, solver, maxiter, lm_steps, delta,
          grid_sharding=None):
    """The multi-start fit of ``fit_power_law`` on prepared data: ``([D, 3], [D], [D] LM steps)``."""
    axis = None if grid_sharding is None else grid_sharding.spec[0]
    lo_D3, hi_D3 = data[3], data[4]
    # Every domain's starts, projected onto its box: [D, G, 3].
    start_DG3 = jnp.clip(grid_G3[None], lo_D3[:, None], hi_D3[:, None])
    start_DG3 = _constrain(start_DG3, grid_sharding, P(None, axis, None))
    obj_DG = _constrain(_per_start(start_DG3, data, delta), grid_sharding, P(None, axis))
    start_DK3 = _best_starts(start_DG3, obj_DG, k_grid)
    if scan_starts:
        scan_DA3, obj_DA = _scan(data, alpha_scan, delta)
        # (a NaN scan start, from a singular solve, refines to NaN and is never picked)
        start_DK3 = jnp.concatenate([start_DK3, _best_starts(scan_DA3, obj_DA, scan_starts)], axis=1)
    start_DK3 = _constrain(start_DK3, grid_sharding, P(None, axis, None))
    theta_DK3, obj_DK, steps_DK = _refine_all(start_DK3, data, solver, maxiter, lm_steps, delta,
                                              sharding=grid_sharding, axis=axis)
    return (*_pick(theta_DK3, obj_DK), jnp.sum(steps_DK, axis=1))


def _warm(data, has_data_D, prev_D3, prev_obj_D, cold_fit, *, lm_steps, delta, alpha_scan, warm_grid_G3, warm_tol,
          guard_steps, cold_above, cold_share, axis_name):
    """The warm refit of ``fit_power_law(init=...)``: ``([D, 3], [D], [D] LM steps, [D] bool cold)``."""
    lo_D3, hi_D3 = data[3], data[4]
    num_domains = lo_D3.shape[0]
    # Guard starts: the best of the coarse grid and the best of the alpha scan, a few LM steps each.
    start_DG3 = jnp.clip(warm_grid_G3[None], lo_D3[:, None], hi_D3[:, None])
    guard_DK3 = _best_starts(start_DG3, _per_start(start_DG3, data, delta), 1)
    if alpha_scan:
        scan_DA3, obj_DA = _scan(data, min(alpha_scan, WARM_SCAN), delta)
        guard_DK3 = jnp.concatenate([guard_DK3, _best_starts(scan_DA3, obj_DA, 1)], axis=1)
    guard_DK3, guard_obj_DK, guard_steps_DK = _refine_all(guard_DK3, data, "lm", 0, guard_steps, delta)
    guard_D3, guard_obj_D = _pick(guard_DK3, guard_obj_DK)
    # The previous fit (projected onto the new box), refined until it converges.
    prev_ok_D = jnp.all(jnp.isfinite(prev_D3), axis=-1)
    start_D13 = jnp.where(prev_ok_D[:, None], jnp.clip(prev_D3, lo_D3, hi_D3), guard_DK3[:, 0])[:, None]
    warm_D13, warm_obj_D1, warm_steps_D1 = _refine_all(start_D13, data, "lm", 0, lm_steps, delta, warm_tol)
    theta_D3, obj_D = _pick(jnp.concatenate([warm_D13, guard_D3[:, None]], 1),
                            jnp.concatenate([warm_obj_D1, guard_obj_D[:, None]], 1))
    steps_D = warm_steps_D1[:, 0] + jnp.sum(guard_steps_DK, axis=1)
    # Cold where the warm fit may be wrong: no previous fit, a guard start got lower (the optimum
    # moved), or the objective rose above ``cold_above`` x the previous fit's.
    warm_obj_D = warm_obj_D1[:, 0]
    need_D = (~prev_ok_D | ~jnp.isfinite(warm_obj_D) | (guard_obj_D < warm_obj_D * (1.0 - GUARD_GAIN))
              | (warm_obj_D > cold_above * prev_obj_D))
    need_D = need_D & has_data_D           # (a domain without a valid point stays NaN)
    # Cold-fit tiers: the first that holds every domain in need (gathered), else all domains.
    tiers = sorted({max(1, int(np.ceil(share * num_domains))) for share in (cold_share / 8, cold_share)})
    tiers = [k for k in tiers if k < num_domains]
    num = jnp.sum(need_D.astype(jnp.int32))
    branch = jnp.where(num == 0, 0, 1 + sum((num > k).astype(jnp.int32) for k in tiers))
    if axis_name is not None:       # one decision for every member of the vmapped axis: a real switch
        branch = jax.lax.pmax(branch, axis_name)

    def merge(rows, cold_th, cold_obj, cold_steps, carry):
        th, ob, st, cd = carry
        better = cold_obj < ob[rows]
        return (th.at[rows].set(jnp.where(better[:, None], cold_th, th[rows])),
                ob.at[rows].set(jnp.where(better, cold_obj, ob[rows])),
                st.at[rows].add(cold_steps), cd.at[rows].set(need_D[rows]))

    def some(k, carry):
        rows = jax.lax.top_k(need_D.astype(jnp.float32), k)[1]
        sub = jax.tree.map(lambda x: x[rows], data)
        return merge(rows, *cold_fit(sub), carry)

    def every(carry):
        return merge(jnp.arange(num_domains), *cold_fit(data), carry)

    carry = (theta_D3, obj_D, steps_D, jnp.zeros((num_domains,), bool))
    branches = [lambda c: c] + [functools.partial(some, k) for k in tiers] + [every]
    return jax.lax.switch(branch, branches, carry)


def fit_power_law(n_DT, loss_DT, mask_DT=None, *, solver: str = "lm", grid="paper",
                  maxiter: int = 30, refine_top_k: int | None = 8, lm_steps: int = 40,
                  delta: float = 1e-3, grid_sharding: NamedSharding | None = None,
                  scan_starts: int = 2, alpha_scan: int = 32, bounds="data",
                  init: PowerLaw | None = None, init_objective=None, warm_grid="coarse",
                  warm_tol: float = WARM_TOL, guard_steps: int = GUARD_STEPS, cold_above: float = COLD_ABOVE,
                  cold_share: float = COLD_SHARE, axis_name=None, return_info: bool = False):
    """Fits ``L_d(n) = exp(log_eps_d) + exp(log_beta_d) n^-alpha_d`` for every domain d.

    Pipeline (all static shapes, jittable, vmapped over domains x starts), in each domain's
    box ``bounds``:
      1. evaluate ``objective`` at every grid start (starts outside the domain's box are
         projected onto it first: the weight-1 hinges would pull them there anyway; with
         ``bounds="reference"`` starts that coincide after that are evaluated once), and at
         ``alpha_scan`` starts per domain on the valley floor (``scaling_law_solvers.alpha_scan``:
         for each alpha, the closed-form best eps and beta);
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
      grid: "paper", "reference" or a [G, 3] array of (log_eps, log_beta, alpha) starts.
      maxiter: L-BFGS iterations (ignored by "lm").
      refine_top_k: starts refined per domain (None: every grid start, as the reference).
      lm_steps: LM steps (0 to skip for L-BFGS).
      delta: the Huber threshold (paper: 1e-3).
      grid_sharding: optional ``NamedSharding`` for a [G, 3] array (e.g. ``P("x", None)``);
        its mesh axis on dim 0 shards the start axis of every stage.
      scan_starts: refined starts taken from the alpha scan (0: the grid only, as the paper).
        Without them a short curve (n over one decade) can end in the valley far from its
        minimum: LM crawls along it and the grid's best starts all lie on one side.
      alpha_scan: number of alphas in the scan, the midpoints of ``alpha_scan`` equal
        cells of each domain's alpha range ([0, 0.8] in both built-in boxes).
      bounds: the box on (log_eps, log_beta, alpha), applied alike by the hinge penalties,
        every solver, the grid of starts and the alpha scan:
        ``"data"`` (default): per domain from its own history (``data_bounds``): eps in
        [e^-10, 1] x the smallest observed loss, 0 <= alpha <= 0.8, log_beta wide enough
        for any law that fits the data. The paper (App. A.1) calls its bounds "purely
        preventative ... almost never saturated"; this box keeps them so on any loss scale.
        ``"reference"``: exactly the reference code's (and the paper's stated) box,
        ``log_eps >= 0.5, log_beta <= 6.5, 0 <= alpha <= 0.8``. It assumes GPT-2-token losses
        of 2-4 nats: a domain whose loss floor is below e^0.5 = 1.65 nats (bytes, code, long
        runs) gets eps held at 1.65. Or a ``FitBounds`` of [D] (or scalars).
      init: a warm refit: ``PowerLaw`` of [D] (or scalars for one domain), each domain's
        previous fit (NaN: none). Per domain, (a) the previous fit, projected onto the new box,
        is refined by LM until it converges (``warm_tol``, at most ``lm_steps``); (b) guard
        starts, the best of ``warm_grid`` and the best of an alpha scan over ``WARM_SCAN`` = 8
        alphas (none with ``alpha_scan=0``), get ``guard_steps`` LM steps; the best of (a) and
        (b) is kept. A domain gets a cold fit (the multi-start pipeline above; it keeps the
        better of the two) when it has no previous fit, when a guard start ends ``GUARD_GAIN``
        (1 %) or more below the converged previous fit (the optimum moved to another basin:
        LM stops within ~2 % of the optimum along the valley floor, so a smaller gain is not
        evidence of one), or when the objective rose above ``cold_above`` x
        ``init_objective`` (the curve changed shape). The domains in need are gathered and
        refit cold on their own when they are at most ``cold_share / 8`` or ``cold_share`` of
        all (two static sizes); more, and every domain is. The decision is a ``lax.switch``, so
        a refit
        that needs no cold fit costs the warm path only. None (default): a cold fit.
      init_objective: [D] the objectives of ``init`` (inf / NaN / None: unknown, no such test).
      warm_grid: the guard grid (as ``grid``; default the 12-start ``"coarse"`` grid).
      warm_tol: relative convergence tolerance of the warm start's LM run (``irls_lm``'s
        ``tol``): it stops after ``PATIENCE`` steps in a row that each lower the objective by
        at most ``warm_tol`` x its value. Under ``vmap`` over domains the loop runs until the
        last start converged. The cold fit runs its fixed ``lm_steps``: with 8 starts from a
        coarse grid, some start of some domain always needs them all.
      guard_steps: LM steps of each guard start.
      cold_above: a domain whose warm objective exceeds ``cold_above`` x its ``init_objective``
        is refit cold.
      cold_share: the largest share of the domains refit cold on their own (gathered) before
        every domain is.
      axis_name: when this fit runs under ``jax.vmap(..., axis_name=...)`` (e.g. over seeds),
        the cold/warm decision is taken jointly (``lax.pmax`` over that axis), so it stays a
        real ``lax.switch``; otherwise a batched decision turns it into a select that runs
        both paths.
      return_info: also return ``FitInfo`` (which parameters sit on a bound, in-sample error,
        LM steps run, whether the fit was cold).

    Returns:
      ``(PowerLaw [D] each, objective_D [D])``, plus ``FitInfo`` of [D] with
      ``return_info=True``. A domain with no valid point gets NaN parameters and objective
      (``keep_finite`` then keeps the previous fit).
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r}: expected one of {SOLVERS}")
    if maxiter < 0 or lm_steps < 0 or (solver == "lm" and lm_steps == 0):
        raise ValueError(f"maxiter={maxiter}, lm_steps={lm_steps}: expected >= 0 (lm_steps > 0 for 'lm')")
    check_bounds(bounds)
    loss = jnp.asarray(loss_DT, jnp.float32)
    single = loss.ndim == 1
    loss = loss[None] if single else loss
    if loss.ndim != 2:
        raise ValueError(f"loss_DT has shape {loss.shape}: expected [D, T] or [T]")
    num_domains = loss.shape[0]
    n = jnp.broadcast_to(jnp.asarray(n_DT, jnp.float32), loss.shape)
    mask = None if mask_DT is None else jnp.broadcast_to(jnp.asarray(mask_DT, bool), loss.shape)
    grid_G3 = make_grid(grid)
    if isinstance(bounds, str) and bounds == "reference":   # a static box: project here
        grid_G3 = np.clip(grid_G3, np.float32(solvers.LOWER_3), np.float32(solvers.UPPER_3))
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

    prep = jax.vmap(prepare, in_axes=(0, 0, None if mask is None else 0))
    logn_DT, logy_DT, w_DT, count_D = prep(n, loss, mask)
    lo_D3, hi_D3 = box_arrays(bounds, (logn_DT, logy_DT, w_DT), num_domains)
    data = (logn_DT, logy_DT, w_DT, lo_D3, hi_D3)
    cold_fit = lambda d: _cold(d, grid_G3, k_grid, scan_starts, alpha_scan, solver, maxiter, lm_steps, delta,
                               grid_sharding)
    if init is None:
        theta_D3, obj_D, steps_D = cold_fit(data)
        cold_D = jnp.ones((num_domains,), bool)
    else:
        if not (warm_tol >= 0 and guard_steps >= 1 and cold_above > 0 and 0 < cold_share <= 1):
            raise ValueError(f"warm_tol={warm_tol}, guard_steps={guard_steps}, cold_above={cold_above}, "
                             f"cold_share={cold_share}: expected warm_tol >= 0, guard_steps >= 1, "
                             "cold_above > 0, 0 < cold_share <= 1")
        prev_D3 = jnp.broadcast_to(stack_params(init).reshape(-1, 3), (num_domains, 3))
        prev_obj_D = (jnp.full((num_domains,), jnp.inf, jnp.float32) if init_objective is None else
                      jnp.broadcast_to(jnp.asarray(init_objective, jnp.float32).reshape(-1), (num_domains,)))
        prev_obj_D = jnp.where(jnp.isnan(prev_obj_D), jnp.inf, prev_obj_D)
        theta_D3, obj_D, steps_D, cold_D = _warm(
            data, count_D > 0, prev_D3, prev_obj_D, cold_fit, lm_steps=lm_steps, delta=delta, alpha_scan=alpha_scan,
            warm_grid_G3=jnp.asarray(make_grid(warm_grid)), warm_tol=warm_tol, guard_steps=guard_steps,
            cold_above=cold_above, cold_share=cold_share, axis_name=axis_name)
    bad_D = (count_D == 0) | ~jnp.isfinite(obj_D)
    theta_D3 = jnp.where(bad_D[:, None], jnp.nan, theta_D3)
    obj_D = jnp.where(bad_D, jnp.nan, obj_D)
    params = PowerLaw(theta_D3[:, 0], theta_D3[:, 1], theta_D3[:, 2])
    out = (params, obj_D)
    if return_info:
        info = jax.vmap(_info)(theta_D3, data)
        out = out + (info._replace(steps=steps_D.astype(jnp.int32), cold=cold_D),)
    if single:
        return jax.tree.map(lambda x: x[0], out)
    return out


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
