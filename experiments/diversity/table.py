"""The claims table and the steps-to-threshold table (markdown) from experiments/diversity/results/*.json.

Claims table: for each claim of "Lowering Data Diversity can Accelerate Training: Case Studies in
Synthetic Tasks" that we ran, the intervention row with the smallest median steps-to-threshold
ratio to its baseline (paired over seeds, 95 % bootstrap interval;
ado_jax.eval_metrics.paired_median_ratio), and a
verdict read off the interval: *reproduced* when the whole interval is below 1 (faster),
*slower* when it is above 1, *no difference shown* otherwise. Picking the best of several rows
favours the intervention (no multiple-comparison correction); every row is in the second table.
Curriculum claims ("best of both worlds", Fig. 7) also need the final metric to be no worse than
the baseline's (paired Student-t interval of the difference at the last evaluation).
Rows with fewer than 8 seeds are flagged.
Usage: python experiments/diversity/table.py > table.md   (seconds; reads the saved JSON only)
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from ado_jax.eval_metrics import paired_interval

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# (figure file, claim with the paper's figure, our setting, why the setting may not be comparable,
#  row labels that are the claimed intervention (None: every non-baseline row))
CLAIMS = [
    ("fig4_parity_subsample", "Subsampling the data (fraction ρ, 1/ρ epochs) speeds up sparse parity (Fig. 4)",
     "paper's exact setup, 20k of 50k steps", "", None),
    ("fig5_parity_zipf", "Zipf over batches with a medium α speeds up sparse parity (Fig. 5)",
     "paper's exact setup", "", None),
    ("fig2_parity_grad_bias", "Gradient bias with a medium γ speeds up training (Fig. 2)",
     "sparse parity, SGD", "the paper's Fig. 2 panels that show a gain use Adam", None),
    ("fig10_parity_staircase", "A staircase target χ_k + ε Σ χ_j speeds up learning χ_k (Fig. 10)",
     "paper's exact setup, fresh samples", "", None),
    ("fig7_parity_curriculum", "A ρ curriculum is fast early and optimal late (Fig. 7)",
     "paper's setup; App. A schedule and switches in epochs of the subset", "", "curriculum"),
    ("fig1_4_icl_task_count", "Fewer ICL tasks (k) lower the test loss sooner (Fig. 1, 4)",
     "d=10, 21 points, 0.1 M-param TaskGPT, Adam 1e-4, 3k steps",
     "paper: d=20, 41 points, 22.4 M params, lr 1e-4", None),
    ("fig2_icl_grad_bias", "Gradient bias with a medium γ speeds up ICL (Fig. 2)",
     "d=5, 10 points, 25 k params, Adam 1e-3, 3k steps", "far smaller than the paper's ICL", None),
    ("fig3_icl_pcgrad", "PCGrad at 1/4 batch speeds up ICL per step (Fig. 3)",
     "d=5, 10 points, 25 k params, B 16 vs 64", "far smaller than the paper's ICL", ["PCGrad B=16"]),
    ("fig7_icl_curriculum", "A task-count curriculum is fast early and optimal late on ICL (Fig. 7)",
     "d=5, App. A schedule and doubling per views/task", "far smaller than the paper's ICL", "curriculum"),
    ("fig6_icl_cov_bias", "A covariance bias β speeds up ICL (Fig. 6)", "d=5 CPU scale",
     "far smaller than the paper's ICL", None),
    ("fig5_icl_zipf", "Zipf over ICL tasks with a medium α speeds up ICL (Fig. 5)", "d=5, pool of 1,024 tasks",
     "far smaller than the paper's ICL", None),
    ("fig4_facts_truncate", "Fewer subjects speed up early fact accuracy (Fig. 4)",
     "100 subjects, the paper's depth (6) and lr (5e-5), 64 wide, 3k steps", "paper: 192 wide", None),
    ("fig5_facts_zipf", "Zipf over subjects with a medium α speeds up facts (Fig. 5)",
     "100 subjects, 2 layers x 64, lr 3e-4, 2k steps", "paper: 6 layers x 192, lr 5e-5", None),
    ("fig7_facts_curriculum", "A subject curriculum is fast early and optimal late on facts (Fig. 7)",
     "as above; App. A switch and switches in views per pair", "paper: 6 layers x 192, lr 5e-5", "curriculum"),
    ("fig2_facts_grad_bias", "Gradient bias with a medium γ speeds up facts (Fig. 2)", "as above, Adam, n=25",
     "paper: 6 layers x 192, lr 5e-5", None),
    ("fig3_facts_pcgrad", "PCGrad at 1/4 batch speeds up facts (Fig. 3 shows ICL only)", "as above, B 16 vs 64",
     "the paper runs PCGrad on ICL only", ["PCGrad B=16"]),
]
EXTRA = {"fig4_facts_truncate": 0.2, "fig5_facts_zipf": 0.2, "fig7_facts_curriculum": 0.2}
CURRICULUM_WORDS = ("App. A", " for ", " after ", "x2")


def fmt_steps(x: float) -> str:
    return "never" if not np.isfinite(x) else f"{x:.0f}"


def fmt_ratio(r) -> str:
    f = lambda v: "∞" if not np.isfinite(v) else f"{v:.2f}"
    return f"{f(r[0])} [{f(r[1])}, {f(r[2])}]"


def final_difference(a_SE, b_SE, below: bool):
    """Paired Student-t 95 % interval of mean(final a - final b) over seeds, sign flipped so that
    > 0 means a is better; ``(mean, lo, hi)``."""
    d_S = (np.asarray(a_SE)[:, -1] - np.asarray(b_SE)[:, -1]) * (-1 if below else 1)
    mean, half, _ = paired_interval(d_S)
    return mean, mean - half, mean + half


def verdict(ratio) -> str:
    if ratio[2] < 1:
        return "reproduced"
    if ratio[1] > 1:
        return "not reproduced (slower)"
    return "not reproduced (no difference shown)"


def load(name):
    path = os.path.join(HERE, name + ".json")
    return json.load(open(path)) if os.path.exists(path) else None


def claims_table() -> list[str]:
    out = ["| claim (paper 000, figure) | our setting | best row: median steps (range) | ratio to baseline "
           "[95 % CI] | seeds | verdict |", "|---|---|---|---|---|---|"]
    for name, claim, setting, caveat, which in CLAIMS:
        doc = load(name)
        if doc is None or not doc.get("baseline"):
            out.append(f"| {claim} | {setting} | not run at ≥ 8 seeds | | | — |")
            continue
        base = doc["baseline"]
        curves = doc["curves"]
        if which == "curriculum":
            labels = [k for k in curves if k != base and any(w in k for w in CURRICULUM_WORDS)]
        else:
            labels = [k for k in curves if k != base and (which is None or k in which)]
        best = min(labels, key=lambda k: (curves[k]["ratio_to_baseline"][0], curves[k]["ratio_to_baseline"][2]))
        c = curves[best]
        seeds = len(c["per_seed"])
        v = verdict(c["ratio_to_baseline"])
        if which == "curriculum":
            d = final_difference(c["per_seed"], curves[base]["per_seed"], doc["below"])
            worse = d[2] < 0
            v += f"; final {doc['metric']} Δ {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]" + (" (worse)" if worse else "")
            if worse and v.startswith("reproduced"):
                v = "not reproduced (not optimal late)" + v[len("reproduced"):]
        if caveat:
            v += f"; not comparable in scale: {caveat}"
        lo, hi = c["steps_to_threshold_range"]
        flag = "" if seeds >= 8 else " (< 8)"
        out.append(f"| {claim} | {setting} | {best}: {fmt_steps(c['steps_to_threshold_median'])} "
                   f"({fmt_steps(lo)}–{fmt_steps(hi)}) | {fmt_ratio(c['ratio_to_baseline'])} | {seeds}{flag} | {v} |")
    return out


def rows_table() -> list[str]:
    from common import summarize

    out = ["| figure | metric, threshold | run | median steps (range) | ratio to baseline [95 % CI] | "
           "reached | final (mean) |", "|---|---|---|---|---|---|---|"]
    for path in sorted(glob.glob(os.path.join(HERE, "*.json"))):
        doc = json.load(open(path))
        if doc["metric"] == "grad_cosine":  # a diagnostic (Fig. 8), not a speed metric
            continue
        for th in [doc["threshold"]] + ([EXTRA[doc["name"]]] if doc["name"] in EXTRA else []):
            op = "<=" if doc["below"] else ">="
            curves = {k: np.asarray(c["per_seed"]) for k, c in doc["curves"].items()}
            summ = summarize(doc["steps"], curves, doc["metric"], th, doc["below"], doc.get("baseline"))
            for label, c in summ.items():
                r = c.get("ratio_to_baseline")
                lo, hi = c["steps_to_threshold_range"]
                out.append(f"| {doc['name']} | {doc['metric']} {op} {th} | {label} | "
                           f"{fmt_steps(c['steps_to_threshold_median'])} ({fmt_steps(lo)}–{fmt_steps(hi)}) | "
                           f"{fmt_ratio(r) if r else '—'} | {c['reached']}/{len(c['per_seed'])} | "
                           f"{c['final_mean']:.3f} |")
    return out


def main():
    print("\n".join(claims_table()))
    print()
    print("\n".join(rows_table()))


if __name__ == "__main__":
    main()
