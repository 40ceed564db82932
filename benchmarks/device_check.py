"""One command that measures what matters on whatever backend JAX sees (GPU, TPU or CPU).

    python benchmarks/device_check.py            # on a GPU/TPU: gpt2-124m and 350m in bfloat16
    python benchmarks/device_check.py --smoke    # CPU smoke test (< 60 s on 2 cores; CI runs it)

Sections, each reusing a benchmark script's functions:

  step      train-step time, tokens/s and MFU (``step_bench.measure``): on accelerators the
            ``gpt2-124m`` and ``350m`` presets (bfloat16 compute, full remat) at ``--batch``
            sequences; MFU against the datasheet dense bf16 peak of the device
            (``step_bench.PEAK_BF16``: H100, H200, A100, TPU v3, v4, v5e, v5p; sources there). On
            CPU the ``tiny`` (and without ``--smoke`` ``demo``) presets, MFU against a measured
            matmul. Without ``--smoke`` also the compile time against depth (4, 12, 24 layers).
            The attention kernel is the model's ``attention`` option (default ``auto``: cuDNN's
            fused kernel on GPUs in bfloat16, recorded per row). ``--profile-dir DIR`` writes a
            ``jax.profiler`` trace of the first preset's run.
  fitter    ADO's power-law fit, cold vs warm refit, per domain count (``fit_bench.scaling``:
            22, 256, 1,024 domains; 22 with ``--smoke``), on the default device.
  mixer     the jitted ADO ``update`` between fits and with a fit, against the static mixer's
            (``mixer_overhead.isolated_update_s``), as a share of the first preset's step.
  heldout   the in-step held-out evaluation (``heldout_cost.time_steps``): a step that never
            evaluates, one that does, one that could but does not.
  peer      (on accelerators, or with ``--peer``; ``--no-peer`` skips it) MaxText's own decoder and
            train step beside ours at the first preset's shape and dtype, interleaved in one
            process (``peer_bench.compare`` with ``maxtext_peer``: MaxText's GPU/TPU config, cuDNN's
            fused attention for both on GPUs in bfloat16): tokens/s and MFU of each. Needs Python
            >= 3.12 and the ``peer`` extra; elsewhere the section records why it was skipped.

Writes ``<out-dir>/<backend>/device_check.json`` and ``device_check.md`` (one table per section).
XLA flags: on GPUs, ``XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true`` lets XLA overlap
the FSDP all-gathers / reduce-scatters with compute (set it before starting Python; recorded in
the JSON). On TPUs the latency-hiding scheduler is on by default.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # the sibling benchmark scripts

import jax  # noqa: E402
import numpy as np  # noqa: E402

from results_io import save_json  # noqa: E402


def step_section(presets, batch, steps, depths, profile_dir=None) -> list[dict]:
    """step_bench.measure for each preset (and each depth of the first preset); with
    ``profile_dir`` the first preset's run (compile and steps) is traced by ``jax.profiler``."""
    import contextlib

    import step_bench

    rows = []
    for i, preset in enumerate(presets):
        trace = jax.profiler.trace(profile_dir) if profile_dir and i == 0 else contextlib.nullcontext()
        with trace:
            rows.append(step_bench.measure(preset, batch.get(preset), steps, []))
        print(f"step {preset}: {rows[-1]['step_s'] * 1e3:.1f} ms, {rows[-1]['tokens_per_s']:.0f} tok/s, "
              f"MFU {rows[-1]['mfu']:.1%}, compile {rows[-1]['compile_s']:.1f} s", flush=True)
    for depth in depths:
        r = step_bench.measure(presets[0], batch.get(presets[0]), 2, [f"model.n_layers={depth}"])
        rows.append({**r, "depth_sweep": True})
        print(f"compile {presets[0]} with {depth} layers: {r['compile_s']:.1f} s", flush=True)
    return rows


def mixer_section(domain_counts, step_s: float) -> list[dict]:
    """Isolated jitted ADO update (between fits, with a fit) vs static, per domain count."""
    import mixer_overhead
    from ado_jax.mixing import ado, basic

    fit_every = mixer_overhead.FIT_EVERY
    rows = []
    for d in domain_counts:
        static = basic.static(np.full(d, 1.0 / d))
        mixer = ado(fit_every=fit_every, fit_start=fit_every, delta_min=mixer_overhead.delta_min(d))
        base = 10 * fit_every + 1
        t_static = mixer_overhead.isolated_update_s(static, d, base, 100)
        t_between = mixer_overhead.isolated_update_s(mixer, d, base, 100)
        t_fit = mixer_overhead.isolated_update_s(mixer, d, 10 * fit_every, 1)
        rows.append(dict(domains=d, static_update_s=t_static, ado_between_fits_s=t_between,
                         ado_with_fit_s=t_fit, reference_step_s=step_s,
                         between_fit_overhead=(t_between - t_static) / step_s,
                         amortized_overhead=(t_between - t_static + (t_fit - t_between) / fit_every) / step_s))
        print(f"mixer D={d}: ADO between fits {t_between * 1e6:.0f} us (static {t_static * 1e6:.0f} us), with a "
              f"fit {t_fit * 1e3:.1f} ms -> {rows[-1]['between_fit_overhead']:+.3%} of a step", flush=True)
    return rows


def heldout_section(preset: str, batch: int | None, steps: int) -> dict:
    """heldout_cost.time_steps for one preset: no evaluation compiled / taken / not taken."""
    import heldout_cost
    from ado_jax.config import load_config
    from ado_jax.data.in_memory import InMemoryDomains
    from ado_jax.mixing.basic import balanced

    extra = [f"train.batch_size={batch}"] if batch else []
    cfg = load_config(preset, ["data.source=builtin"] + extra)
    cfg.model.vocab_size = cfg.model.vocab_size or 257
    B, T, V, D = cfg.train.batch_size, cfg.train.seq_len, cfg.model.vocab_size, 8
    rng = np.random.default_rng(0)
    domains = {f"d{i}": rng.integers(0, V, max(20 * T, 4096)) for i in range(D)}
    stream = InMemoryDomains.from_arrays(domains, B, T, V)
    held = InMemoryDomains.from_arrays(domains, B // cfg.train.grad_accum, T, V).fixed_batches(1)
    t = {"no_eval_compiled": heldout_cost.time_steps(cfg, balanced(), stream, held, steps),
         "eval_taken": heldout_cost.time_steps(cfg, heldout_cost.asking(True), stream, held, steps),
         "eval_not_taken": heldout_cost.time_steps(cfg, heldout_cost.asking(False), stream, held, steps)}
    row = dict(preset=preset, domains=D, heldout_sequences=D * B, **t,
               eval_extra_pct=100 * (t["eval_taken"] / t["no_eval_compiled"] - 1),
               idle_cond_pct=100 * (t["eval_not_taken"] / t["no_eval_compiled"] - 1))
    print(f"heldout {preset}: step {t['no_eval_compiled'] * 1e3:.1f} ms (process CPU s on CPU), +eval "
          f"{row['eval_extra_pct']:+.1f} %, idle cond {row['idle_cond_pct']:+.1f} %", flush=True)
    return row


def peer_section(preset: str, batch: int | None, rounds: int, block: int) -> dict:
    """peer_bench.compare of ours and MaxText at ``preset`` (QK-norm off: MaxText's llama2 has none)."""
    import peer_bench

    overrides = ["model.qk_norm=false"] + ([f"train.batch_size={batch}"] if batch else [])
    try:
        rows, info = peer_bench.compare({preset: (preset, overrides)}, ["maxtext"], rounds, block)
    except Exception as e:  # keep the other sections' results (MaxText's GPU/TPU path is new here)
        import traceback

        traceback.print_exc()
        why = f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        rows, info = [{"shape": preset, "codebase": "maxtext", "skipped": why}], {"maxtext": why}
    print(peer_bench.table(rows), flush=True)
    return {"peers": info, "rounds": rounds, "block": block, "rows": rows}


def markdown(result: dict) -> str:
    """The result as markdown tables, one per section."""
    s = result["setup"]
    out = [f"# device_check: {s['backend']} ({s['device_kind']} x {s['device_count']})", "",
           f"{s['when']}; jax {s['jax']}; smoke={s['smoke']}; XLA_FLAGS={s['xla_flags'] or '(unset)'}; "
           f"{s['note']}", "", "## Train step", "",
           "| preset | layers | batch x seq | params | dtype | attention | step ms | tokens/s | TFLOP/s | MFU | peak "
           "| compile s |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["step"]:
        out.append(f"| {r['preset']} | {r['n_layers']} | {r['batch']} x {r['seq_len']} | {r['params']:,} | "
                   f"{r['compute_dtype']} | {r['attention']} | {r['step_s'] * 1e3:.1f} | {r['tokens_per_s']:.0f} | "
                   f"{r['model_tflops_per_s']:.3f} | {r['mfu']:.1%} | {r['peak_source']} | {r['compile_s']:.1f} |")
    out += ["", "## Power-law fitter (cold fit vs warm refit)", "",
            "| D | cold s | warm s | cold compile s | warm compile s | max warm-cold objective | cold fallbacks |",
            "|---|---|---|---|---|---|---|"]
    for r in result["fitter"]:
        out.append(f"| {r['domains']} | {r['cold_s']:.3f} | {r['warm_s']:.3f} | {r['cold_compile_s']:.1f} | "
                   f"{r['warm_compile_s']:.1f} | {r['max_gap']:+.1e} | {r['cold_fallbacks']} |")
    out += ["", "## ADO update (isolated, jitted) vs the static mixer", "",
            "| D | static us | ADO between fits us | ADO with a fit ms | between-fit overhead | amortized (fit/1000) |",
            "|---|---|---|---|---|---|"]
    for r in result["mixer"]:
        out.append(f"| {r['domains']} | {r['static_update_s'] * 1e6:.0f} | {r['ado_between_fits_s'] * 1e6:.0f} | "
                   f"{r['ado_with_fit_s'] * 1e3:.1f} | {r['between_fit_overhead']:+.3%} | "
                   f"{r['amortized_overhead']:+.3%} |")
    h = result["heldout"]
    out += ["", "## Held-out evaluation inside the step", "",
            "| preset | held-out sequences | step ms | +eval % | idle cond % |", "|---|---|---|---|---|",
            f"| {h['preset']} | {h['heldout_sequences']} | {h['no_eval_compiled'] * 1e3:.1f} | "
            f"{h['eval_extra_pct']:+.1f} | {h['idle_cond_pct']:+.1f} |", ""]
    peer = result.get("peer")
    if peer:
        out += ["## MaxText's step beside ours (one process, interleaved)", "",
                "| shape | codebase | batch x seq | dtype | remat | tokens/s (median) | min-max | MFU | ours/this |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in peer["rows"]:
            if r.get("skipped"):
                out.append(f"| {r['shape']} | {r['codebase']} | skipped: {r['skipped']} | | | | | | |")
                continue
            ratio = f"{r['ours_over_this']:.2f}" if "ours_over_this" in r else ""
            out.append(f"| {r['shape']} | {r['codebase']} | {r['batch']} x {r['seq_len']} | {r['compute_dtype']} | "
                       f"{r['remat']} | {r['tokens_per_s']:.0f} | {r['tokens_per_s_min']:.0f}-"
                       f"{r['tokens_per_s_max']:.0f} | {r['pct_of_peak']:.1f} % | {ratio} |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="small presets and sizes (CPU, CI)")
    ap.add_argument("--presets", nargs="+", default=None, help="default: gpt2-124m 350m on accelerators, "
                    "tiny demo on CPU (tiny with --smoke)")
    ap.add_argument("--batch", type=int, default=None, help="global batch (default: 32 x devices on "
                    "accelerators for gpt2-124m, 16 x devices for 350m; the preset's on CPU)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 20; 3 with --smoke)")
    ap.add_argument("--domains", type=int, nargs="+", default=None, help="fitter and mixer domain counts")
    ap.add_argument("--profile-dir", default=None, help="write a jax.profiler trace of the first preset's "
                    "step benchmark here (view with TensorBoard / Perfetto)")
    ap.add_argument("--peer", action=argparse.BooleanOptionalAction, default=None, help="time MaxText's step "
                    "beside ours (default: on accelerators; needs Python >= 3.12 and the peer extra)")
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    backend = jax.default_backend()
    dev = jax.devices()[0]
    accel = backend != "cpu"
    presets = args.presets or (["gpt2-124m", "350m"] if accel else ["tiny"] if args.smoke else ["tiny", "demo"])
    ndev = jax.device_count()
    batch = {p: args.batch or ({"gpt2-124m": 32 * ndev, "350m": 16 * ndev}.get(p) if accel else None)
             for p in presets}
    steps = args.steps or (3 if args.smoke else 20)
    domains = args.domains or ([22] if args.smoke else [22, 256, 1024])
    out_dir = os.path.join(args.out_dir, backend)

    import fit_bench

    step_rows = step_section(presets, batch, steps, [] if args.smoke else [4, 12, 24], args.profile_dir)
    fit_rows = fit_bench.scaling(domains, 150 if args.smoke else 450, 1 if args.smoke else 3,
                                 os.path.join(out_dir, "device_check_fitter.json"))
    mixer_rows = mixer_section(domains, step_rows[0]["step_s"])
    held = heldout_section(presets[0], batch.get(presets[0]), 2 if args.smoke else 5)
    peer = (peer_section(presets[0], batch.get(presets[0]), 2 if args.smoke else 5, 2 if args.smoke else 5)
            if (accel if args.peer is None else args.peer) else None)
    result = dict(
        setup=dict(backend=backend, device_kind=getattr(dev, "device_kind", dev.platform), device_count=ndev,
                   jax=jax.__version__, python=platform.python_version(), smoke=args.smoke,
                   when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   xla_flags=os.environ.get("XLA_FLAGS", ""), cpu_count=os.cpu_count(),
                   loadavg=os.getloadavg(), total_s=None,
                   note="CPU figures on a shared machine vary with its load" if not accel else ""),
        step=step_rows, fitter=fit_rows, mixer=mixer_rows, heldout=held, peer=peer)
    result["setup"]["total_s"] = time.perf_counter() - t_start
    save_json(os.path.join(out_dir, "device_check.json"), result)
    with open(os.path.join(out_dir, "device_check.md"), "w") as f:
        f.write(markdown(result))
    print(f"wrote {out_dir}/device_check.{{json,md}} in {result['setup']['total_s']:.0f} s")
    return result


if __name__ == "__main__":
    main()
