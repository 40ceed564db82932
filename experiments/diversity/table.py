"""Steps-to-threshold table (markdown) from experiments/diversity/results/*.json.

For each figure and run: the first eval step where each seed's curve crosses the
threshold; we report the mean over the seeds that reached it and how many did.
Usage: python experiments/diversity/table.py > table.md
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from ado_jax.synthetic.train import steps_to_threshold

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# extra thresholds for early progress where the figure's default says little
EXTRA = {"fig4_facts_truncate": 0.2, "fig5_facts_zipf": 0.2, "fig7_facts_curriculum": 0.2}


def rows(doc, threshold):
    steps = np.asarray(doc["steps"])
    out = []
    for label, c in doc["curves"].items():
        hit = steps_to_threshold(steps, np.asarray(c["per_seed"]), threshold, doc["below"])
        n = int(np.isfinite(hit).sum())
        out.append((label, float(np.nanmean(hit)) if n else None, n, len(hit)))
    return out


def main():
    print("| figure | metric, threshold | run | steps to threshold (mean over seeds that reached it) | seeds reached |")
    print("|---|---|---|---|---|")
    for path in sorted(glob.glob(os.path.join(HERE, "*.json"))):
        doc = json.load(open(path))
        if doc["metric"] == "grad_cosine":  # a diagnostic (Fig. 8), not a speed metric
            continue
        for th in [doc["threshold"]] + ([EXTRA[doc["name"]]] if doc["name"] in EXTRA else []):
            op = "<=" if doc["below"] else ">="
            for label, mean, n, s in rows(doc, th):
                val = f"{mean:.0f}" if mean is not None else "never"
                print(f"| {doc['name']} | {doc['metric']} {op} {th} | {label} | {val} | {n}/{s} |")


if __name__ == "__main__":
    main()
