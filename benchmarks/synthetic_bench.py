"""Sparse parity (paper setup: d=20, k=6, MLP 2x40, SGD 0.1, batch 20) — 50k steps x 5 seeds.

Compares side by side, in one run:
  vmap+scan   all seeds in one compiled program (ado_jax.synthetic.train.train)
  scan/seed   one compiled scan program per seed, run one after another
  python loop a jitted single step called from Python (1 seed, fewer steps, extrapolated)
Wall-clock includes compilation. Prints a table; writes benchmarks/results/synthetic_bench.json.
Usage: python benchmarks/synthetic_bench.py [--steps 50000] [--seeds 5] [--loop-steps 2000]
"""

from __future__ import annotations

import argparse
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ado_jax.synthetic import train as st
from ado_jax.synthetic.tasks import make_task
from results_io import save_json


def python_loop(task, steps: int) -> float:
    model = task.make_model(jax.random.PRNGKey(0))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt = task.optimizer
    opt_state, sstate = opt.init(params), task.stream.init(jax.random.PRNGKey(1))

    @jax.jit
    def step(params, opt_state, sstate):
        batch, sstate = task.stream.next(sstate)
        loss, g = jax.value_and_grad(lambda p: jnp.mean(task.loss_fn(eqx.combine(p, static), batch)))(params)
        u, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, u), opt_state, sstate, loss

    t0 = time.perf_counter()
    for _ in range(steps):
        params, opt_state, sstate, loss = step(params, opt_state, sstate)
    loss.block_until_ready()
    return time.perf_counter() - t0


def main(args):
    task = make_task("sparse_parity")
    rows = []
    t0 = time.perf_counter()
    r = st.train(task, num_steps=args.steps, eval_every=args.steps // 20, seeds=args.seeds)
    rows.append(("vmap+scan", time.perf_counter() - t0, float(r["test_acc"][0, :, -1].mean())))
    t0 = time.perf_counter()
    accs = [st.train(task, num_steps=args.steps, eval_every=args.steps // 20, seeds=[s])["test_acc"][0, 0, -1]
            for s in range(args.seeds)]
    rows.append(("scan/seed", time.perf_counter() - t0, float(sum(accs) / len(accs))))
    t_loop = python_loop(task, args.loop_steps)
    rows.append(("python loop (extrapolated)", t_loop * args.steps * args.seeds / args.loop_steps, float("nan")))
    base = rows[0][1]
    print(f"sparse parity, {args.steps} steps x {args.seeds} seeds, {os.cpu_count()} CPUs, "
          f"load avg {os.getloadavg()[0]:.1f} (shared machine)")
    print(f"{'method':28s} {'wall s':>9s} {'x vmap+scan':>12s} {'final acc':>10s}")
    for name, t, acc in rows:
        print(f"{name:28s} {t:9.1f} {t / base:12.2f} {acc:10.3f}")
    out = {"steps": args.steps, "seeds": args.seeds, "loop_steps": args.loop_steps,
           "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0], "jax": jax.__version__,
           "rows": [{"method": n, "wall_s": t, "ratio": t / base, "final_test_acc": a} for n, t, a in rows]}
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "synthetic_bench.json")
    save_json(path, out)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=50000)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--loop-steps", type=int, default=2000)
    main(p.parse_args())
