"""Where the train step's time goes: a ``jax.profiler`` trace of a few steps, summarised by op.

    python benchmarks/step_profile.py                     # demo shape, its preset remat, one CPU device
    python benchmarks/step_profile.py --remat none --steps 5

Traces ``--steps`` steps after two warm-up steps, then sums the duration of every XLA op event and
reports the share of the step's execution time (``ThunkExecutor::Execute`` on CPU) spent in
transposes and copies (layout changes, no arithmetic), the largest ops, and the step time. Writes
benchmarks/results/step_profile.json and leaves the trace in /tmp for TensorBoard / Perfetto.
About a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import tempfile

import jax

from remat_bench import build
from results_io import save_json

LAYOUT_OP = re.compile(r"transpose|copy")


def profile(preset: str, remat: str | None, steps: int) -> dict:
    """Traces ``steps`` steps; returns per-op totals and the layout-op share."""
    step, state, stream, tokens = build(preset, remat, None)
    for _ in range(2):
        state, m = step(state, stream)
    jax.block_until_ready(m["loss"])
    trace_dir = tempfile.mkdtemp(prefix="step_profile_")
    with jax.profiler.trace(trace_dir):
        for _ in range(steps):
            state, m = step(state, stream)
        jax.block_until_ready(m["loss"])
    (path,) = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)
    events = json.load(gzip.open(path))["traceEvents"]
    dur_us = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and "dur" in e:
            dur_us[e["name"]] += e["dur"]
    execute = dur_us.pop("ThunkExecutor::Execute", 0) or float("nan")
    ops = {k: v for k, v in dur_us.items() if not k.startswith(("$", "ThunkExecutor"))}
    layout = sum(v for k, v in ops.items() if LAYOUT_OP.search(k))
    return {"preset": preset, "remat": remat, "steps": steps, "trace": path, "step_ms": execute / steps / 1e3,
            "layout_ms_per_step": layout / steps / 1e3, "layout_share": layout / execute,
            "top_ops_ms_per_step": {k: v / steps / 1e3 for k, v in collections.Counter(ops).most_common(12)}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="demo")
    p.add_argument("--remat", default=None, help="override the preset's model.remat")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "step_profile.json"))
    args = p.parse_args()
    r = profile(args.preset, args.remat, args.steps)
    print(f"{r['preset']} remat={r['remat'] or 'preset'}: step {r['step_ms']:.0f} ms, transposes+copies "
          f"{r['layout_ms_per_step']:.0f} ms = {r['layout_share']:.1%} of the step")
    for name, ms in r["top_ops_ms_per_step"].items():
        print(f"  {ms:8.1f} ms  {name}")
    save_json(args.out, r)


if __name__ == "__main__":
    main()
