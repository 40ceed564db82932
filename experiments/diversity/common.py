"""Shared helpers for the data-diversity figure scripts: run sweeps, save JSON + PNG atomically.

The figures are those of "Lowering Data Diversity can Accelerate Training: Case Studies in Synthetic Tasks".
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np

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
    os.replace(tmp, path)


def summarize(steps, curves: dict, metric: str, threshold: float, below: bool) -> dict:
    """Per label: mean/std curve over seeds and steps-to-threshold (mean, std, #seeds reached)."""
    out = {}
    for label, curve_SE in curves.items():
        hit_S = steps_to_threshold(np.asarray(steps), np.asarray(curve_SE), threshold, below)
        out[label] = {"mean": np.mean(curve_SE, 0).tolist(), "std": np.std(curve_SE, 0).tolist(),
                      "per_seed": np.asarray(curve_SE).tolist(),
                      "steps_to_threshold": hit_S.tolist(),
                      "steps_to_threshold_mean": float(np.nanmean(hit_S)) if np.isfinite(hit_S).any() else None,
                      "reached": int(np.isfinite(hit_S).sum())}
    return out


def save(name: str, title: str, steps, curves: dict, metric: str, threshold: float,
         below: bool = True, logy: bool = False, hlines: dict | None = None, meta: dict | None = None):
    """Writes ``results/<name>.json`` and ``docs/figures/diversity/<name>.png`` (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(steps, curves, metric, threshold, below)
    doc = {"name": name, "title": title, "metric": metric, "threshold": threshold,
           "below": below, "steps": np.asarray(steps).tolist(), "curves": summary,
           "hlines": hlines or {}, "meta": meta or {}, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _atomic_write(os.path.join(OUT, name + ".json"), lambda p: open(p, "w").write(json.dumps(doc)))

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, s in summary.items():
        m, sd = np.asarray(s["mean"]), np.asarray(s["std"])
        ax.plot(steps, m, label=label)
        ax.fill_between(steps, m - sd, m + sd, alpha=0.2)
    for label, y in (hlines or {}).items():
        ax.axhline(y, ls="--", color="gray", lw=1)
        ax.text(steps[-1], y, label, ha="right", va="bottom", fontsize=7, color="gray")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(FIG_OUT, exist_ok=True)
    _atomic_write(os.path.join(FIG_OUT, name + ".png"), lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    for label, s in summary.items():
        print(f"{name:28s} {label:24s} steps-to-{metric}{'<=' if below else '>='}{threshold}: "
              f"{s['steps_to_threshold_mean']} ({s['reached']}/{len(s['per_seed'])} seeds)", flush=True)
    return summary
