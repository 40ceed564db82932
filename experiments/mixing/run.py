"""Mixers compared on the built-in corpus: the `demo` model, same token budget, one run each.

    python experiments/mixing/run.py [--seeds 0 1 2] [--mixers aioli ...] [--steps 200]

Trains natural, balanced, ADO, Aioli, DoReMi (reference = the same seed's balanced run's final
per-domain held-out losses; η = 1 as in Xie et al., and η = 0.01 as tuned in the Aioli paper,
arXiv:2411.05735) and ODM with `ado-jax train --config demo`, merges the runs into
experiments/mixing/results.json (runs already there at the same budget are kept, so seeds and
mixers can be run a few at a time; the file is rewritten atomically after every run), prints two
markdown tables — one row per run, and mean ± sample std over seeds per mixer — and draws
docs/figures/mixing_vs_balanced.png. Round-based mixers get rounds that fit the short budget
(ROUND_SETTINGS).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FIGURE = os.path.join(HERE, "..", "..", "docs", "figures", "mixing_vs_balanced.png")
# 200 steps cannot hold Aioli's 20 rounds of LearnParams over 8 domains; 2 rounds of 100 steps
# with one sweep and delta 0.32 give 4-step segments (paper: T=20, k=4, delta=0.128).
ROUND_SETTINGS = {"aioli": ["mixer.rounds=2", "mixer.sweeps=1", "mixer.delta=0.32"]}
# Labels of the runs, in table order; a variant is (CLI mixer, extra settings).
MIXERS = ["natural", "balanced", "ado", "aioli", "doremi", "doremi_eta0.01", "odm"]
VARIANTS = {"doremi_eta0.01": ("doremi", ["mixer.eta=0.01"])}  # the Aioli paper's tuned η


def final_eval(run_dir: str) -> dict:
    rows = [json.loads(ln) for ln in open(os.path.join(run_dir, "metrics.jsonl"))]
    return [r for r in rows if "eval_loss" in r][-1]


def corpus_fingerprint(corpus_dir: str = "data/corpus") -> dict:
    """sha256 of the corpus manifest, and per domain its document/token counts and content hash
    (``sha256``, the same on every machine that builds the same documents; `ado-jax corpus build
    --check --manifest` compares a corpus with it): results are comparable only on one corpus."""
    import hashlib

    raw = open(os.path.join(corpus_dir, "manifest.json"), "rb").read()
    counts = lambda d: {split: {k: v[k] for k in ("n_docs", "tokens")} for split, v in d["splits"].items()}
    return {"manifest_sha256": hashlib.sha256(raw).hexdigest(),
            "domains": {d["name"]: {"sha256": d.get("sha256"), **counts(d)} for d in json.loads(raw)["domains"]}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="train.seed values (one run each)")
    p.add_argument("--steps", type=int, default=200, help="steps per run (decay_steps follows)")
    p.add_argument("--mixers", nargs="+", default=MIXERS, choices=MIXERS, metavar="MIXER",
                   help="mixers to (re)run; the others' results already in results.json are kept")
    p.add_argument("--runs", default=os.path.join(HERE, "runs"), help="where run directories go")
    args = p.parse_args()
    out = os.path.join(HERE, "results.json")
    results = {}
    if os.path.exists(out):
        prev = json.load(open(out))
        if prev["steps"] == args.steps:  # runs at another budget are not comparable: start over
            results = prev["runs"]
    for seed in args.seeds:
        for mixer in args.mixers:
            run_dir = os.path.join(args.runs, f"{mixer}_s{seed}")
            cli_mixer, extra = VARIANTS.get(mixer, (mixer, []))
            sets = [f"train.seed={seed}", f"train.steps={args.steps}", f"train.decay_steps={args.steps}",
                    "train.progress=false", *ROUND_SETTINGS.get(mixer, []), *extra]
            if cli_mixer == "doremi":
                bal = os.path.join(args.runs, f"balanced_s{seed}")  # its run, or its recorded result
                ref = (final_eval(bal) if os.path.exists(bal) else results[f"balanced_s{seed}"])["eval_loss"]
                sets.append("mixer.reference_losses=" + json.dumps(list(ref.values())))
            cmd = [sys.executable, "-m", "ado_jax.cli", "train", "--config", "demo", "--mixer", cli_mixer,
                   "--run-dir", run_dir] + sum([["--set", s] for s in sets], [])
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
            results[f"{mixer}_s{seed}"] = {"mixer": mixer, "seed": seed, **final_eval(run_dir)}
            with open(out + ".tmp", "w") as f:  # after every run, atomically: a crash keeps the rest
                json.dump({"steps": args.steps, "tokens_per_run": args.steps * 32 * 128,
                           "corpus": corpus_fingerprint(), "runs": results}, f, indent=1)
            os.replace(out + ".tmp", out)
    print_tables(results)
    print_paired(results)
    plot_vs_balanced(results, FIGURE)


def print_tables(results: dict) -> None:
    """Print the per-run table and the per-mixer mean ± std (over seeds) table, in markdown."""
    names = list(next(iter(results.values()))["eval_loss"])
    print("| mixer | seed | " + " | ".join(names) + " | mean loss | ppl(mean) |")
    print("|---" * (len(names) + 4) + "|")
    for r in sorted(results.values(), key=lambda r: (MIXERS.index(r["mixer"]), r["seed"])):
        cells = " | ".join(f"{r['eval_loss'][n]:.3f}" for n in names)
        print(f"| {r['mixer']} | {r['seed']} | {cells} | {r['eval_loss_mean']:.3f} | "
              f"{math.exp(r['eval_loss_mean']):.2f} |")
    print("\n| mixer | seeds | " + " | ".join(names) + " | mean loss ± std | ppl |")
    print("|---" * (len(names) + 4) + "|")
    for mixer in MIXERS:
        rs = [r for r in results.values() if r["mixer"] == mixer]
        if not rs:
            continue
        means = [r["eval_loss_mean"] for r in rs]
        spread = f" ± {statistics.stdev(means):.3f}" if len(rs) > 1 else ""
        cells = " | ".join(f"{statistics.mean(r['eval_loss'][n] for r in rs):.3f}" for n in names)
        print(f"| {mixer} | {len(rs)} | {cells} | {statistics.mean(means):.3f}{spread} | "
              f"{math.exp(statistics.mean(means)):.2f} |")


def print_paired(results: dict) -> None:
    """Print each mixer's mean held-out loss minus the same seed's balanced run's, in markdown."""
    seeds = sorted(r["seed"] for r in results.values() if r["mixer"] == "balanced")
    print("\n| mixer | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |")
    print("|---" * (len(seeds) + 2) + "|")
    for mixer in MIXERS:
        if mixer == "balanced" or not all(f"{mixer}_s{s}" in results for s in seeds):
            continue
        diffs = [results[f"{mixer}_s{s}"]["eval_loss_mean"] - results[f"balanced_s{s}"]["eval_loss_mean"]
                 for s in seeds]
        print(f"| {mixer} | " + " | ".join(f"{x:+.3f}" for x in diffs) + f" | {statistics.mean(diffs):+.3f} |")


def plot_vs_balanced(results: dict, path: str) -> None:
    """Bar chart: each mixer's held-out loss minus the same seed's balanced loss, per domain and
    on the mean; a bar is the mean over seeds, its whisker the min..max seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(next(iter(results.values()))["eval_loss"])
    cols = names + ["mean"]
    seeds = sorted(r["seed"] for r in results.values() if r["mixer"] == "balanced")
    others = [m for m in MIXERS if m != "balanced" and all(f"{m}_s{s}" in results for s in seeds)]

    def row(r):
        return np.array([r["eval_loss"][n] for n in names] + [r["eval_loss_mean"]])

    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(others)
    x = np.arange(len(cols))
    for i, m in enumerate(others):
        diff_SC = np.stack([row(results[f"{m}_s{s}"]) - row(results[f"balanced_s{s}"]) for s in seeds])
        mid_C = diff_SC.mean(0)
        ax.bar(x + (i - (len(others) - 1) / 2) * width, mid_C, width, label=m,
               yerr=[mid_C - diff_SC.min(0), diff_SC.max(0) - mid_C], capsize=2)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, cols, rotation=20)
    ax.set_ylabel("held-out loss − balanced (nats)")
    ax.set_title(f"Mixers vs balanced, demo model on the built-in corpus, {len(seeds)} seed(s): "
                 "bar = mean, whisker = min..max seed; below 0 is better", fontsize=9)
    ax.legend(fontsize=8, ncol=len(others))
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    os.replace(path + ".tmp.png", path)
    plt.close(fig)
    print("wrote", path)


if __name__ == "__main__":
    main()
