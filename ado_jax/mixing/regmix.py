"""RegMix: data mixture as regression (Liu et al. 2024, "RegMix: Data Mixture as Regression for
Language Model Pre-training", arXiv:2407.01492).

Many small proxy runs on mixtures drawn from a Dirichlet around the token distribution; a
regression from mixture to target loss (linear, or LightGBM — the paper's main choice); then
the regression is "simulated" on many candidate mixtures drawn from the prior, and the mean
of the top-k candidates (lowest predicted loss) is the mixture for the large run. The fit
quality is reported as the Spearman rank correlation ρ (and Pearson r, MSE) on held-out runs.

Defaults follow RegMix's released code (github.com/sail-sg/regmix): the regression notebook's
LightGBM hyperparameters (gbdt, l2 objective, 1000 iterations, learning rate 0.01, early
stopping after 3 rounds on held-out runs, seed 42) and simulation (100,000 candidates from
Dirichlet(prior · 1), the mean of the top 128). Its proxy-config sampler (a prior tempered by
0.5, a strength from 15 log-spaced values in [0.1, 5], weights above 15 × prior rejected and
below 2e-4 zeroed) is ``regmix_candidates(..., strengths=np.geomspace(0.1, 5, 15),
temperature=0.5, max_epochs=15, min_weight=2e-4)``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Predictor = Callable[[np.ndarray], np.ndarray]  # mixtures [N, D] -> predicted target [N]
LGBM_PARAMS = {"boosting_type": "gbdt", "objective": "regression", "num_iterations": 1000, "learning_rate": 1e-2,
               "seed": 42, "verbosity": -1}


def regmix_candidates(prior_D, num: int, *, seed: int = 0, strengths=(1.0,), temperature: float = 1.0,
                      min_weight: float = 0.0, max_epochs: float | None = None) -> np.ndarray:
    """[N, D] candidate mixtures drawn from Dirichlet(prior^temperature · strength) (module doc).

    Args:
      prior_D: [D] the prior (token distribution; uniform for a balanced prior).
      num: N, the number of candidates returned.
      seed: numpy seed.
      strengths: the Dirichlet strengths; each draw picks one uniformly.
      temperature: the prior is raised to this power and renormalized (RegMix: 0.5).
      min_weight: entries below it are set to 0, then rows renormalized.
      max_epochs: reject draws with a weight above ``max_epochs × prior_j`` (the untempered prior;
        RegMix's cap on how often a domain's tokens may repeat).
    """
    prior = np.asarray(prior_D, np.float64)
    if prior.ndim != 1 or np.any(prior <= 0) or not np.all(np.isfinite(prior)):
        raise ValueError(f"prior must be [D] positive and finite, got {prior_D!r}")
    prior = prior / prior.sum()
    alpha = prior ** temperature
    alpha = alpha / alpha.sum()
    strengths = np.asarray(strengths, np.float64).reshape(-1)
    rng = np.random.default_rng(seed)
    out, drawn = [], 0
    while drawn < int(num):
        s = strengths[rng.integers(len(strengths), size=2 * int(num))]
        x = np.stack([rng.dirichlet(alpha * si) for si in s]) if len(strengths) > 1 else rng.dirichlet(
            alpha * strengths[0], size=2 * int(num))
        if max_epochs is not None:
            x = x[np.all(x <= np.minimum(prior * max_epochs, 1.0), axis=1)]
        x = np.where(x < min_weight, 0.0, x)
        x = x[x.sum(axis=1) > 0]
        out.append(x / x.sum(axis=1, keepdims=True))
        drawn += len(out[-1])
    return np.concatenate(out)[: int(num)]


def fit_linear(mixtures_KD, y_K) -> Predictor:
    """RegMix's linear regression ``y ≈ w · p + w0`` by least squares; returns ``[N, D] -> [N]``.

    On the simplex the intercept and the weights are collinear; ``lstsq``'s minimum-norm solution
    gives the same predictions as any other least-squares solution.
    """
    x = np.asarray(mixtures_KD, np.float64)
    design = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    coef = np.linalg.lstsq(design, np.asarray(y_K, np.float64), rcond=None)[0]
    return lambda p: np.concatenate([np.atleast_2d(p), np.ones((np.atleast_2d(p).shape[0], 1))], axis=1) @ coef


def fit_lgbm(mixtures_KD, y_K, *, params: dict | None = None, early_stopping_fraction: float = 0.125,
             seed: int = 0) -> Predictor:
    """RegMix's LightGBM regression (``lightgbm.train``, ``LGBM_PARAMS`` updated by ``params``).

    A fraction ``early_stopping_fraction`` of the runs (chosen with ``seed``) is held out for
    early stopping after 3 rounds, as RegMix's notebook holds out its test runs (0: no early
    stopping, all 1000 trees). LightGBM's ``min_child_samples`` of 20 needs ~40+ runs to split at
    all; with fewer runs pass e.g. ``params={"min_child_samples": 3}``. Needs the ``fit`` extra
    (``pip install 'ado-jax[fit]'``).
    """
    try:
        import lightgbm as lgb
    except ImportError:
        raise ValueError("RegMix's LightGBM regression needs lightgbm: pip install 'ado-jax[fit]'") from None
    x, y = np.asarray(mixtures_KD, np.float64), np.asarray(y_K, np.float64)
    hp = {**LGBM_PARAMS, **(params or {})}
    n_val = int(round(early_stopping_fraction * len(y)))
    if n_val >= 1 and len(y) - n_val >= 2:
        idx = np.random.default_rng(seed).permutation(len(y))
        val, tr = idx[:n_val], idx[n_val:]
        train_set = lgb.Dataset(x[tr], y[tr], params=hp)
        model = lgb.train(hp, train_set, valid_sets=[lgb.Dataset(x[val], y[val], reference=train_set)],
                          callbacks=[lgb.early_stopping(stopping_rounds=3, verbose=False)])
    else:
        model = lgb.train(hp, lgb.Dataset(x, y, params=hp))
    return lambda p: np.asarray(model.predict(np.atleast_2d(p), num_iteration=model.best_iteration or None),
                                np.float64)


def regmix_optimum(predict: Predictor, candidates_ND, top_k: int = 128) -> np.ndarray:
    """[D] RegMix's predicted optimum: the mean of the ``top_k`` candidates ``[N, D]`` with the
    lowest predicted target."""
    c = np.asarray(candidates_ND, np.float64)
    pred = np.asarray(predict(c), np.float64)
    if not np.any(np.isfinite(pred)):
        raise ValueError("the regression predicted no finite loss on the candidates")
    order = np.argsort(np.where(np.isfinite(pred), pred, np.inf))[: max(1, int(top_k))]
    w = c[order].mean(axis=0)
    return w / w.sum()
