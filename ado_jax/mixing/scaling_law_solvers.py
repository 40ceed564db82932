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


def irls_lm(theta0_3: Array, logn_T: Array, logy_T: Array, w_T: Array, delta: float,
            steps: int, lo_3, hi_3, damping0: float = 1e-3) -> Array:
    """Projected Levenberg-Marquardt on the IRLS majorizer of the Huber objective.

    Specialised to ``log L = logaddexp(log_eps, log_beta - alpha log n)``: the residual
    Jacobian is closed-form (``s = sigmoid(log_beta - alpha log n - log_eps)`` gives
    ``[1 - s, s, -s log n]``). Each step solves the 3x3 damped normal equations with Huber
    weights ``min(1, delta/|r|)`` (the majorize-minimize bound of Huber), only over variables
    not held at a bound, projects onto the box, and is accepted only if the true objective
    drops (else the damping grows x10). Starts outside the box ``lo_3..hi_3`` are projected
    first (the penalties are exact, so the penalised minimum lies in the box). Returns [3].
    """
    lo, hi = jnp.asarray(lo_3, theta0_3.dtype), jnp.asarray(hi_3, theta0_3.dtype)
    f = lambda th: objective_3(th, logn_T, logy_T, w_T, delta, lo, hi)
    x0 = jnp.clip(theta0_3, lo, hi)

    def body(_, carry):
        x, fx, lam = carry
        z_T = x[1] - x[2] * logn_T
        s_T = jax.nn.sigmoid(z_T - x[0])
        r_T = jnp.logaddexp(x[0], z_T) - logy_T
        J_T3 = jnp.stack([1.0 - s_T, s_T, -s_T * logn_T], axis=-1)
        u_T = w_T * jnp.minimum(1.0, delta / jnp.maximum(jnp.abs(r_T), 1e-30))
        g_3 = J_T3.T @ (u_T * r_T)
        H_33 = (J_T3 * u_T[:, None]).T @ J_T3
        # Hold variables at a bound whose gradient points out of the box.
        held_3 = ((x <= lo) & (g_3 > 0)) | ((x >= hi) & (g_3 < 0))
        free_3 = (~held_3).astype(x.dtype)
        H_33 = H_33 * free_3[:, None] * free_3[None, :]
        diag_3 = jnp.diagonal(H_33)
        A_33 = H_33 + jnp.diag(lam * diag_3 + (1.0 - free_3) + 1e-12)
        step_3 = -jnp.linalg.solve(A_33, g_3 * free_3)
        cand = jnp.clip(x + step_3, lo, hi)
        fc = f(cand)
        ok = jnp.isfinite(fc) & (fc < fx)
        return (jnp.where(ok, cand, x), jnp.where(ok, fc, fx),
                jnp.clip(jnp.where(ok, lam * 0.3, lam * 10.0), 1e-9, 1e9))

    carry = (x0, f(x0), jnp.asarray(damping0, x0.dtype))
    return jax.lax.fori_loop(0, steps, body, carry)[0]


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
