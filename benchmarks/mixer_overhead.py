"""Train-step time with ADO vs the static mixer on the ``demo`` model, side by side in one run.

    python benchmarks/mixer_overhead.py                       # D = 8 (the demo corpus), 22, 256, 1024
    python benchmarks/mixer_overhead.py --domains 8 --blocks 6 --steps 2   # quicker, noisier

For each domain count D the same model (the ``demo`` preset: 4 layers, d_model 192, batch 32 x 128
tokens), optimizer and random-token ``InMemoryDomains`` stream are stepped with
``train.make_train_step`` under two mixers: ``static`` (uniform) and ``ado`` (the paper's
defaults: a fit every 1000 steps on a 512-point history, uniform prior, so both draw the same
batches; delta_min = min(0.01, 0.1 / D), as 0.01 is infeasible beyond 100 domains). Measured,
interleaved to cancel the drift of a shared machine:

  (1)/(2) mean step time, static vs ADO between fits: blocks of ``--steps`` steps, alternating
      static/ADO (the order flips every block); the overhead is the median over blocks of the
      per-block-pair ratio, so a load change between pairs does not bias it;
  (3) a step that runs the fit: single ADO steps with ``state.step`` set to a fit step, each
      next to a single step set between fits (alternating); extra = median(fit - between).

Amortized overhead with a fit every 1000 steps = between-fit overhead + extra / 1000 / static.
Everything is computed twice: from wall time and from this process's CPU time (all threads).
On a shared machine wall time swings by tens of percent between blocks; CPU time barely moves,
so it is the figure to judge the 1 % target by. A third, precise estimate times the jitted
``mixer.update`` alone (static vs ADO, with and without the fit) against the static step, and
XLA's static cost analysis compares the two compiled steps' flops and bytes (an upper bound:
it counts the fit branch too).
The load average is recorded; results go to benchmarks/results/mixer_overhead.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ado_jax import sharding, train
from ado_jax.optimizer import make_optimizer
from ado_jax.config import load_config
from ado_jax.data.in_memory import InMemoryDomains
from ado_jax.mixing import ado, basic
from results_io import save_json

FIT_EVERY = 1000


def delta_min(num_domains: int) -> float:
    """ADO's minimum probability: the paper's 0.01 (22 domains), at most 10 % of the mass in all
    (0.1 / D) for D > 10, where 0.01 x D would exceed 1."""
    return min(0.01, 0.1 / num_domains)


def setup(num_domains: int, vocab: int):
    """Config, stream, and ``{name: (mixer, step_fn, state)}`` for static and ADO."""
    cfg = load_config("demo", [f"model.vocab_size={vocab}"])
    B, T = cfg.train.batch_size, cfg.train.seq_len
    rng = np.random.default_rng(0)
    tokens = 100_000 if num_domains <= 64 else 10_000       # 1,024 domains: 10M tokens in all
    domains = {f"d{i}": rng.integers(0, vocab, tokens) for i in range(num_domains)}
    stream = InMemoryDomains.from_arrays(domains, B, T, vocab)
    mesh = sharding.make_mesh(cfg.mesh)
    opt = make_optimizer(cfg.train)
    mixers = {"static": basic.static(np.full(num_domains, 1.0 / num_domains)),
              # paper defaults otherwise
              "ado": ado(fit_every=FIT_EVERY, fit_start=FIT_EVERY, delta_min=delta_min(num_domains))}
    runs = {}
    for name, mixer in mixers.items():
        k1, k2 = jax.random.split(jax.random.PRNGKey(0))
        state = train.create_state(cfg.model, opt, mixer, stream.init(k2), num_domains, k1, mesh)
        step = train.make_train_step(cfg.train, opt, mixer, mesh, train.state_shardings(state, mesh), num_domains)
        runs[name] = [step, state]
    return cfg, stream, runs


def at_step(state, step: int):
    """The state with its step counter set (the ADO fit is due when ``step % 1000 == 0``)."""
    return eqx.tree_at(lambda s: s.step, state, jnp.asarray(step, jnp.int32))


def run_steps(run, stream, n: int, step_at: int | None = None) -> tuple[float, float]:
    """Runs ``n`` steps (from step ``step_at`` if given); returns (wall, process CPU) seconds per
    step. CPU time (all threads of this process) is far less disturbed by other processes on a
    shared machine than wall time, so the overheads are computed from both."""
    step, state = run
    if step_at is not None:
        state = at_step(state, step_at)
    jax.block_until_ready(state)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        state, m = step(state, stream)
    jax.block_until_ready(state)
    run[1] = state
    return (time.perf_counter() - t0) / n, (time.process_time() - c0) / n


def xla_cost(run, stream) -> dict | None:
    """XLA's static cost analysis of the compiled step: flops and bytes accessed. It counts both
    branches of the fit's ``lax.cond``, so ADO's figure bounds its between-fit cost from above.
    ``train.make_train_step`` returns a plain function; its ``eqx.filter_jit`` is read from the
    closure (None if that ever changes)."""
    jitted = [c.cell_contents for c in run[0].__closure__ or () if hasattr(c.cell_contents, "lower")]
    if not jitted:
        return None
    cost = jitted[0].lower((stream, None), run[1]).compile().compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return {k: float(cost[k]) for k in ("flops", "bytes accessed") if k in cost}


def isolated_update_s(mixer, num_domains: int, step: int, calls: int) -> float:
    """Seconds per call of the jitted ``mixer.update`` alone, at train step ``step`` (a precise,
    noise-resistant estimate of what the mixer adds to a step; the in-step cost is fused with it)."""
    rng = np.random.default_rng(1)
    count_D = jnp.asarray(rng.integers(1, 8, num_domains), jnp.float32)
    loss_D = jnp.asarray(rng.uniform(2, 4, num_domains), jnp.float32) * count_D
    from ado_jax.mixing import DomainStats

    stats = DomainStats.create(loss_D, count_D, jnp.asarray(step, jnp.int32))
    update = jax.jit(mixer.update)
    state = mixer.init(num_domains)
    jax.block_until_ready(update(stats, state))
    times = []
    for _ in range(3):  # best of 3 repeats of ``calls`` calls
        t0 = time.perf_counter()
        for _ in range(calls):
            w, _ = update(stats, state)
        jax.block_until_ready(w)
        times.append((time.perf_counter() - t0) / calls)
    return min(times)


def measure(num_domains: int, vocab: int, blocks: int, steps: int, fit_pairs: int) -> dict:
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    cfg, stream, runs = setup(num_domains, vocab)
    base = 10 * FIT_EVERY + 1  # between fits (and past fit_start, so the policy is active after a fit)
    for run in runs.values():  # compile (and one warm step) outside the timing
        run_steps(run, stream, 2, base)
    run_steps(runs["ado"], stream, 1, 10 * FIT_EVERY)  # compile/run the fit branch once
    compile_s = time.perf_counter() - t0

    t_static, t_ado = [], []  # [blocks, 2]: (wall, cpu) seconds per step
    for b in range(blocks):
        order = ("static", "ado") if b % 2 == 0 else ("ado", "static")
        got = {name: run_steps(runs[name], stream, steps, base + 100 * b) for name in order}
        t_static.append(got["static"])
        t_ado.append(got["ado"])
    t_static, t_ado = np.array(t_static), np.array(t_ado)
    ratios = t_ado / t_static                    # per block: ADO vs the static block next to it

    fit_t, between_t = [], []
    for i in range(fit_pairs):
        due, off = (i + 11) * FIT_EVERY, (i + 11) * FIT_EVERY + 7
        pair = [("fit", due), ("between", off)] if i % 2 == 0 else [("between", off), ("fit", due)]
        for kind, s in pair:
            (fit_t if kind == "fit" else between_t).append(run_steps(runs["ado"], stream, 1, s))
    fit_t, between_t = np.array(fit_t), np.array(between_t)
    num_fits = int(runs["ado"][1].mixer_state.num_fits)
    mixers = {"static": basic.static(np.full(num_domains, 1.0 / num_domains)),
              "ado": ado(fit_every=FIT_EVERY, fit_start=FIT_EVERY, delta_min=delta_min(num_domains))}
    iso = {"static_update_s": isolated_update_s(mixers["static"], num_domains, base, 300),
           "ado_update_between_fits_s": isolated_update_s(mixers["ado"], num_domains, base, 300),
           "ado_update_with_fit_s": isolated_update_s(mixers["ado"], num_domains, 10 * FIT_EVERY, 3)}
    costs = {name: xla_cost(run, stream) for name, run in runs.items()}
    if all(costs.values()):
        costs["ado_extra"] = {k: costs["ado"][k] / costs["static"][k] - 1.0 for k in costs["static"]}
    clocks = {}
    for c, clock in enumerate(("wall", "cpu")):  # the same quantities from wall and process-CPU time
        static_s = float(np.median(t_static[:, c]))
        between = float(np.median(ratios[:, c])) - 1.0
        extra_s = float(np.median(fit_t[:, c] - between_t[:, c]))
        amortized = between + extra_s / FIT_EVERY / static_s
        clocks[clock] = dict(
            static_step_s=static_s, ado_between_fits_step_s=float(np.median(t_ado[:, c])),
            between_fit_overhead=between, between_fit_overhead_per_block=(ratios[:, c] - 1.0).tolist(),
            static_step_s_per_block=t_static[:, c].tolist(), ado_step_s_per_block=t_ado[:, c].tolist(),
            fit_step_s=float(np.median(fit_t[:, c])), paired_between_step_s=float(np.median(between_t[:, c])),
            fit_step_extra_s=extra_s, amortized_overhead=amortized,
            targets={"between<=1%": between <= 0.01, "amortized<=2%": amortized <= 0.02})
    static_s = clocks["wall"]["static_step_s"]
    iso_between = (iso["ado_update_between_fits_s"] - iso["static_update_s"]) / static_s
    iso_extra = iso["ado_update_with_fit_s"] - iso["ado_update_between_fits_s"]
    iso.update(between_fit_overhead=iso_between, fit_extra_s=iso_extra,
               amortized_overhead=iso_between + iso_extra / FIT_EVERY / static_s)
    return dict(
        domains=num_domains, history_len=512, fit_every=FIT_EVERY, block_steps=steps, blocks=blocks,
        fit_pairs=fit_pairs, fits_run=num_fits, wall=clocks["wall"], cpu=clocks["cpu"],
        isolated_mixer_update=iso, xla_cost_analysis=costs,
        setup_and_compile_s=compile_s, loadavg_start=load0, loadavg_end=os.getloadavg(),
        model=dict(d_model=cfg.model.d_model, n_layers=cfg.model.n_layers, batch=cfg.train.batch_size,
                   seq_len=cfg.train.seq_len, vocab=vocab))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--domains", type=int, nargs="+", default=[8, 22, 256, 1024])
    ap.add_argument("--vocab", type=int, default=257, help="the demo corpus's byte-level vocabulary")
    ap.add_argument("--blocks", type=int, default=12, help="alternating static/ADO blocks")
    ap.add_argument("--steps", type=int, default=3, help="steps per block")
    ap.add_argument("--fit-pairs", type=int, default=4, help="(fit step, between step) pairs")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "mixer_overhead.json"))
    args = ap.parse_args()
    rows = [measure(d, args.vocab, args.blocks, args.steps, args.fit_pairs) for d in args.domains]

    dev = jax.devices()[0]
    print(f"ADO vs static mixer, demo model, {jax.device_count()} x {dev.platform} device(s), "
          f"{os.cpu_count()} CPUs (shared machine)")
    print(f"{'D':>3} {'clock':>5} {'static ms':>10} {'ADO ms':>8} {'between':>8} {'fit step ms':>12}"
          f" {'fit extra ms':>13} {'amortized':>10} {'load avg':>10}")
    for r in rows:
        for clock in ("wall", "cpu"):
            k = r[clock]
            print(f"{r['domains']:>3} {clock:>5} {k['static_step_s'] * 1e3:>10.1f}"
                  f" {k['ado_between_fits_step_s'] * 1e3:>8.1f} {k['between_fit_overhead']:>+8.2%}"
                  f" {k['fit_step_s'] * 1e3:>12.1f} {k['fit_step_extra_s'] * 1e3:>13.1f}"
                  f" {k['amortized_overhead']:>+10.2%} {r['loadavg_start'][0]:>4.1f}->{r['loadavg_end'][0]:<4.1f}")
            print("          per-block between-fit overhead: "
                  + " ".join(f"{x:+.1%}" for x in k["between_fit_overhead_per_block"]) + f"; targets {k['targets']}")
        i = r["isolated_mixer_update"]
        print(f"    isolated jitted mixer.update: static {i['static_update_s'] * 1e6:.0f} us, ADO between fits "
              f"{i['ado_update_between_fits_s'] * 1e6:.0f} us, ADO with fit {i['ado_update_with_fit_s'] * 1e3:.1f} ms"
              f" -> between {i['between_fit_overhead']:+.3%}, amortized {i['amortized_overhead']:+.3%}"
              " of a static step")
        if "ado_extra" in r["xla_cost_analysis"]:
            print("    XLA cost analysis, ADO step vs static (both cond branches counted): "
                  + ", ".join(f"{k} {v:+.2%}" for k, v in r["xla_cost_analysis"]["ado_extra"].items()))
    result = dict(setup=dict(device=str(dev), device_count=jax.device_count(), cpu_count=os.cpu_count(),
                             jax=jax.__version__, python=platform.python_version(), preset="demo",
                             note="shared CPU machine (other agents running); medians over interleaved blocks"),
                  rows=rows)
    save_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
