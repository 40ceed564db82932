"""Cost of the in-step held-out evaluation (Aioli's LearnParams, held-out DoReMi), side by side.

    python benchmarks/heldout_cost.py [--presets tiny demo] [--batches 1]

Times, in one process and interleaved: a train step whose mixer never asks for held-out losses
(the evaluation is not even compiled), the same step when the mixer asks (``lax.cond`` taken),
and when it could ask but does not (``lax.cond`` not taken). The per-step ``heldout_eval`` flag
in ``metrics.jsonl`` says which steps paid the cost. Times are process CPU seconds (steadier than
wall time on a shared machine). Results: benchmarks/results/heldout_cost.json.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ado_jax import sharding, train
from ado_jax.optimizer import make_optimizer
from ado_jax.config import MeshConfig, load_config
from ado_jax.data.in_memory import InMemoryDomains
from ado_jax.mixing.base import Mixer
from ado_jax.mixing.basic import balanced
from results_io import save_json


class AskState(NamedTuple):
    weights: jax.Array
    wants_heldout: jax.Array
    seen: jax.Array  # [D] last held-out losses: consuming them keeps XLA from dropping the evaluation


def asking(always: bool) -> Mixer:
    """Uniform weights; asks for held-out losses on every step (``always``) or never."""
    def update(stats, s):
        seen = jnp.where(stats.heldout_valid, stats.heldout_loss, s.seen)
        return s.weights, s._replace(seen=seen)

    return Mixer(lambda d: AskState(jnp.full((d,), 1.0 / d), jnp.asarray(always), jnp.zeros((d,))), update)


def time_steps(cfg, mixer, stream, held, n: int) -> float:
    mesh = sharding.make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
    opt = make_optimizer(cfg.train)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    state = train.create_state(cfg.model, opt, mixer, stream.init(k2), stream.num_domains, k1, mesh)
    step = train.make_train_step(cfg.train, opt, mixer, mesh, train.state_shardings(state, mesh), stream.num_domains)
    state, m = step(state, stream, held)
    jax.block_until_ready(m["loss"])
    # Process CPU time, not wall time: on a shared CPU it is far steadier (all XLA threads count).
    t0 = time.process_time()
    for _ in range(n):
        state, m = step(state, stream, held)
    jax.block_until_ready(m["loss"])
    return (time.process_time() - t0) / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "demo"], help="config presets")
    p.add_argument("--batches", type=int, default=1, help="held-out batches per domain (mixer.heldout_batches)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant and round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median taken)")
    p.add_argument("--out", default="benchmarks/results/heldout_cost.json")
    args = p.parse_args()
    rows = []
    for preset in args.presets:
        cfg = load_config(preset, ["model.vocab_size=257", "data.source=builtin"])
        B, T, V, D = cfg.train.batch_size, cfg.train.seq_len, cfg.model.vocab_size, 8
        rng = np.random.default_rng(0)
        domains = {f"d{i}": rng.integers(0, V, 100_000) for i in range(D)}
        stream = InMemoryDomains.from_arrays(domains, B, T, V)
        held = InMemoryDomains.from_arrays(domains, B // cfg.train.grad_accum, T, V).fixed_batches(args.batches)
        times = {"no_eval_compiled": [], "eval_taken": [], "eval_not_taken": []}
        for _ in range(args.rounds):
            times["no_eval_compiled"].append(time_steps(cfg, balanced(), stream, held, args.steps))
            times["eval_taken"].append(time_steps(cfg, asking(True), stream, held, args.steps))
            times["eval_not_taken"].append(time_steps(cfg, asking(False), stream, held, args.steps))
        med = {k: float(np.median(v)) for k, v in times.items()}
        rows.append({"preset": preset, "domains": D, "heldout_sequences": D * args.batches * B, **med,
                     "eval_extra_pct": 100 * (med["eval_taken"] / med["no_eval_compiled"] - 1),
                     "idle_cond_pct": 100 * (med["eval_not_taken"] / med["no_eval_compiled"] - 1)})
    print(f"{'preset':8} {'held seqs':>9} {'step ms':>9} {'+eval ms':>9} {'eval +%':>8} {'idle cond +%':>12}")
    for r in rows:
        print(f"{r['preset']:8} {r['heldout_sequences']:>9} {r['no_eval_compiled'] * 1e3:>9.1f} "
              f"{r['eval_taken'] * 1e3:>9.1f} {r['eval_extra_pct']:>8.1f} {r['idle_cond_pct']:>12.1f}")
    save_json(args.out, {"load_avg": os.getloadavg(), "rows": rows})


if __name__ == "__main__":
    main()
