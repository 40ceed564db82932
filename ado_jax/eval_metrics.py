"""The papers' aggregate metrics over per-domain held-out losses, and paired intervals.

Per-domain held-out loss (nats per token) is what every paper reports; they aggregate it
differently, and the aggregate decides which mixer "wins":

- ``eval_loss_mean``: the uniform average over the trained domains (each domain counts once);
- ``eval_ppl_mean``: the average of the per-domain perplexities ``exp(loss_d)`` over the trained
  domains — the metric of "Aioli: A Unified Optimization Framework for Language Model Data
  Mixing" (arXiv:2411.05735), which reports average test perplexity over the data groups;
- ``eval_loss_natural``: the average weighted by domain size (tokens) — what a validation set
  drawn like the training corpus measures, as the Pile validation loss of "Adaptive Data
  Optimization: Dynamic Sample Selection with Scaling Laws" (arXiv:2410.11820, Fig. 4);
- ``eval_loss_ood``: the uniform average over the *evaluation-only* domains (``data.eval_only_domains``),
  held out of training and of the mixer — the stand-in for the ADO paper's out-of-distribution
  validation sets (SlimPajama, FineWeb).

``paired_interval`` turns per-seed differences between two arms into a mean with a Student-t
95 % interval, the form in which ``ado-jax compare --against`` and the experiments report results;
``paired_median_ratio`` does the same for a ratio of medians of heavy-tailed, possibly censored
per-seed times (steps to a threshold; the synthetic-task experiments).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

# Two-sided 95 % Student-t quantiles t_{0.975, df} for df = 1..30 (beyond: the normal 1.96).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)
AGGREGATES = ("eval_loss_mean", "eval_ppl_mean", "eval_loss_natural", "eval_loss_ood")


def aggregate(loss_by_domain: Mapping[str, float], sizes: Mapping[str, float],
              eval_only: Sequence[str] = ()) -> dict:
    """The aggregate metrics of one evaluation.

    Args:
      loss_by_domain: ``{domain: held-out loss}`` over trained and evaluation-only domains.
      sizes: ``{domain: tokens}`` of the trained domains (the natural weights).
      eval_only: the evaluation-only domains (not trained on, not seen by the mixer).

    Returns:
      ``{"eval_loss_mean", "eval_ppl_mean", "eval_loss_natural"}`` over the trained domains, plus
      ``"eval_loss_ood"`` when ``eval_only`` is not empty (floats).

    Raises:
      ValueError: naming a trained or evaluation-only domain that has no loss.
    """
    trained = [d for d in loss_by_domain if d not in set(eval_only)]
    missing = [d for d in [*sizes, *eval_only] if d not in loss_by_domain]
    if missing:
        raise ValueError(f"no held-out loss for domain(s) {missing}; have {sorted(loss_by_domain)}")
    loss_D = np.array([loss_by_domain[d] for d in trained], np.float64)
    size_D = np.array([float(sizes.get(d, 0.0)) for d in trained], np.float64)
    natural_D = size_D / size_D.sum() if size_D.sum() > 0 else np.full(len(trained), 1.0 / len(trained))
    out = {"eval_loss_mean": float(loss_D.mean()), "eval_ppl_mean": float(np.exp(loss_D).mean()),
           "eval_loss_natural": float(natural_D @ loss_D)}
    if eval_only:
        out["eval_loss_ood"] = float(np.mean([loss_by_domain[d] for d in eval_only]))
    return out


def paired_interval(diffs: Sequence[float]) -> tuple[float, float, int]:
    """Mean of paired differences ``diffs: [n]`` (e.g. per seed, arm A minus arm B) and the
    half-width of its two-sided 95 % Student-t interval; returns ``(mean, half_width, n)``.

    ``half_width`` is NaN for fewer than two finite differences (no spread to estimate).
    """
    x = np.asarray([d for d in diffs if d is not None and math.isfinite(d)], np.float64)
    n = x.size
    if n == 0:
        return math.nan, math.nan, 0
    if n == 1:
        return float(x[0]), math.nan, 1
    t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
    return float(x.mean()), float(t * x.std(ddof=1) / math.sqrt(n)), n


def paired_median_ratio(a_S, b_S, num_boot: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """``median(a) / median(b)`` of paired per-seed times ``a_S, b_S: [S]`` (e.g. steps to a
    threshold, seed ``i`` of both arms sharing its init and data keys) and its paired bootstrap
    95 % interval: each resample draws seed indices once for both arms.

    NaN or inf in either arm means "never reached" (censored: slower than the run) and counts as
    inf, so the ratio or a bound can be inf (or 0); medians and percentiles are order statistics
    (no interpolation), which keeps that well defined. ``inf / inf`` (both censored) counts as inf,
    no speedup. Returns ``(ratio, lo, hi)``.
    """
    a = np.where(np.isfinite(a_S), a_S, np.inf).astype(np.float64)
    b = np.where(np.isfinite(b_S), b_S, np.inf).astype(np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two equal-length non-empty [S] arrays, got shapes {a.shape} and {b.shape}")
    med = lambda x, axis=None: np.quantile(x, 0.5, axis=axis, method="lower")
    idx_RS = np.random.default_rng(seed).integers(0, a.size, (num_boot, a.size))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = med(a) / med(b)
        r_R = med(a[idx_RS], axis=1) / med(b[idx_RS], axis=1)
    ratio = np.inf if np.isnan(ratio) else float(ratio)
    r_R = np.where(np.isnan(r_R), np.inf, r_R)
    return ratio, float(np.quantile(r_R, 0.025, method="lower")), float(np.quantile(r_R, 0.975, method="higher"))
