"""K proxy runs vmapped in one step (``ado-jax sweep``) vs the same K runs one after another.

    python benchmarks/sweep_bench.py          # K=16, 20 steps a round, 5 rounds: ~2 min on 2 idle CPU cores
    python benchmarks/sweep_bench.py --quick  # K=4, 2 steps, 1 round: a smoke check (~1 min), no figures

Both arms train the same K static-mixture proxies (RegMix mixtures, "RegMix: Data Mixture as
Regression for Language Model Pre-training", arXiv:2407.01492) of the same model (the ``tiny``
preset shrunk by ``--set``: by default d_model 32, 2 layers, batch 8 x 32 tokens, the size of a
proxy whose step is dominated by dispatch rather than arithmetic on CPU), for the same steps:

  (a) vmapped: one jitted step over the stacked state of all K (``ado_jax.sweep.proxies``);
  (b) sequential: the ordinary jitted train step (``ado_jax.train.make_train_step``, static
      mixer), each proxy's ``steps`` steps in turn, compiled once and reused (real separate runs
      would also pay K start-ups and compilations: this arm is the sequential best case).

Compilation happens before the first round; the rounds alternate which arm goes first and
continue training the same states. Reported: min and median wall time per round of each arm,
sequential / vmapped (goal >= 3x less wall time on CPU), and the largest relative difference of
the two arms' last training losses (float rounding only: the arms compute the same runs).
Writes benchmarks/results/sweep_bench.json (``--quick``: a file in the temp dir unless ``--out``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import equinox as eqx
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_io import save_json  # noqa: E402

from ado_jax import sharding, train  # noqa: E402
from ado_jax.config import load_config  # noqa: E402
from ado_jax.data import setup as data_setup  # noqa: E402
from ado_jax.mixing import static  # noqa: E402
from ado_jax.sweep import proxies, samplers  # noqa: E402

SMALL = ["data.max_bytes_per_domain=200000", "model.d_model=32", "model.n_layers=2", "model.n_heads=2",
         "model.n_kv_heads=1", "train.batch_size=8", "train.seq_len=32", "train.progress=false"]


def _ready(x):
    return jax.block_until_ready(x)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--proxies", type=int, default=16, help="K")
    ap.add_argument("--steps", type=int, default=20, help="steps per proxy per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="more config overrides of the tiny preset (after the defaults above)")
    ap.add_argument("--quick", action="store_true", help="K=4, 2 steps, 1 round: a smoke check, not a measurement")
    ap.add_argument("--out", help="JSON to write (default benchmarks/results/sweep_bench.json)")
    args = ap.parse_args(argv)
    if args.quick:
        args.proxies, args.steps, args.rounds = 4, 2, 1
    out = args.out or (os.path.join(tempfile.gettempdir(), "sweep_bench_quick.json") if args.quick else
                       os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "sweep_bench.json"))
    cfg = data_setup.resolve_vocab_size(load_config("tiny", SMALL + args.overrides))
    K, S = args.proxies, args.steps
    stream = data_setup.train_stream(cfg)
    names = stream.names
    mix_KD = samplers.regmix_mixtures(jax.random.PRNGKey(0), stream.sizes(), K,
                                      run_tokens=S * args.rounds * cfg.train.batch_size * cfg.train.seq_len)
    optimizer = train.make_optimizer(cfg.train)
    load0, t_setup = os.getloadavg()[0], time.perf_counter()

    # (a) vmapped: one stacked state, one step
    pmesh = proxies.proxy_mesh(K)
    vstate = proxies.init_proxies(cfg.model, optimizer, [cfg.train.seed] * K, mix_KD, pmesh)
    vstep = proxies.make_sweep_step(cfg.train, optimizer, pmesh, proxies.state_shardings(vstate, pmesh))
    t0 = time.perf_counter()
    vstate, vm = vstep(vstate, stream)
    _ready(vm["loss"])
    v_compile = time.perf_counter() - t0
    vstate, vm = vstep(vstate, stream)  # warm-up: the second call sees the step's own output layout

    # (b) sequential: K ordinary states, one compiled ordinary step (a static mixer reads its
    # weights from the state, so one program serves every proxy)
    mesh = sharding.make_mesh(cfg.mesh)
    key_model, key_data = jax.random.split(jax.random.PRNGKey(cfg.train.seed))
    state0 = train.create_state(cfg.model, optimizer, static(mix_KD[0]), stream.init(key_data), len(names),
                                key_model, mesh)
    copy = lambda tree: jax.tree.map(lambda x: x.copy() if eqx.is_array(x) else x, tree)  # own buffers: donated
    states = [eqx.tree_at(lambda s: s.mixer_state, copy(state0), static(w).init(len(names))) for w in mix_KD]
    sstep = train.make_train_step(cfg.train, optimizer, static(mix_KD[0]), mesh, train.state_shardings(states[0], mesh),
                                  len(names))
    t0 = time.perf_counter()
    last_seq = []
    for k in range(K):  # the vmapped arm took two steps already: so does each sequential proxy
        states[k], m = sstep(states[k], stream)
        if k == 0:
            _ready(m["loss"])
            s_compile = time.perf_counter() - t0
        states[k], m = sstep(states[k], stream)
        last_seq.append(m["loss"])
    _ready(last_seq)

    def run_vmapped():
        nonlocal vstate, vm
        for _ in range(S):
            vstate, vm = vstep(vstate, stream)
        _ready(vm["loss"])

    def run_sequential():
        for k in range(K):
            for _ in range(S):
                states[k], m = sstep(states[k], stream)
            last_seq[k] = m["loss"]
        _ready(last_seq)

    times = {"vmapped": [], "sequential": []}
    for r in range(args.rounds):
        order = [("vmapped", run_vmapped), ("sequential", run_sequential)][:: 1 if r % 2 == 0 else -1]
        for name, fn in order:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    v_loss, s_loss = np.asarray(vm["loss"]), np.asarray([float(x) for x in last_seq])
    rel_diff = float(np.max(np.abs(v_loss - s_loss) / np.abs(s_loss)))
    stats = {name: {"min_s": float(np.min(t)), "median_s": float(np.median(t)), "rounds_s": t}
             for name, t in times.items()}
    row = {"proxies": K, "steps_per_round": S, "rounds": args.rounds, **{f"{n}_{k}": v[k] for n, v in stats.items()
                                                                        for k in ("min_s", "median_s")},
           "sequential_over_vmapped_min": stats["sequential"]["min_s"] / stats["vmapped"]["min_s"],
           "sequential_over_vmapped_median": stats["sequential"]["median_s"] / stats["vmapped"]["median_s"],
           "vmapped_compile_s": v_compile, "sequential_compile_s": s_compile,
           "max_rel_loss_diff": rel_diff, "rounds_s": {n: v["rounds_s"] for n, v in stats.items()}}
    row["goal_3x_met"] = row["sequential_over_vmapped_median"] >= 3.0
    setup = {"device": str(jax.devices()[0]), "backend": jax.default_backend(), "devices": jax.device_count(),
             "cpu_count": os.cpu_count(), "jax": jax.__version__, "python": platform.python_version(),
             "model": {k: getattr(cfg.model, k) for k in ("d_model", "n_layers", "n_heads", "vocab_size")},
             "batch_size": cfg.train.batch_size, "seq_len": cfg.train.seq_len, "domains": list(names),
             "quick": args.quick, "loadavg_start": load0, "loadavg_end": os.getloadavg()[0],
             "total_s": time.perf_counter() - t_setup}
    save_json(out, {"setup": setup, "row": row})
    print(f"{K} proxies x {S} steps/round, {args.rounds} rounds, {setup['device']} ({setup['cpu_count']} CPUs, "
          f"load {load0:.1f}->{setup['loadavg_end']:.1f})")
    for name in ("vmapped", "sequential"):
        print(f"  {name:10s} min {stats[name]['min_s']:.3f} s  median {stats[name]['median_s']:.3f} s per round")
    print(f"  sequential / vmapped: {row['sequential_over_vmapped_median']:.2f}x (median), "
          f"{row['sequential_over_vmapped_min']:.2f}x (min); goal >= 3x: {row['goal_3x_met']}; "
          f"max rel. loss diff {rel_diff:.1e}; compile {v_compile:.1f} s vs {s_compile:.1f} s -> {out}")
    return {"setup": setup, "row": row}


if __name__ == "__main__":
    main()
