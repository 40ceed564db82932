"""Mixers compared on the built-in corpus: the `demo` model, same token budget, one run each.

    python experiments/mixing/run.py [--seeds 0] [--steps 200]

Trains natural, balanced, ADO, Aioli, DoReMi (reference = the balanced run's final per-domain
held-out losses) and ODM with `ado-jax train --config demo`, then writes
experiments/mixing/results.json and the markdown table of docs/results.md's numbers.
Round-based mixers get rounds that fit the short budget (see ROUND_SETTINGS).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# 200 steps cannot hold Aioli's 20 rounds of LearnParams over 8 domains; 2 rounds of 100 steps
# with one sweep and delta 0.32 give 4-step segments (paper: T=20, k=4, delta=0.128).
ROUND_SETTINGS = {"aioli": ["mixer.rounds=2", "mixer.sweeps=1", "mixer.delta=0.32"]}
MIXERS = ["natural", "balanced", "ado", "aioli", "doremi", "odm"]


def final_eval(run_dir: str) -> dict:
    rows = [json.loads(ln) for ln in open(os.path.join(run_dir, "metrics.jsonl"))]
    return [r for r in rows if "eval_loss" in r][-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="train.seed values (one run each)")
    p.add_argument("--steps", type=int, default=200, help="steps per run (decay_steps follows)")
    p.add_argument("--mixers", nargs="+", default=MIXERS, choices=MIXERS,
                   help="mixers to (re)run; the others' results already in results.json are kept")
    p.add_argument("--runs", default=os.path.join(HERE, "runs"), help="where run directories go")
    args = p.parse_args()
    results = {}
    for seed in args.seeds:
        for mixer in args.mixers:
            run_dir = os.path.join(args.runs, f"{mixer}_s{seed}")
            sets = [f"train.seed={seed}", f"train.steps={args.steps}", f"train.decay_steps={args.steps}",
                    "train.progress=false", *ROUND_SETTINGS.get(mixer, [])]
            if mixer == "doremi":
                ref = final_eval(os.path.join(args.runs, f"balanced_s{seed}"))["eval_loss"]
                sets.append("mixer.reference_losses=" + json.dumps(list(ref.values())))
            cmd = [sys.executable, "-m", "ado_jax.cli", "train", "--config", "demo", "--mixer", mixer,
                   "--run-dir", run_dir] + sum([["--set", s] for s in sets], [])
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
            results[f"{mixer}_s{seed}"] = {"mixer": mixer, "seed": seed, **final_eval(run_dir)}
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump({"steps": args.steps, "tokens_per_run": args.steps * 32 * 128, "runs": results}, f, indent=1)
    names = list(next(iter(results.values()))["eval_loss"])
    print("| mixer | seed | " + " | ".join(names) + " | mean loss | ppl(mean) |")
    print("|---" * (len(names) + 4) + "|")
    for r in results.values():
        cells = " | ".join(f"{r['eval_loss'][n]:.3f}" for n in names)
        print(f"| {r['mixer']} | {r['seed']} | {cells} | {r['eval_loss_mean']:.3f} | "
              f"{math.exp(r['eval_loss_mean']):.2f} |")


if __name__ == "__main__":
    main()
