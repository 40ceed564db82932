"""Which ``model.remat`` policy gives the fastest train step: every policy timed in one process,
interleaved block by block, so load on the machine hits them alike.

    python benchmarks/remat_bench.py                      # demo + tiny shapes, one CPU device
    python benchmarks/remat_bench.py --presets gpt2-124m --batch 8

For each preset it builds one step per policy (``none``, ``dots``, ``dots_no_batch``, ``full``),
compiles them, then runs ``--rounds`` rounds of ``--block`` steps of each policy in turn and
reports the median step time per policy with its min/max over rounds, and the ratio to the
fastest. The presets' CPU default follows this table (docs/training.md). About 3 minutes on 2
CPU cores with the defaults. Writes benchmarks/results/remat_bench.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import numpy as np

from results_io import save_json

POLICIES = ("none", "dots", "dots_no_batch", "full")


def build(preset: str, remat: str | None, batch: int | None):
    """``(step, state, stream, tokens per step)`` for ``preset`` on one device, with
    ``model.remat=remat`` (None: the preset's) and random tokens in 4 domains."""
    from ado_jax import sharding, train
    from ado_jax.optimizer import make_optimizer
    from ado_jax.config import load_config
    from ado_jax.data.in_memory import InMemoryDomains
    from ado_jax.mixing.basic import balanced

    extra = [f"train.batch_size={batch}"] if batch else []
    extra += [f"model.remat={remat}"] if remat else []
    cfg = load_config(preset, ["mesh.data=1", *extra])
    cfg.model.vocab_size = cfg.model.vocab_size or 257
    B, T, V = cfg.train.batch_size, cfg.train.seq_len, cfg.model.vocab_size
    rng = np.random.default_rng(0)
    stream = InMemoryDomains.from_arrays({f"d{i}": rng.integers(0, V, 200_000) for i in range(4)}, B, T, V)
    mesh = sharding.make_mesh(cfg.mesh, devices=jax.devices()[:1])
    mixer, opt = balanced(), make_optimizer(cfg.train)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    state = train.create_state(cfg.model, opt, mixer, stream.init(k2), 4, k1, mesh)
    step = train.make_train_step(cfg.train, opt, mixer, mesh, train.state_shardings(state, mesh), 4)
    return step, state, stream, B * T


def time_preset(preset: str, batch: int | None, rounds: int, block: int) -> list[dict]:
    """Median tokens/s per policy over interleaved rounds."""
    built = {}
    for remat in POLICIES:
        step, state, stream, tokens = build(preset, remat, batch)
        t0 = time.perf_counter()
        state, m = step(state, stream)
        jax.block_until_ready(m["loss"])
        built[remat] = [step, state, stream, tokens, time.perf_counter() - t0, []]
    for _ in range(rounds):
        for remat, entry in built.items():
            step, state, stream = entry[:3]
            t0 = time.perf_counter()
            for _ in range(block):
                state, m = step(state, stream)
            jax.block_until_ready(m["loss"])
            entry[1] = state
            entry[5].append((time.perf_counter() - t0) / block)
    rows = []
    for remat, (_, _, _, tokens, compile_s, times) in built.items():
        med = statistics.median(times)
        rows.append({"preset": preset, "remat": remat, "step_ms": med * 1e3, "step_ms_min": min(times) * 1e3,
                     "step_ms_max": max(times) * 1e3, "tokens_per_s": tokens / med, "compile_s": compile_s})
    best = max(r["tokens_per_s"] for r in rows)
    for r in rows:
        r["ratio_to_fastest"] = r["tokens_per_s"] / best
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["demo", "tiny"], help="config presets to time")
    p.add_argument("--batch", type=int, default=None, help="override the presets' global batch size")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (the median is over these)")
    p.add_argument("--block", type=int, default=5, help="steps per policy per round")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "remat_bench.json"))
    args = p.parse_args()
    rows = []
    for preset in args.presets:
        rows += time_preset(preset, args.batch, args.rounds, args.block)
    print(f"{'preset':10} {'remat':14} {'step ms':>9} {'(min-max)':>16} {'tok/s':>9} {'vs best':>8}")
    for r in rows:
        print(f"{r['preset']:10} {r['remat']:14} {r['step_ms']:9.1f} {r['step_ms_min']:7.1f}-{r['step_ms_max']:<7.1f} "
              f"{r['tokens_per_s']:9.0f} {r['ratio_to_fastest']:8.2f}")
    save_json(args.out, {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
                         "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                         "rounds": args.rounds, "block": args.block, "rows": rows})


if __name__ == "__main__":
    main()
