"""What ``train.harness_every`` costs: the same run trained with and without LM Evaluation
Harness tasks in the loop, as a share of the training time.

    python benchmarks/harness_cost.py [--config demo] [--steps 200] [--every 50] [--docs 400]

About 6 minutes on a quiet 2-core machine with the defaults. Needs the harness extra (lm-eval).
Two local tasks stand in for the ADO paper's (no network): a 4-way multiple-choice task and a
LAMBADA-style last-word task (the test fixtures' formats, ``tests/harness_tasks``), each of
``--docs`` documents cut from the built-in domains' text (``ado_jax.data.builtin``) (the multiple-choice one is
HellaSwag-shaped: a 150-300 byte context, four 20-60 byte endings; 4 x docs requests, the
last-word one docs requests). Both runs train the same steps from the same seed, one after the
other in one process; the harness run evaluates every ``--every`` steps and at the end. Reported:
the wall time of each run, the harness calls, seconds per call, requests per second, and the
share ``(with - without) / without``. For a pod: a call's cost grows with the tasks' requests
and the model, the training time with the steps between calls; scale by the two. Results:
benchmarks/results/harness_cost.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

from results_io import save_json

ROOT = pathlib.Path(__file__).resolve().parents[1]


def write_tasks(folder: pathlib.Path, text: str, docs: int, seed: int = 0) -> int:
    """Writes the two task YAMLs and their JSONL files into ``folder``; returns the number of
    loglikelihood requests one evaluation of both makes."""
    rng = np.random.default_rng(seed)

    def piece(lo, hi):
        start = int(rng.integers(0, len(text) - hi))
        return " ".join(text[start:start + int(rng.integers(lo, hi))].split())

    with open(folder / "cost_mc.jsonl", "w") as f:
        for _ in range(docs):
            f.write(json.dumps({"query": piece(150, 300), "choices": [piece(20, 60) for _ in range(4)],
                                "gold": int(rng.integers(0, 4))}) + "\n")
    with open(folder / "cost_lastword.jsonl", "w") as f:
        for _ in range(docs):
            f.write(json.dumps({"text": piece(200, 400) + " end"}) + "\n")
    for name, src in (("cost_mc", "tiny_mc"), ("cost_lastword", "tiny_lastword")):
        spec = (ROOT / "tests" / "harness_tasks" / f"{src}.yaml").read_text()
        spec = spec.replace(f"task: ado_{src}", f"task: {name}")
        spec = spec.replace(f"tests/harness_tasks/{src}.jsonl", str(folder / f"{name}.jsonl"))
        (folder / f"{name}.yaml").write_text(spec)
    return 5 * docs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="demo", help="preset to train (default: demo)")
    p.add_argument("--steps", type=int, default=200, help="steps of each run")
    p.add_argument("--every", type=int, default=50, help="train.harness_every of the harness run")
    p.add_argument("--docs", type=int, default=400, help="documents per task")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "harness_cost.json"))
    args = p.parse_args()

    from ado_jax import loop
    from ado_jax.config import load_config
    from ado_jax.data.builtin import builtin_domains

    base = load_config(args.config)
    base = dataclasses.replace(base, train=dataclasses.replace(
        base.train, steps=args.steps, decay_steps=args.steps, progress=False))
    raw = b"".join(builtin_domains(200_000).values()).decode("utf-8", "replace")
    text = "".join(c for c in raw if c.isprintable() or c == " ")
    with tempfile.TemporaryDirectory() as tmp:
        tasks = pathlib.Path(tmp) / "tasks"
        tasks.mkdir()
        requests = write_tasks(tasks, text, args.docs)
        harness = dataclasses.replace(base, train=dataclasses.replace(
            base.train, harness_every=args.every, harness_tasks=["cost_mc", "cost_lastword"],
            harness_include_path=str(tasks)))
        walls = {}
        for label, cfg in (("without", base), ("with", harness)):
            t0 = time.perf_counter()
            loop.run(cfg, os.path.join(tmp, label))
            walls[label] = time.perf_counter() - t0
            print(f"{label} harness: {walls[label]:.1f} s", flush=True)
    calls = args.steps // args.every + (args.steps % args.every != 0)
    extra = walls["with"] - walls["without"]
    out = {"config": args.config, "steps": args.steps, "every": args.every, "docs_per_task": args.docs,
           "requests_per_call": requests, "calls": calls, "wall_s": walls, "share": extra / walls["without"],
           "s_per_call": extra / calls, "requests_per_s": requests * calls / extra, "cpu_count": os.cpu_count(),
           "load_average_after": list(os.getloadavg())}
    print(json.dumps(out, indent=1))
    save_json(args.out, out)


if __name__ == "__main__":
    sys.exit(main())
