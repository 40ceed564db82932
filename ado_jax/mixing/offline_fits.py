"""Offline mixture fits from a table of static-mixture runs: DML and RegMix, scored by cross-validation.

A run table holds K runs on static mixtures over D training domains and each run's held-out
loss on M validation domains (the training domains, and possibly evaluation-only ones)::

    {"domains": [D names], "mixtures": [[D floats] x K],
     "eval_domains": [M names], "losses": [[M floats] x K],
     "sizes": [D token counts]}                            # optional: the natural target / prior

or a CSV with one row per run and the columns ``weight/<domain>`` and ``loss/<domain>``.
``fit_mixture`` fits ``"dml"`` (``ado_jax.mixing.dml``), ``"regmix-linear"`` or
``"regmix-lgbm"`` (``ado_jax.mixing.regmix``) for a target — ``uniform`` (mean loss of the
training domains, the Aioli paper's objective), ``natural`` (weighted by ``sizes``), ``all``,
``eval_only`` (mean of the domains not trained on), ``domain:NAME`` or ``domains:A,B,...`` (the
mean over those) — reports RegMix's fit
metrics (Spearman ρ, Pearson r, MSE) from K-fold cross-validation, and predicts the best
mixture. ``write_weights`` stores it as a JSON that trains directly::

    ado-jax fit-mixture runs.json --method dml --target uniform --out dml.json
    ado-jax train --set mixer.name=static --set mixer.weights_from=dml.json
"""

from __future__ import annotations

import csv
import io
import json
from typing import NamedTuple

import numpy as np

from ado_jax import storage
from ado_jax.mixing import dml, regmix

METHODS = ("dml", "regmix-linear", "regmix-lgbm")


class RunTable(NamedTuple):
    """mixtures: [K, D]; losses: [K, M]; domains: D names; eval_domains: M names; sizes: [D] or None."""

    mixtures: np.ndarray
    losses: np.ndarray
    domains: tuple
    eval_domains: tuple
    sizes: np.ndarray | None


class MixtureFit(NamedTuple):
    """weights: [D] the predicted best mixture; predicted: the fit's target loss there; cv: RegMix's
    metrics ``{"spearman", "pearson", "mse", "folds", "runs"}`` of out-of-fold predictions of the
    target; method, target: what was fitted; law: the ``DMLFit`` (dml) or None."""

    weights: np.ndarray
    predicted: float
    cv: dict
    method: str
    target: str
    law: object


def make_table(mixtures_KD, losses_KM, domains=None, eval_domains=None, sizes=None) -> RunTable:
    """A checked ``RunTable``; names default to ``d0, d1, ...`` and the loss columns to the domains."""
    p, y = np.asarray(mixtures_KD, np.float64), np.asarray(losses_KM, np.float64)
    if p.ndim != 2 or y.ndim != 2 or p.shape[0] != y.shape[0] or p.shape[0] == 0:
        raise ValueError(f"run table: need mixtures [K, D] and losses [K, M] with the same K > 0, got "
                         f"{p.shape} and {y.shape}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(y))) or np.any(p < 0) or np.any(p.sum(axis=1) <= 0):
        raise ValueError("run table: mixtures must be finite, non-negative rows with a positive sum; losses finite")
    domains = tuple(domains) if domains is not None else tuple(f"d{j}" for j in range(p.shape[1]))
    eval_domains = tuple(eval_domains) if eval_domains is not None else domains[: y.shape[1]]
    if len(domains) != p.shape[1] or len(eval_domains) != y.shape[1]:
        raise ValueError(f"run table: {len(domains)} domain names for {p.shape[1]} mixture columns, "
                         f"{len(eval_domains)} eval names for {y.shape[1]} loss columns")
    s = None if sizes is None else np.asarray(sizes, np.float64)
    if s is not None and (s.shape != (p.shape[1],) or np.any(s < 0) or not s.sum() > 0):
        raise ValueError(f"run table: sizes must be [D] = [{p.shape[1]}] non-negative, got {sizes!r}")
    return RunTable(p / p.sum(axis=1, keepdims=True), y, domains, eval_domains, s)


def load_table(path) -> RunTable:
    """Reads a run table (JSON or CSV, module doc) from a local or gs:// path."""
    text = storage.read_text(path)
    if text is None:
        raise ValueError(f"run table {path}: no such file")
    if str(path).endswith(".csv"):
        rows = list(csv.DictReader(io.StringIO(text)))
        if not rows:
            raise ValueError(f"run table {path}: no rows")
        wcols = [c for c in rows[0] if c.startswith("weight/")]
        lcols = [c for c in rows[0] if c.startswith("loss/")]
        if not wcols or not lcols:
            raise ValueError(f"run table {path}: needs weight/<domain> and loss/<domain> columns, got {list(rows[0])}")
        get = lambda cols: [[float(r[c]) for c in cols] for r in rows]
        return make_table(get(wcols), get(lcols), [c[7:] for c in wcols], [c[5:] for c in lcols])
    try:
        obj = json.loads(text)
        return make_table(obj["mixtures"], obj["losses"], obj.get("domains"), obj.get("eval_domains"),
                          obj.get("sizes"))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"run table {path}: not a run table JSON ({type(e).__name__}: {e})") from None


def target_weights(table: RunTable, target: str) -> np.ndarray:
    """[M] weights of the loss columns in the target: ``uniform``, ``natural``, ``all``,
    ``eval_only``, ``domain:NAME`` or ``domains:A,B,...`` (the uniform mean over the named loss
    columns; module doc)."""
    cols = list(table.eval_domains)
    w = np.zeros(len(cols))
    trained = [c for c in cols if c in table.domains]
    if target in ("uniform", "natural"):
        missing = [d for d in table.domains if d not in cols]
        if missing:
            raise ValueError(f"target {target!r}: no loss column for training domains {missing}")
        sizes = np.ones(len(table.domains)) if target == "uniform" else table.sizes
        if sizes is None:
            raise ValueError("target 'natural' needs the table's sizes (tokens per training domain)")
        for d, s in zip(table.domains, sizes):
            w[cols.index(d)] = s
    elif target == "all":
        w[:] = 1.0
    elif target == "eval_only":
        w = np.array([0.0 if c in trained else 1.0 for c in cols])
        if not w.any():
            raise ValueError("target 'eval_only': every loss column is a training domain")
    elif target.startswith("domain:") and target[7:] in cols:
        w[cols.index(target[7:])] = 1.0
    elif target.startswith("domains:") and target[8:] and all(n in cols for n in target[8:].split(",")):
        for n in target[8:].split(","):
            w[cols.index(n)] = 1.0
    else:
        raise ValueError(f"target {target!r}: expected uniform | natural | all | eval_only | domain:NAME | "
                         f"domains:NAME,NAME,... with names from {cols}")
    return w / w.sum()


def spearman(a, b) -> float:
    """Spearman's rank correlation of two [N] arrays (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def cross_validate(fit, mixtures_KD, y_K, folds: int = 5, seed: int = 0) -> dict:
    """RegMix's fit metrics from K-fold cross-validation of the target.

    Args:
      fit: ``train_idx [k] -> predict``, ``predict(mixtures [n, D]) -> [n]`` fitted on the
        ``train_idx`` runs only.
      mixtures_KD: [K, D] the runs' mixtures; y_K: [K] their observed target.
      folds: number of folds (at most K); seed: the fold assignment's seed.

    Returns:
      ``{"spearman", "pearson", "mse", "folds", "runs"}`` over the pooled out-of-fold predictions.
    """
    p, y = np.asarray(mixtures_KD, np.float64), np.asarray(y_K, np.float64)
    folds = min(int(folds), len(y))
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds and runs, got {folds}")
    fold_of = np.random.default_rng(seed).permutation(len(y)) % folds
    pred = np.empty(len(y))
    for f in range(folds):
        pred[fold_of == f] = fit(np.flatnonzero(fold_of != f))(p[fold_of == f])
    return {"spearman": spearman(pred, y), "pearson": float(np.corrcoef(pred, y)[0, 1]),
            "mse": float(np.mean((pred - y) ** 2)), "folds": folds, "runs": len(y)}


def fit_mixture(table: RunTable, method: str = "dml", target: str = "uniform", *, folds: int = 5, seed: int = 0,
                prior=None, num_candidates: int = 100_000, top_k: int = 128, lgbm_params: dict | None = None,
                cv: bool = True) -> MixtureFit:
    """Fits ``method`` on the table for ``target`` and predicts the best mixture.

    Args:
      table: a ``RunTable`` (K runs, D training domains, M loss columns).
      method: ``dml`` (per-domain laws, minimized over the simplex), ``regmix-linear`` or
        ``regmix-lgbm`` (regression of the target, the mean of the top-k of ``num_candidates``
        candidates from Dirichlet(prior)).
      target: see ``target_weights``.
      folds: cross-validation folds (``cv=False`` skips it: ``cv = {}``).
      seed: seed of the cross-validation split.
      prior: [D] RegMix's candidate prior (default: the table's sizes, else uniform).
      num_candidates: candidates of RegMix's simulation (100,000 in its notebook).
      top_k: the best candidates averaged (128 in its notebook).
      lgbm_params: overrides of ``regmix.LGBM_PARAMS``.
    """
    if method not in METHODS:
        raise ValueError(f"method {method!r}: expected one of {', '.join(METHODS)}")
    w_M = target_weights(table, target)
    p, y_K = table.mixtures, table.losses @ w_M
    cols = np.flatnonzero(w_M > 0)
    if method == "dml":
        def fit(idx):
            law = dml.fit_dml(p[idx], table.losses[idx][:, cols])
            return lambda x: dml.dml_predict(law, x) @ w_M[cols]
    else:
        def fit(idx):
            if method == "regmix-linear":
                return regmix.fit_linear(p[idx], y_K[idx])
            return regmix.fit_lgbm(p[idx], y_K[idx], params=lgbm_params, seed=seed)
    scores = cross_validate(fit, p, y_K, folds, seed) if cv else {}
    law = None
    if method == "dml":
        law = dml.fit_dml(p, table.losses[:, cols])
        weights = dml.dml_optimum(law, w_M[cols])
        predicted = float(dml.dml_predict(law, weights)[0] @ w_M[cols])
    else:
        prior_D = prior if prior is not None else (table.sizes if table.sizes is not None
                                                   else np.ones(p.shape[1]))
        model = fit(np.arange(len(y_K)))
        cand = regmix.regmix_candidates(prior_D, num_candidates, seed=seed)
        weights = regmix.regmix_optimum(model, cand, top_k)
        predicted = float(model(weights[None])[0])
    return MixtureFit(weights, predicted, scores, method, target, law)


def write_weights(path, result: MixtureFit, domains) -> dict:
    """Writes ``result`` as the weights JSON ``mixer.weights_from`` reads; returns what it wrote.

    ``{"weights": [D], "domains": [D names], "method", "target", "predicted", "cv"}``, local or gs://.
    """
    obj = {"weights": [float(x) for x in result.weights], "domains": list(domains), "method": result.method,
           "target": result.target, "predicted": result.predicted, "cv": result.cv}
    storage.write_text(path, json.dumps(obj, indent=1) + "\n")
    return obj


def fit_main(args) -> int:
    """``ado-jax fit-mixture`` (its arguments: ``table``, ``method``, ``target``, ``out``, ``folds``,
    ``seed``): fits, writes ``--out``, prints the JSON written; returns the exit code."""
    table = load_table(args.table)
    res = fit_mixture(table, args.method, args.target, folds=max(args.folds, 2), seed=args.seed, cv=args.folds > 0)
    print(json.dumps(write_weights(args.out, res, table.domains)))
    return 0
