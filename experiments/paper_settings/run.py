"""Both papers' hyperparameters on real text, with two domains held out as the out-of-distribution target.

    python experiments/paper_settings/run.py [--seeds 0 1 2] [--arms ado aioli ...] [--steps 2500]

Setting (``config.json`` beside this file): the built-in corpus, its 8 domains split *before any
run* into 3 training groups, as in the Aioli paper's settings of 2-7 groups — ``tech`` (code +
manpages), ``reference`` (computing + dictionary), ``long`` (legal + scripture) — and 2
evaluation-only domains (``python_docs``, ``fortunes``), never trained on and never shown to the
mixer: the stand-in for the out-of-distribution validation sets (SlimPajama, FineWeb) of the ADO
paper. A 0.21 M-parameter Llama (d_model 64, 4 layers, byte tokens) trains 2,500 steps x 16 x 64
tokens per arm (2.6 M tokens), so that

- Aioli runs the paper's schedule: T = 20 rounds, k = 4 sweeps, delta = 0.288 (its value for
  3 groups), eps = 0.75, eta = 0.2 ("Aioli: A Unified Optimization Framework for Language Model
  Data Mixing", arXiv:2411.05735);
- ADO refits 20 times (first fit at step 250, then every 115 steps; history from step 100, every
  5th step), otherwise the paper's defaults ("Adaptive Data Optimization: Dynamic Sample
  Selection with Scaling Laws", arXiv:2410.11820), with the natural prior and, as an ablation,
  the uniform one.

Arms: stratified (balanced), natural, ADO, ADO with uniform prior, Aioli; seeds 0-2 (model
initialization and data draws; a seed is shared by every arm, so arms are paired by seed).
Nothing is tuned: the settings above were fixed before the first run, and the evaluation-only
domains were chosen a priori as the two domains whose kind of text is not a training group.
Scores, at the last evaluation: per-domain held-out loss, the uniform mean and the average
per-domain perplexity over the 3 groups (Aioli's metric), the natural-weighted mean (ADO's
Pile-validation metric) and the mean over the 2 evaluation-only domains (ADO's OOD claim).

Results merge into ``results.json`` (rewritten atomically after every run; finished runs are
skipped, so a rerun resumes); tables go to stdout, figures to ``docs/figures/paper_settings_*.png``.
Time: ~5-6 min per run on 2 shared CPU cores (about 9 k tokens/s); the 12 runs of stratified,
natural, ADO and Aioli behind docs/results.md took 60 min. ``ado_uniform`` is an optional arm
(``--arms ado_uniform``), not run there.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
FIGURES = os.path.join(ROOT, "docs", "figures")
ADO = ["mixer.fit_start=250", "mixer.fit_every=115", "mixer.skip_first=100", "mixer.subsample_every=5",
       "mixer.history_len=128"]
# label -> (mixer, settings); order = table order
ARMS = {
    "stratified": ("balanced", []),
    "natural": ("natural", []),
    "ado": ("ado", ADO),
    "ado_uniform": ("ado", [*ADO, "mixer.prior=uniform"]),
    "aioli": ("aioli", ["mixer.rounds=20", "mixer.sweeps=4", "mixer.delta=0.288"]),
}
AGGREGATES = ("eval_loss_mean", "eval_ppl_mean", "eval_loss_natural", "eval_loss_ood")


def final_eval(run_dir: str) -> dict | None:
    """The last evaluation record of a finished run, or None."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    rows = [json.loads(ln) for ln in open(path) if ln.strip()]
    evals = [r for r in rows if "eval_loss" in r]
    return evals[-1] if evals else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="train.seed values")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), metavar="ARM")
    p.add_argument("--steps", type=int, default=2500, help="steps per run (the schedules above assume 2500)")
    p.add_argument("--runs", default=os.path.join(HERE, "runs"), help="where run directories go")
    args = p.parse_args()
    out = os.path.join(HERE, "results.json")
    results = json.load(open(out))["runs"] if os.path.exists(out) else {}
    for seed in args.seeds:
        for arm in args.arms:
            key, run_dir = f"{arm}_s{seed}", os.path.join(args.runs, f"{arm}_s{seed}")
            done = results.get(key)
            if done and done["step"] == args.steps:
                continue
            mixer, sets = ARMS[arm]
            sets = [f"train.seed={seed}", f"train.steps={args.steps}", *sets]
            cmd = [sys.executable, "-m", "ado_jax.cli", "train", "--config", os.path.join(HERE, "config.json"),
                   "--mixer", mixer, "--run-dir", run_dir] + sum([["--set", s] for s in sets], [])
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True, cwd=ROOT)
            results[key] = {"arm": arm, "seed": seed, **final_eval(run_dir)}
            with open(out + ".tmp", "w") as f:  # after every run, atomically
                json.dump({"steps": args.steps, "runs": results}, f, indent=1)
            os.replace(out + ".tmp", out)
    print(tables(results))
    plot_paired(results, os.path.join(FIGURES, "paper_settings_vs_stratified.png"))
    if os.path.exists(os.path.join(args.runs, "ado_s0")):
        plot_ado(args.runs, os.path.join(FIGURES, "paper_settings_ado.png"))


def paired(results: dict, arm: str, base: str, metric: str):
    """(mean, 95 % half-width, n) of ``arm - base`` on ``metric`` over the seeds both have."""
    from ado_jax.eval_metrics import paired_interval

    seeds = sorted(r["seed"] for r in results.values() if r["arm"] == base)
    diffs = [results[f"{arm}_s{s}"][metric] - results[f"{base}_s{s}"][metric] for s in seeds
             if f"{arm}_s{s}" in results]
    return paired_interval(diffs)


def tables(results: dict) -> str:
    """Markdown: mean per arm of each aggregate, then paired differences vs stratified and vs natural."""
    import statistics

    arms = [a for a in ARMS if any(r["arm"] == a for r in results.values())]
    lines = ["| arm | seeds | " + " | ".join(AGGREGATES) + " |", "|---|---|" + "---|" * len(AGGREGATES)]
    for a in arms:
        rs = [r for r in results.values() if r["arm"] == a]
        cells = [f"{statistics.mean(r[m] for r in rs):.4f}" for m in AGGREGATES]
        lines.append(f"| {a} | {len(rs)} | " + " | ".join(cells) + " |")
    for base in ("stratified", "natural"):
        lines += ["", f"Paired by seed, arm minus {base} (mean [95 % interval]):", "",
                  "| arm | " + " | ".join(AGGREGATES) + " |", "|---|" + "---|" * len(AGGREGATES)]
        for a in arms:
            if a == base:
                continue
            cells = []
            for m in AGGREGATES:
                mean, half, n = paired(results, a, base, m)
                cells.append(f"{mean:+.4f} [{mean - half:+.4f}, {mean + half:+.4f}]" if n > 1 else "–")
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_paired(results: dict, path: str) -> None:
    """Bars: each arm's paired difference vs stratified per aggregate, whiskers the 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a in ARMS if a != "stratified" and any(r["arm"] == a for r in results.values())]
    fig, axes = plt.subplots(1, len(AGGREGATES), figsize=(4 * len(AGGREGATES), 3.4))
    for ax, m in zip(axes, AGGREGATES):
        stats = [paired(results, a, "stratified", m) for a in arms]
        ax.bar(range(len(arms)), [s[0] for s in stats], yerr=[s[1] for s in stats], capsize=4,
               color=["tab:gray", "tab:blue", "tab:cyan", "tab:orange"][:len(arms)])
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(arms)), arms, rotation=30)
        ax.set_title(m, fontsize=10)
    axes[0].set_ylabel("minus stratified (lower is better)")
    fig.suptitle("Paired by seed: difference to stratified, 95 % interval")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print("wrote", path)


def _series(run_dir: str, key: str):
    rows = [json.loads(ln) for ln in open(os.path.join(run_dir, "metrics.jsonl")) if ln.strip()]
    rows = [r for r in rows if key in r]
    return [r["step"] for r in rows], rows


def plot_ado(runs: str, path: str) -> None:
    """ADO's mechanics in seed 0 (ADO paper Figs. 5, 9-11): mixture weights, credit h, per-group
    slope of the fitted law, and its training loss against natural's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    for ax, key, title in ((axes[0], "weights", "mixture weights"), (axes[1], "ado_h", "credit history h (EMA of pi)"),
                           (axes[2], "ado_slope", "fitted slope -dL/dn")):
        steps, rows = _series(os.path.join(runs, "ado_s0"), key)
        if not rows:
            ax.set_title(f"{title}: not logged")
            continue
        for name in rows[0][key]:
            ax.plot(steps, [r[key][name] for r in rows], label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
        if key == "ado_slope":
            ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    for arm, color in (("ado", "tab:blue"), ("natural", "tab:gray")):
        run = os.path.join(runs, f"{arm}_s0")
        if os.path.exists(run):
            steps, rows = _series(run, "loss")
            loss = np.convolve([r["loss"] for r in rows], np.ones(20) / 20, mode="valid")
            axes[3].plot(steps[19:], loss, color=color, label=arm)
    axes[3].set_title("training loss (20-step mean)")
    axes[3].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print("wrote", path)


if __name__ == "__main__":
    main()
