"""Shared helpers for the data-diversity figure scripts: run sweeps, save JSON + PNG atomically.

The figures are those of "Lowering Data Diversity can Accelerate Training: Case Studies in Synthetic Tasks".
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np

from ado_jax.eval_metrics import paired_median_ratio
from ado_jax.synthetic.train import steps_to_threshold

OUT = os.environ.get("ADO_DIVERSITY_OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# Figures go beside the docs that show them (the docs site only serves files under docs/).
FIG_OUT = (os.environ.get("ADO_DIVERSITY_OUT")
           or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "figures", "diversity"))


def _atomic_write(path: str, write) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    os.close(fd)
    write(tmp)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are shared results
    os.replace(tmp, path)


def summarize(steps, curves: dict, metric: str, threshold: float, below: bool, baseline: str | None = None) -> dict:
    """Per label: mean/std curve over seeds; steps-to-threshold per seed, its median and range,
    #seeds reached, and (given ``baseline``, a label) the paired ratio of medians to the baseline with
    its 95 % interval (``ado_jax.eval_metrics.paired_median_ratio``)."""
    out = {}
    hits = {label: steps_to_threshold(np.asarray(steps), np.asarray(c), threshold, below)
            for label, c in curves.items()}
    for label, curve_SE in curves.items():
        hit_S = hits[label]
        reached = np.isfinite(hit_S)
        full = np.where(reached, hit_S, np.inf)
        out[label] = {"mean": np.mean(curve_SE, 0).tolist(), "std": np.std(curve_SE, 0).tolist(),
                      "per_seed": np.asarray(curve_SE).tolist(),
                      "steps_to_threshold": hit_S.tolist(),
                      "steps_to_threshold_mean": float(np.nanmean(hit_S)) if reached.any() else None,
                      "steps_to_threshold_median": float(np.quantile(full, 0.5, method="lower")),
                      "steps_to_threshold_range": [float(full.min()), float(full.max())],
                      "final_mean": float(np.mean(np.asarray(curve_SE)[:, -1])),
                      "reached": int(reached.sum())}
        if baseline is not None:
            out[label]["ratio_to_baseline"] = paired_median_ratio(hit_S, hits[baseline])
    return out


def save(name: str, title: str, steps, curves: dict, metric: str, threshold: float,
         below: bool = True, logy: bool = False, hlines: dict | None = None, meta: dict | None = None,
         baseline: str | None = None):
    """Writes ``results/<name>.json`` and ``docs/figures/diversity/<name>.png`` (median and the
    25–75 % band over seeds: the per-seed spread of these runs is heavy-tailed).

    ``curves``: label -> ``[S, E]`` per-seed curves (S seeds, E evals at ``steps``); ``baseline``: the
    label the paired steps-to-threshold ratios are taken against (``summarize``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(steps, curves, metric, threshold, below, baseline)
    doc = {"name": name, "title": title, "metric": metric, "threshold": threshold, "baseline": baseline,
           "below": below, "steps": np.asarray(steps).tolist(), "curves": summary,
           "hlines": hlines or {}, "meta": meta or {}, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _atomic_write(os.path.join(OUT, name + ".json"), lambda p: open(p, "w").write(json.dumps(doc)))

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, s in summary.items():
        lo, med, hi = np.quantile(np.asarray(s["per_seed"]), [0.25, 0.5, 0.75], axis=0)
        ax.plot(steps, med, label=label)
        ax.fill_between(steps, lo, hi, alpha=0.2)
    for label, y in (hlines or {}).items():
        ax.axhline(y, ls="--", color="gray", lw=1)
        ax.text(steps[-1], y, label, ha="right", va="bottom", fontsize=7, color="gray")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{title}\n(median, 25-75 % band over {len(next(iter(summary.values()))['per_seed'])} seeds)",
                 fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(FIG_OUT, exist_ok=True)
    _atomic_write(os.path.join(FIG_OUT, name + ".png"), lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    for label, s in summary.items():
        r = s.get("ratio_to_baseline")
        print(f"{name:28s} {label:24s} median steps-to-{metric}{'<=' if below else '>='}{threshold}: "
              f"{s['steps_to_threshold_median']} range {s['steps_to_threshold_range']} ({s['reached']}/"
              f"{len(s['per_seed'])} seeds)" + (f" ratio {r[0]:.2f} [{r[1]:.2f}, {r[2]:.2f}]" if r else ""),
              flush=True)
    return summary


def done(name: str, settings: dict) -> bool:
    """Whether ``results/<name>.json`` already holds a run with exactly these ``settings`` (saved as
    ``meta["settings"]``), so that rerunning a figure script after a crash or Ctrl-C skips the
    finished figures."""
    path = os.path.join(OUT, name + ".json")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        # through JSON so that tuples compare equal to the lists they are saved as
        same = json.load(f).get("meta", {}).get("settings") == json.loads(json.dumps(settings))
    if same:
        print(f"{name}: done with these settings, skipped (delete {path} to rerun)", flush=True)
    return same
