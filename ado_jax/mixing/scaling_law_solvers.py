"""Per-start solvers for the power-law fit: optax L-BFGS, jaxopt L-BFGS, projected IRLS-LM,
and a separable alpha scan that seeds them.

Every solver maps one start ``theta_3 = (log_eps, log_beta, alpha)`` and one domain's
prepared data to a refined ``theta_3`` with a FIXED amount of work (a ``fori_loop`` with a
static trip count), so a caller can ``vmap`` it over domains x starts and run it under
``jit``/``lax.cond`` with a static cost. Each solver returns the best iterate it visited (by
objective value), so a failed line search or a NaN step cannot make a start worse.

The box ``lo_3 <= theta_3 <= hi_3`` is an argument of every function (per start, so a caller
can vmap a per-domain box along with the data); ``scaling_law.fit_power_law`` builds it
(``bounds="data"`` or ``"reference"``). Bounds may be infinite (then they never bind).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

Array = jax.Array

# The reference code's box (its `loss_fn` hinges; the paper, App. A.1, states the same box),
# order (log_eps, log_beta, alpha): log_eps >= 0.5, log_beta <= 6.5, 0 <= alpha <= 0.8.
# ``fit_power_law(bounds="reference")`` uses it; the default box follows the data.
LOWER_3 = (0.5, -float("inf"), 0.0)
UPPER_3 = (float("inf"), 6.5, 0.8)
PATIENCE = 3   # irls_lm: quiet steps in a row that count as converged


def huber(r: Array, delta: float) -> Array:
    """Elementwise Huber(delta) of residuals ``r`` (same shape); quadratic within ``delta``."""
    a = jnp.abs(r)
    return jnp.where(a > delta, delta * (a - 0.5 * delta), 0.5 * r * r)


def penalty(theta_3: Array, lo_3, hi_3) -> Array:
    """[] linear hinge penalties (weight 1) for leaving the box ``lo_3..hi_3`` ([3] each)."""
    lo_3, hi_3 = jnp.asarray(lo_3, theta_3.dtype), jnp.asarray(hi_3, theta_3.dtype)
    return jnp.sum(jnp.maximum(theta_3 - hi_3, 0.0) + jnp.maximum(lo_3 - theta_3, 0.0))


def log_predict(theta_3: Array, logn_T: Array) -> Array:
    """[T] log(eps + beta n^-alpha) computed stably as logaddexp(log_eps, log_beta - alpha log n)."""
    return jnp.logaddexp(theta_3[0], theta_3[1] - theta_3[2] * logn_T)


def objective_3(theta_3: Array, logn_T: Array, logy_T: Array, w_T: Array, delta: float,
                lo_3, hi_3) -> Array:
    """[] weighted mean Huber of log residuals + penalties for leaving ``lo_3..hi_3``;
    ``w_T`` sums to 1 over valid points."""
    r_T = log_predict(theta_3, logn_T) - logy_T
    return jnp.sum(w_T * huber(r_T, delta)) + penalty(theta_3, lo_3, hi_3)


def _keep_best(x, fx, best_x, best_f):
    better = jnp.isfinite(fx) & (fx < best_f)
    return jnp.where(better, x, best_x), jnp.where(better, fx, best_f)


def lbfgs_optax(f: Callable[[Array], Array], theta0_3: Array, maxiter: int,
                memory_size: int = 10, max_linesearch_steps: int = 16) -> Array:
    """Runs exactly ``maxiter`` steps of ``optax.lbfgs`` (zoom line search) on ``f``.

    Args:
      f: ``[3] -> []`` objective.
      theta0_3: [3] start.

    Returns:
      [3] the best iterate seen.
    """
    opt = optax.lbfgs(memory_size=memory_size,
                      linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps))
    value_and_grad = optax.value_and_grad_from_state(f)

    def body(_, carry):
        x, state, best_x, best_f = carry
        v, g = value_and_grad(x, state=state)
        best_x, best_f = _keep_best(x, v, best_x, best_f)
        updates, state = opt.update(g, state, x, value=v, grad=g, value_fn=f)
        x = optax.apply_updates(x, updates)
        return x, state, best_x, best_f

    carry = (theta0_3, opt.init(theta0_3), theta0_3, f(theta0_3))
    x, _, best_x, best_f = jax.lax.fori_loop(0, maxiter, body, carry)
    return _keep_best(x, f(x), best_x, best_f)[0]


def lbfgs_jaxopt(f: Callable[[Array], Array], theta0_3: Array, maxiter: int = 200,
                 tol: float = 1e-5) -> Array:
    """The reference's solver: ``jaxopt.LBFGS(f, maxiter, tol).run`` from ``theta0_3``.

    jaxopt stops early at ``tol`` (a while loop), so under ``vmap`` the cost is set by the
    slowest start; ``maxiter`` still bounds it. Returns [3] (the start if the run went NaN).
    """
    import jaxopt  # optional dependency: only this solver needs it

    x = jaxopt.LBFGS(f, maxiter=maxiter, tol=tol, jit=True).run(theta0_3).params
    fx, f0 = f(x), f(theta0_3)
    return jnp.where(jnp.isfinite(fx) & (fx <= f0), x, theta0_3)


def _solve_33(A_33: Array, b_3: Array) -> Array:
    """[3] ``A^-1 b`` for a symmetric positive definite [3, 3] ``A`` by the adjugate (Cramer's
    rule): a few dozen flops, where ``jnp.linalg.solve`` under ``vmap`` calls a batched LU."""
    a, b, c = A_33[0, 0], A_33[0, 1], A_33[0, 2]
    d, e, f = A_33[1, 1], A_33[1, 2], A_33[2, 2]
    c00, c01, c02 = d * f - e * e, c * e - b * f, b * e - c * d
    c11, c12, c22 = a * f - c * c, b * c - a * e, a * d - b * b
    det = a * c00 + b * c01 + c * c02
    adj_33 = jnp.stack([jnp.stack([c00, c01, c02]), jnp.stack([c01, c11, c12]), jnp.stack([c02, c12, c22])])
    return adj_33 @ b_3 / det


def irls_lm(theta0_3: Array, logn_T: Array, logy_T: Array, w_T: Array, delta: float,
            steps: int, lo_3, hi_3, damping0: float = 1e-3, tol: float = 0.0, patience: int = PATIENCE,
            return_steps: bool = False):
    """Projected Levenberg-Marquardt on the IRLS majorizer of the Huber objective.

    Specialised to ``log L = logaddexp(log_eps, log_beta - alpha log n)``: the residual
    Jacobian is closed-form (``s = sigmoid(log_beta - alpha log n - log_eps)`` gives
    ``[1 - s, s, -s log n]``). Each step solves the 3x3 damped normal equations with Huber
    weights ``min(1, delta/|r|)`` (the majorize-minimize bound of Huber), only over variables
    not held at a bound, projects onto the box, and is accepted only if the true objective
    drops (else the damping grows x10). Starts outside the box ``lo_3..hi_3`` are projected
    first (the penalties are exact, so the penalised minimum lies in the box). The residuals
    and ``s`` of the current iterate are carried from the step that accepted it, so a step
    costs three transcendentals per point (``exp`` and ``log1p`` of the log prediction, ``exp``
    for ``s``).

    Args:
      theta0_3: [3] start (log_eps, log_beta, alpha).
      logn_T: [T] log sample counts (``power_law.prepare``).
      logy_T: [T] log losses.
      w_T: [T] weights, summing to 1 over valid points.
      delta: the Huber threshold.
      steps: the most LM steps to run.
      lo_3: [3] lower bounds of the box.
      hi_3: [3] upper bounds of the box.
      damping0: the initial damping.
      tol: 0 runs exactly ``steps`` steps (a ``fori_loop``). Above 0 the run stops early (a
        ``while_loop``), once ``patience`` steps in a row each lowered the objective by at
        most ``tol`` x its value (a rejected step lowers it by 0): converged. Under ``vmap``
        the loop runs until every lane stopped, and a stopped lane is left unchanged, so
        the result per start does not depend on the batch.
      patience: consecutive quiet steps that count as converged.
      return_steps: also return the [] int32 number of steps run.

    Returns:
      [3] the last accepted iterate (the best visited: steps are accepted only if the
      objective drops), and with ``return_steps`` the steps run.
    """
    lo, hi = jnp.asarray(lo_3, theta0_3.dtype), jnp.asarray(hi_3, theta0_3.dtype)
    x0 = jnp.clip(theta0_3, lo, hi)

    def at(x):  # inside the box the penalties are 0: the objective is the mean Huber
        z_T = x[1] - x[2] * logn_T
        lse_T = jnp.logaddexp(x[0], z_T)
        r_T = lse_T - logy_T
        return jnp.sum(w_T * huber(r_T, delta)), r_T, jnp.exp(z_T - lse_T)

    def step(carry):
        x, fx, r_T, s_T, lam, quiet, k = carry
        # Gradient J^T u r and Gauss-Newton matrix J^T u J of the Jacobian [1 - s, s, -s log n]
        # as elementwise sums (fused by XLA; cheaper than [3, T] x [T, 3] products under vmap).
        u_T = w_T * jnp.minimum(1.0, delta / jnp.maximum(jnp.abs(r_T), 1e-30))
        us_T, ur_T = u_T * s_T, u_T * r_T
        usl_T = us_T * logn_T
        s_u, s_us, s_uss = jnp.sum(u_T), jnp.sum(us_T), jnp.sum(us_T * s_T)
        s_usl, s_ussl, s_ussll = jnp.sum(usl_T), jnp.sum(usl_T * s_T), jnp.sum(usl_T * s_T * logn_T)
        s_ur, s_urs = jnp.sum(ur_T), jnp.sum(ur_T * s_T)
        g_3 = jnp.stack([s_ur - s_urs, s_urs, -jnp.sum(ur_T * s_T * logn_T)])
        h00, h01, h11 = s_u - 2.0 * s_us + s_uss, s_us - s_uss, s_uss
        h02, h12, h22 = -(s_usl - s_ussl), -s_ussl, s_ussll
        H_33 = jnp.stack([jnp.stack([h00, h01, h02]), jnp.stack([h01, h11, h12]), jnp.stack([h02, h12, h22])])
        # Hold variables at a bound whose gradient points out of the box.
        held_3 = ((x <= lo) & (g_3 > 0)) | ((x >= hi) & (g_3 < 0))
        free_3 = (~held_3).astype(x.dtype)
        H_33 = H_33 * free_3[:, None] * free_3[None, :]
        diag_3 = jnp.diagonal(H_33)
        A_33 = H_33 + jnp.diag(lam * diag_3 + (1.0 - free_3) + 1e-12)
        step_3 = -_solve_33(A_33, g_3 * free_3)
        cand = jnp.clip(x + step_3, lo, hi)
        fc, rc_T, sc_T = at(cand)
        ok = jnp.isfinite(fc) & (fc < fx)
        gain = jnp.where(ok, fx - fc, 0.0)
        quiet = jnp.where(gain <= tol * jnp.abs(fx), quiet + 1, 0)
        keep = lambda a, b: jnp.where(ok, a, b)
        return (keep(cand, x), keep(fc, fx), keep(rc_T, r_T), keep(sc_T, s_T),
                jnp.clip(jnp.where(ok, lam * 0.3, lam * 10.0), 1e-9, 1e9), quiet, k + 1)

    f0, r0_T, s0_T = at(x0)
    zero = jnp.zeros((), jnp.int32)
    carry = (x0, f0, r0_T, s0_T, jnp.asarray(damping0, x0.dtype), zero, zero)
    if tol > 0:
        carry = jax.lax.while_loop(lambda c: (c[6] < steps) & (c[5] < patience), step, carry)
    else:
        carry = jax.lax.fori_loop(0, steps, lambda _, c: step(c), carry)
    return (carry[0], carry[6]) if return_steps else carry[0]


def alpha_scan(logn_T: Array, logy_T: Array, w_T: Array, alphas_A: Array, lo_3, hi_3) -> Array:
    """[A, 3] starts on the valley floor: for each alpha, the best (log_eps, log_beta) in closed form.

    For a fixed alpha the law ``eps + beta x`` (``x = n^-alpha``) is linear in (eps, beta), so
    the weighted least-squares fit of the relative residual ``(eps + beta x - y) / y`` (the
    first-order log residual) is a 2x2 solve (variable projection). Over a short n range the
    objective's minimiser lies in a long curved valley in (log_eps, log_beta, alpha) that LM
    only crawls along, and a coarse grid rarely lands near it; these starts lie on it.
    The box ``lo_3..hi_3`` is applied crudely (beta <= its upper bound, re-solving eps; then
    eps into its range, re-solving beta; then beta into its range, at least 1e-6 when its
    lower bound is 0): they are only starts. NaN where the solve is singular (alpha = 0, no
    valid point).
    """
    y_T = jnp.exp(logy_T)
    v_T = w_T / (y_T * y_T)
    lo_3, hi_3 = jnp.asarray(lo_3, jnp.float32), jnp.asarray(hi_3, jnp.float32)
    e_lo, e_hi = jnp.exp(lo_3[0]), jnp.exp(hi_3[0])
    e_lo = jnp.where(e_lo > 0, e_lo, 1e-30)                  # keeps log(eps) finite
    b_lo, b_hi = jnp.exp(lo_3[1]), jnp.exp(hi_3[1])
    b_lo = jnp.where(b_lo > 0, b_lo, 1e-6)

    def one(alpha):
        x_T = jnp.exp(-alpha * logn_T)
        s1, sx, sxx, sy, sxy = (jnp.sum(v_T * q) for q in (1.0, x_T, x_T * x_T, y_T, x_T * y_T))
        det = s1 * sxx - sx * sx
        ok = det > 1e-9 * s1 * sxx
        eps = (sxx * sy - sx * sxy) / det
        beta = (s1 * sxy - sx * sy) / det
        too_big = beta > b_hi
        eps = jnp.where(too_big, (sy - b_hi * sx) / s1, eps)
        eps_in = jnp.clip(eps, e_lo, e_hi)
        beta = jnp.where(eps_in != eps, (sxy - eps_in * sx) / sxx, jnp.where(too_big, b_hi, beta))
        eps = eps_in
        beta = jnp.clip(beta, b_lo, b_hi)
        theta_3 = jnp.stack([jnp.log(eps), jnp.log(beta), alpha])
        return jnp.where(ok, theta_3, jnp.nan)

    return jax.vmap(one)(jnp.asarray(alphas_A, jnp.float32))
