"""K proxy runs with ``ado-jax sweep`` vs the same K runs as ordinary ``ado-jax train`` runs.

    python benchmarks/sweep_bench.py          # K=16: both tables, ~8 min on 2 CPU cores (491 s measured, loaded)
    python benchmarks/sweep_bench.py --quick  # K=4, 20-step runs, 2-step rounds: a smoke check (~3 min), no figures
    python benchmarks/sweep_bench.py --skip-end-to-end   # the step table alone (~2 min)

Both comparisons train the same K static-mixture proxies (RegMix mixtures, "RegMix: Data Mixture
as Regression for Language Model Pre-training", arXiv:2407.01492), each arm's proxies on the same
mixtures, model and steps.

**End to end** (what a user compares; table 1): one ``ado-jax sweep --sampler given --mixtures F``
process against K ``ado-jax train --mixer static --set mixer.weights=[...]`` processes one after
another, each fresh (start-up, data setup, compilation, held-out evaluation and checkpoints paid
every time), all on the unmodified ``tiny`` preset for ``--run-steps`` (100) steps with
``train.eval_every`` = the steps in both arms (each evaluates once, at the end: the sweep's table
holds the last losses only; checkpoints at tiny's cadence in both). Wall time of each subprocess;
within a round the sweep runs between the first and the second half of the train runs (a drift in
the machine's load hits both arms), ``--e2e-rounds`` rounds (median over rounds). The
environment's persistent compilation cache (``JAX_COMPILATION_CACHE_DIR``) is removed from the
subprocesses: every process compiles. Also checked: each proxy's held-out ``eval_loss_mean``
against its ordinary run's (float rounding only).

**Step only** (table 2): in one process, compiled once, on a smaller proxy (the ``tiny`` preset
shrunk by ``--set``: by default d_model 32, 2 layers, batch 8 x 32 tokens):

  (a) vmapped: all K proxies in one vmap (``make_sweep_step(chunk=0)``);
  (b) chunked: the sweep's default (``ado_jax.sweep.proxies.default_chunk``: on CPU one proxy at
      a time in a ``lax.scan`` inside the same jitted step; on an accelerator this is (a), and the
      arm is left out);
  (c) sequential: the ordinary jitted train step (``ado_jax.train.make_train_step``, static
      mixer), each proxy's ``--steps`` steps in turn (the sequential best case: no start-ups).

Rounds alternate the arms' order and continue training the same states. Reported: min and median
wall time per round, sequential / each arm, the largest relative difference of the last
training losses (float rounding only).

Findings on a loaded 2-core CPU (XLA:CPU, jax 0.10.2; interleaved A/B in one process, medians;
noisy, rerun on a quiet machine): with the tiny preset's shapes at K=16 the full vmap's step
takes 1.3-1.4x the time of 16 ordinary steps (485 vs 350 ms), at K=4 1.3x; one proxy at a time
in a scan (chunk 1) takes the same as the ordinary steps (352 ms; chunk 2: 357 ms; chunk 4
noisier and slower at K=4). Where the vmap loses (``jax.profiler`` trace of the vmapped gradient,
K=1 vs K=16, same shapes): the dots (YNNPACK fusions) grow 24x, and ops that are free or fused at
K=1 appear at K=16: the attention backward materialises its softmax denominator broadcast and
causal-mask select over ``[K, kv heads, B, group, T, T]`` (16 MB each at K=16), transposes of the
batched attention einsum grow ~70x, the scan over layers carries ``[L, K, ...]`` weight and
gradient accumulators (vmap moves K inside the layer axis): the K-wide working set leaves the
caches. The remat policy does not change the ranking (none / full / dots / dots_no_batch: the
vmap is 1.3-1.4x slower than sequential under each; ``dots``, the preset's, is fastest).
Compiled FLOPs (``cost_analysis``) are exactly K times K=1's. A single f32 matmul of the proxy's
shape batched over K is itself 1.5x slower than K unbatched ones on XLA:CPU. So on CPU the step
cannot beat sequential (the same arithmetic, one core busy either way): the gain is in the end-
to-end table, where one process pays start-up, data setup, compilation and evaluation once for K
runs (a 20-step tiny run costs ~18 s, a 100-step one ~21-27 s). This script on the loaded machine
(K=16, 100 steps, 1 round): one sweep 73 s (chunk 1; the full vmap took ~140 s in a separate
try) vs 16 train runs 321 s = 4.4x (eval_loss_mean equal to 1e-7); step table: full vmap 0.62x,
chunk 1 1.01x of sequential (losses bit-identical to the ordinary step's). On an accelerator a
tiny proxy leaves most of the chip idle, so the vmapped step (the default there) should approach
K x the throughput of sequential steps until the chip is full; not measured.

Writes benchmarks/results/sweep_bench.json (``--quick``: a file in the temp dir unless ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import equinox as eqx
import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_io import save_json  # noqa: E402

from ado_jax import sharding, train  # noqa: E402
from ado_jax.optimizer import make_optimizer
from ado_jax.config import load_config  # noqa: E402
from ado_jax.data import setup as data_setup  # noqa: E402
from ado_jax.mixing import static  # noqa: E402
from ado_jax.sweep import proxies, samplers  # noqa: E402

SMALL = ["data.max_bytes_per_domain=200000", "model.d_model=32", "model.n_layers=2", "model.n_heads=2",
         "model.n_kv_heads=1", "train.batch_size=8", "train.seq_len=32", "train.progress=false"]


def _ready(x):
    return jax.block_until_ready(x)


def _timed(cmd, env) -> tuple[float, str]:
    """Runs ``cmd``; returns (wall seconds, its stdout). Raises with its stderr when it fails."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stderr[-3000:]}")
    return wall, p.stdout


def end_to_end(K: int, steps: int, rounds: int, mix_KD, names, work: str) -> dict:
    """One ``ado-jax sweep`` process vs K ``ado-jax train`` processes per round (module docstring)."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    cli = [sys.executable, "-m", "ado_jax.cli"]
    common = ["--config", "tiny", "--set", f"train.steps={steps}", "--set", f"train.eval_every={steps}",
              "--set", "train.progress=false"]
    mix_file = os.path.join(work, "mixtures.json")
    with open(mix_file, "w") as f:
        json.dump({"domains": list(names), "mixtures": np.asarray(mix_KD).tolist()}, f)
    sweep_s, train_s, diffs = [], [], []
    for r in range(rounds):
        sweep_dir = os.path.join(work, f"sweep{r}")
        sweep_cmd = cli + ["sweep", *common, "--sampler", "given", "--mixtures", mix_file, "--sweep-dir", sweep_dir]
        walls, evals = [], []
        for k in range(K):
            if k == K // 2:  # the sweep between the two halves of the train runs
                wall, _ = _timed(sweep_cmd, env)
                sweep_s.append(wall)
                print(f"  round {r}: sweep of {K} {wall:.1f} s", flush=True)
            weights = json.dumps([float(w) for w in mix_KD[k]])
            wall, out = _timed(cli + ["train", *common, "--run-dir", os.path.join(work, f"train{r}_{k}"),
                                      "--mixer", "static", "--set", f"mixer.weights={weights}"], env)
            walls.append(wall)
            evals.append(json.loads(out.strip().splitlines()[-1])["eval_loss_mean"])
        train_s.append(walls)
        print(f"  round {r}: {K} train runs {sum(walls):.1f} s (each {min(walls):.1f}-{max(walls):.1f} s)", flush=True)
        with open(os.path.join(sweep_dir, "results.json")) as f:
            table = json.load(f)
        swept = np.asarray(table["aggregates"]["eval_loss_mean"])
        diffs.append(float(np.max(np.abs(swept - np.asarray(evals)) / np.asarray(evals))))
    seq = [sum(w) for w in train_s]
    return {"proxies": K, "steps": steps, "rounds": rounds, "preset": "tiny",
            "sweep_s": sweep_s, "sequential_s": seq, "train_run_s": train_s,
            "sweep_median_s": float(np.median(sweep_s)), "sequential_median_s": float(np.median(seq)),
            "train_run_median_s": float(np.median(train_s)),
            "sequential_over_sweep": float(np.median(seq) / np.median(sweep_s)),
            "goal_3x_met": bool(np.median(seq) / np.median(sweep_s) >= 3.0),
            "max_rel_eval_loss_diff": float(max(diffs))}


def step_only(cfg, stream, mix_KD, K: int, S: int, rounds: int) -> dict:
    """All K vmapped, the default chunking and K ordinary steps in one process (module docstring)."""
    names = stream.names
    optimizer = make_optimizer(cfg.train)
    pmesh = proxies.proxy_mesh(K)
    chunk = proxies.default_chunk(K)
    arm_chunks = {"vmapped": 0, **({"chunked": chunk} if 0 < chunk < K // pmesh.devices.size else {})}
    arms, compile_s = {}, {}
    for name, c in arm_chunks.items():
        state = proxies.init_proxies(cfg.model, optimizer, [cfg.train.seed] * K, mix_KD, pmesh)
        step = proxies.make_sweep_step(cfg.train, optimizer, pmesh, proxies.state_shardings(state, pmesh), c)
        t0 = time.perf_counter()
        state, m = step(state, stream)
        _ready(m["loss"])
        compile_s[name] = time.perf_counter() - t0
        state, m = step(state, stream)  # warm-up: the second call sees the step's own output layout
        arms[name] = [state, step, m]

    # (c) sequential: K ordinary states, one compiled ordinary step (a static mixer reads its
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
    for k in range(K):  # the sweep arms took two steps already: so does each sequential proxy
        states[k], m = sstep(states[k], stream)
        if k == 0:
            _ready(m["loss"])
            compile_s["sequential"] = time.perf_counter() - t0
        states[k], m = sstep(states[k], stream)
        last_seq.append(m["loss"])
    _ready(last_seq)

    def run_arm(name):
        a = arms[name]
        for _ in range(S):
            a[0], a[2] = a[1](a[0], stream)
        _ready(a[2]["loss"])

    def run_sequential():
        for k in range(K):
            for _ in range(S):
                states[k], m = sstep(states[k], stream)
            last_seq[k] = m["loss"]
        _ready(last_seq)

    fns = {**{n: (lambda n=n: run_arm(n)) for n in arms}, "sequential": run_sequential}
    times = {n: [] for n in fns}
    for r in range(rounds):
        for name in list(fns)[:: 1 if r % 2 == 0 else -1]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    s_loss = np.asarray([float(x) for x in last_seq])
    row = {"proxies": K, "steps_per_round": S, "rounds": rounds, "chunk": arm_chunks.get("chunked", 0),
           "compile_s": compile_s, "rounds_s": times}
    for name, t in times.items():
        row[f"{name}_min_s"], row[f"{name}_median_s"] = float(np.min(t)), float(np.median(t))
    for name in arms:
        row[f"sequential_over_{name}_min"] = row["sequential_min_s"] / row[f"{name}_min_s"]
        row[f"sequential_over_{name}_median"] = row["sequential_median_s"] / row[f"{name}_median_s"]
        row[f"{name}_max_rel_loss_diff"] = float(np.max(np.abs(np.asarray(arms[name][2]["loss"]) - s_loss) /
                                                        np.abs(s_loss)))
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--proxies", type=int, default=16, help="K")
    ap.add_argument("--run-steps", type=int, default=100, help="end to end: steps of every run (tiny preset)")
    ap.add_argument("--e2e-rounds", type=int, default=1, help="end to end: rounds (each K train runs + a sweep)")
    ap.add_argument("--steps", type=int, default=20, help="step only: steps per proxy per round")
    ap.add_argument("--rounds", type=int, default=5, help="step only: rounds")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="step only: more config overrides of the tiny preset (after the defaults above)")
    ap.add_argument("--skip-end-to-end", action="store_true", help="the step table only")
    ap.add_argument("--skip-step", action="store_true", help="the end-to-end table only")
    ap.add_argument("--quick", action="store_true",
                    help="K=4, 20-step runs, 2-step rounds, 1 round each: a smoke check, not a measurement")
    ap.add_argument("--out", help="JSON to write (default benchmarks/results/sweep_bench.json)")
    args = ap.parse_args(argv)
    if args.quick:
        args.proxies, args.run_steps, args.e2e_rounds, args.steps, args.rounds = 4, 20, 1, 2, 1
    out = args.out or (os.path.join(tempfile.gettempdir(), "sweep_bench_quick.json") if args.quick else
                       os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "sweep_bench.json"))
    K = args.proxies
    load0, t_start = os.getloadavg()[0], time.perf_counter()
    result = {}

    if not args.skip_end_to_end:
        tiny = data_setup.resolve_vocab_size(load_config("tiny", [f"train.steps={args.run_steps}"]))
        stream = data_setup.train_stream(tiny)
        mix_KD = samplers.regmix_mixtures(jax.random.PRNGKey(0), stream.sizes(), K,
                                          run_tokens=args.run_steps * tiny.train.batch_size * tiny.train.seq_len)
        print(f"end to end: 1 sweep vs {K} train runs, tiny preset, {args.run_steps} steps", flush=True)
        with tempfile.TemporaryDirectory(prefix="sweep_bench_") as work:
            e2e = end_to_end(K, args.run_steps, args.e2e_rounds, mix_KD, stream.names, work)
        result["end_to_end"] = e2e
        print(f"  sweep {e2e['sweep_median_s']:.1f} s vs {K} train runs {e2e['sequential_median_s']:.1f} s "
              f"(each {e2e['train_run_median_s']:.1f} s): {e2e['sequential_over_sweep']:.2f}x less wall time; "
              f"goal >= 3x: {e2e['goal_3x_met']}; max rel. eval-loss diff {e2e['max_rel_eval_loss_diff']:.1e}",
              flush=True)

    if not args.skip_step:
        cfg = data_setup.resolve_vocab_size(load_config("tiny", SMALL + args.overrides))
        stream = data_setup.train_stream(cfg)
        mix_KD = samplers.regmix_mixtures(jax.random.PRNGKey(0), stream.sizes(), K,
                                          run_tokens=args.steps * args.rounds * cfg.train.batch_size *
                                          cfg.train.seq_len)
        row = step_only(cfg, stream, mix_KD, K, args.steps, args.rounds)
        result["row"] = row
        result["step_model"] = {**{k: getattr(cfg.model, k) for k in ("d_model", "n_layers", "n_heads",
                                                                        "vocab_size", "remat")},
                                "batch_size": cfg.train.batch_size, "seq_len": cfg.train.seq_len}
        print(f"step only: {K} proxies x {args.steps} steps/round, {args.rounds} rounds")
        for name in row["rounds_s"]:
            print(f"  {name:10s} min {row[name + '_min_s']:.3f} s  median {row[name + '_median_s']:.3f} s per round"
                  + (f"  sequential / {name}: {row[f'sequential_over_{name}_median']:.2f}x (median), "
                     f"max rel. loss diff {row[f'{name}_max_rel_loss_diff']:.1e}" if name != "sequential" else ""))

    result["setup"] = {"device": str(jax.devices()[0]), "backend": jax.default_backend(),
                       "devices": jax.device_count(), "cpu_count": os.cpu_count(), "jax": jax.__version__,
                       "python": platform.python_version(), "quick": args.quick, "loadavg_start": load0,
                       "loadavg_end": os.getloadavg()[0], "total_s": time.perf_counter() - t_start}
    save_json(out, result)
    setup = result["setup"]
    print(f"{setup['device']} ({os.cpu_count()} CPUs, load {load0:.1f}->{setup['loadavg_end']:.1f}), "
          f"{setup['total_s']:.0f} s in all -> {out}")
    return result


if __name__ == "__main__":
    main()
