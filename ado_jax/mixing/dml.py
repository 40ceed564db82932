"""Data mixing laws (DML): the static log-linear mixing law fitted offline from static-mixture runs.

Ye et al. 2024, "Data Mixing Laws: Optimizing Data Mixtures by Predicting Language Modeling
Performance" (arXiv:2403.16952), as the Aioli paper (Chen et al. 2024, "Aioli: A Unified
Optimization Framework for Language Model Data Mixing", arXiv:2411.05735, §3.3.1 and Table 1)
states it: for each validation domain i,

    L_val,i(p) = c_i + b_i exp(-Σ_j A_ij p_j)

fitted from at least m + 1 training runs on static mixtures p (m = D domains), and the mixture
minimizing the predicted validation loss is chosen directly.

Identifiability: on the simplex (Σ_j p_j = 1), ``b_i exp(-Σ_j A_ij p_j) = (b_i e^{-s}) exp(-Σ_j
(A_ij - s) p_j)`` for any s, so a run table determines A only up to a shift of each row. The
fit therefore uses ``L_i = c_i + exp(Σ_j v_ij p_j)`` (D + 1 parameters per domain, hence the m + 1
runs) and reports the gauge ``Σ_j A_ij = 0``: ``b_i = exp(mean_j v_ij)``, ``A_ij = log b_i - v_ij``.
It assumes ``b_i > 0`` (the loss lies above c_i), as every law in the papers does.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class DMLFit(NamedTuple):
    """A fitted data mixing law per validation domain (M of them) over D training domains.

    c: [M] irreducible term c_i; b: [M] scale b_i > 0; a: [M, D] A_ij in the gauge Σ_j A_ij = 0;
    rmse: [M] in-sample root-mean-square residual of each domain's fit.
    """

    c: np.ndarray
    b: np.ndarray
    a: np.ndarray
    rmse: np.ndarray


def _check_table(mixtures_KD, losses_KM) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(mixtures_KD, np.float64)
    y = np.asarray(losses_KM, np.float64)
    if p.ndim != 2 or y.ndim != 2 or p.shape[0] != y.shape[0] or p.shape[0] == 0:
        raise ValueError(f"need mixtures [K, D] and losses [K, M] with the same K > 0, got {p.shape} and {y.shape}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(y))) or np.any(p < 0):
        raise ValueError("mixtures must be finite and non-negative and losses finite")
    return p / p.sum(axis=1, keepdims=True), y


def fit_dml_domain(mixtures_KD, losses_K, *, starts: int = 5) -> tuple[float, np.ndarray, float]:
    """Fits ``L(p) = c + exp(v · p)`` to one domain's losses by least squares (scipy, multi-start).

    Args:
      mixtures_KD: [K, D] the runs' mixtures (rows on the simplex).
      losses_K: [K] the domain's held-out loss of each run.
      starts: initial guesses of c below ``min(L)``; v starts at the log-linear regression.

    Returns:
      ``(c, v [D], rmse)``.
    """
    from scipy.optimize import least_squares

    p, y = _check_table(mixtures_KD, np.reshape(losses_K, (-1, 1)))
    y = y[:, 0]
    k, d = p.shape
    if k < d + 1:
        raise ValueError(f"DML needs at least D + 1 = {d + 1} runs (m + 1: c_i, b_i and A_i up to a shift), "
                         f"the table has {k}")
    spread = max(float(y.max() - y.min()), 1e-3)

    def resid(x):
        return x[0] + np.exp(np.clip(p @ x[1:], -50, 50)) - y

    def jac(x):
        e = np.exp(np.clip(p @ x[1:], -50, 50))
        return np.concatenate([np.ones((k, 1)), e[:, None] * p], axis=1)

    best = None
    for delta in np.geomspace(0.05, 5.0, max(1, int(starts))):
        c0 = float(y.min()) - delta * spread
        v0 = np.linalg.lstsq(p, np.log(y - c0), rcond=None)[0]
        sol = least_squares(resid, np.concatenate([[c0], v0]), jac=jac, method="lm" if k > d + 1 else "trf",
                            max_nfev=2000)
        if best is None or sol.cost < best.cost:
            best = sol
    rmse = float(np.sqrt(np.mean(resid(best.x) ** 2)))
    return float(best.x[0]), best.x[1:], rmse


def fit_dml(mixtures_KD, losses_KM, *, starts: int = 5) -> DMLFit:
    """Fits the data mixing law of each of the M loss columns (``fit_dml_domain``).

    Args:
      mixtures_KD: [K, D] static mixtures of K runs, K >= D + 1 (rows are normalized).
      losses_KM: [K, M] each run's held-out loss on M validation domains.

    Returns:
      ``DMLFit`` with ``c, b: [M]``, ``a: [M, D]`` (rows summing to 0), ``rmse: [M]``.

    Raises:
      ValueError: fewer than D + 1 runs, shapes that disagree, non-finite values.
    """
    p, y = _check_table(mixtures_KD, losses_KM)
    fits = [fit_dml_domain(p, y[:, i], starts=starts) for i in range(y.shape[1])]
    v_MD = np.stack([f[1] for f in fits])
    log_b = v_MD.mean(axis=1)
    return DMLFit(c=np.array([f[0] for f in fits]), b=np.exp(log_b), a=log_b[:, None] - v_MD,
                  rmse=np.array([f[2] for f in fits]))


def dml_predict(fit: DMLFit, mixtures_ND) -> np.ndarray:
    """[N, M] predicted losses ``c_i + b_i exp(-Σ_j A_ij p_j)`` at mixtures ``mixtures_ND: [N, D]``."""
    p = np.atleast_2d(np.asarray(mixtures_ND, np.float64))
    return fit.c[None, :] + fit.b[None, :] * np.exp(-p @ fit.a.T)


def dml_optimum(fit: DMLFit, target_M, *, starts=None) -> np.ndarray:
    """[D] the mixture minimizing the predicted target ``Σ_i w_i L_i(p)`` over the simplex.

    With ``w_i >= 0`` the objective is a positive sum of exponentials of linear functions, so
    convex: SLSQP from the uniform mixture and each vertex (or ``starts: [S, D]``) finds the
    minimum; the best of the starts is returned.

    Args:
      fit: a ``DMLFit`` over M domains.
      target_M: [M] non-negative weights of the validation domains in the target.
    """
    from scipy.optimize import minimize

    w = np.asarray(target_M, np.float64)
    d = fit.a.shape[1]
    if w.shape != fit.c.shape or np.any(w < 0) or not np.any(w > 0):
        raise ValueError(f"target weights must be [M] = {fit.c.shape} non-negative and not all zero, got {w}")
    f = lambda p: float(w @ (fit.c + fit.b * np.exp(-fit.a @ p)))
    grad = lambda p: -(w * fit.b * np.exp(-fit.a @ p)) @ fit.a
    x0s = np.concatenate([np.full((1, d), 1.0 / d), 0.9 * np.eye(d) + 0.1 / d]) if starts is None else starts
    best = None
    for x0 in np.atleast_2d(x0s):
        sol = minimize(f, x0, jac=grad, method="SLSQP", bounds=[(0.0, 1.0)] * d,
                       constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1.0, "jac": lambda p: np.ones(d)}],
                       options={"maxiter": 500, "ftol": 1e-12})
        if best is None or sol.fun < best.fun:
            best = sol
    p = np.clip(best.x, 0.0, None)
    return p / p.sum()
