"""Train-step throughput and model-FLOPs utilisation (MFU), side by side in one run.

    python benchmarks/step_bench.py                 # tiny + demo, 1 device and 8 fake CPU devices
    python benchmarks/step_bench.py --presets gpt2-124m --batch 16   # on a GPU/TPU
    python benchmarks/step_bench.py --presets demo --devices 1 --depths 4 12 24   # compile vs depth

Each (preset, device count) runs in its own process (the fake device count is fixed at JAX
start-up). MFU = achieved model FLOP/s / peak FLOP/s; on CPU the "peak" is the measured
throughput of a large float32 matmul on this machine (there is no datasheet number), on GPUs the
datasheet bf16 dense peak (``PEAK_BF16``). Results go to benchmarks/results/step_bench.json.

``--depths 4 12 24`` times the step's compile (first call: trace, lower, XLA compile and one
step) for each ``model.n_layers``: the blocks are stacked and run by one ``lax.scan``, so XLA
compiles one block whatever the depth, and the compile time should stay roughly flat (what grows
is the per-layer work of the first step and the parameter initialisation). ``compile_only_s`` is
the first call less one timed step. Measured (benchmarks/results/step_bench_depth.json, 1 CPU
device, shared 2-core machine): ``tiny`` 3.5 / 3.8 / 3.8 s and ``demo`` 3.7 / 3.9 / 4.2 s for
4 / 12 / 24 layers, flat within ~15 % while the step time grows 5.8x.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from results_io import save_json

# Dense bf16 peak FLOP/s per JAX device, matched in order against ``device.device_kind``.
# NVIDIA: H100 SXM 989.4 TFLOP/s and H100 PCIe 756 (H100 datasheet, "BF16 Tensor Core", the
# 1,979 / 1,513 figures there are with sparsity); H200 SXM 989 (H200 datasheet, same core as H100
# SXM); A100 312 (A100 datasheet; 624 with sparsity). Google TPUs (cloud.google.com/tpu/docs,
# "TPU v3" / "v4" / "v5e" / "v5p" system architecture pages, bf16 peak per chip): v3 123 per chip,
# and JAX exposes each of its 2 TensorCores as a device, so 61.5 per device; v4 275 and v5p 459
# per chip (one megacore device each); v5e ("TPU v5 lite") 197 per chip (one core).
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12),
             ("TPU v5 lite", 197e12), ("TPU v5e", 197e12), ("TPU v5p", 459e12), ("TPU v5", 459e12),
             ("TPU v4", 275e12), ("TPU v3", 61.5e12)]


def peak_bf16(device_kind: str) -> float:
    """Datasheet dense bf16 peak FLOP/s of one device of kind ``device_kind`` (NaN if unknown)."""
    return next((v for k, v in PEAK_BF16 if k.lower() in device_kind.lower()), float("nan"))


def cpu_matmul_peak(n: int = 2048, reps: int = 5) -> float:
    """FLOP/s of a jitted ``[n, n] @ [n, n]`` float32 matmul on this host: the CPU's "peak" (it has
    no datasheet figure)."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(reps):
        out = mm(a)
    out.block_until_ready()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def measure(preset: str, batch: int | None, steps: int, overrides: list[str]) -> dict:
    import jax

    from ado_jax import sharding, train
    from ado_jax.optimizer import make_optimizer
    from ado_jax.config import load_config
    from ado_jax.data.in_memory import InMemoryDomains
    from ado_jax.mixing.basic import balanced
    from ado_jax.models.llama import count_params, flops_per_token
    import numpy as np

    extra = [f"train.batch_size={batch}"] if batch else []
    cfg = load_config(preset, extra + overrides)
    cfg.model.vocab_size = cfg.model.vocab_size or 257  # "from the data": the byte corpus tokenizer
    T, B, V = cfg.train.seq_len, cfg.train.batch_size, cfg.model.vocab_size
    rng = np.random.default_rng(0)
    stream = InMemoryDomains.from_arrays({f"d{i}": rng.integers(0, V, 200_000) for i in range(4)}, B, T, V)
    mesh = sharding.make_mesh(cfg.mesh)
    mixer, opt = balanced(), make_optimizer(cfg.train)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    state = train.create_state(cfg.model, opt, mixer, stream.init(k2), 4, k1, mesh)
    step = train.make_train_step(cfg.train, opt, mixer, mesh, train.state_shardings(state, mesh), 4)
    t0 = time.perf_counter()
    state, m = step(state, stream)
    jax.block_until_ready(m["loss"])
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, stream)
    jax.block_until_ready(m["loss"])
    dt = (time.perf_counter() - t0) / steps

    device = jax.devices()[0]
    kind = getattr(device, "device_kind", device.platform)
    if device.platform == "cpu":
        peak = cpu_matmul_peak()  # whole host: all fake devices share its cores
        peak_src = "measured 2048^2 f32 matmul on this host"
    else:
        peak = peak_bf16(kind) * jax.device_count()
        peak_src = f"datasheet bf16 dense peak for {kind} x {jax.device_count()}"
    flops = flops_per_token(cfg.model, T) * B * T
    model = state.model
    return {"preset": preset, "n_layers": cfg.model.n_layers,
            "devices": jax.device_count(), "device_kind": kind, "batch": B, "seq_len": T,
            "params": count_params(model), "compute_dtype": cfg.model.compute_dtype,
            "attention": cfg.model.attention, "step_s": dt,
            "compile_s": compile_s, "compile_only_s": max(compile_s - dt, 0.0),
            "tokens_per_s": B * T / dt, "model_tflops_per_s": flops / dt / 1e12,
            "peak_tflops_per_s": peak / 1e12, "peak_source": peak_src, "mfu": flops / dt / peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "demo"], help="config presets to time")
    p.add_argument("--devices", nargs="+", type=int, default=[1, 8], help="fake CPU device counts (CPU only)")
    p.add_argument("--steps", type=int, default=10, help="timed steps after the compile step")
    p.add_argument("--batch", type=int, default=None, help="override the preset's global batch size")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    p.add_argument("--depths", nargs="+", type=int, default=None,
                   help="also time the compile for each model.n_layers (e.g. 4 12 24)")
    p.add_argument("--out", default="benchmarks/results/step_bench.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.presets[0], args.batch, args.steps, args.overrides)))
        return
    rows = []
    on_accel = os.environ.get("JAX_PLATFORMS", "") not in ("", "cpu")
    depths = args.depths or [None]
    for preset, depth in [(p, d) for p in args.presets for d in depths]:
        for n in [None] if on_accel else args.devices:
            env = dict(os.environ)
            if n is not None:
                env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
            cmd = [sys.executable, __file__, "--child", "--presets", preset, "--steps", str(args.steps)]
            cmd += ["--batch", str(args.batch)] if args.batch else []
            cmd += sum([["--set", o] for o in args.overrides + ([f"model.n_layers={depth}"] if depth else [])], [])
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.returncode:
                print(out.stderr[-2000:], file=sys.stderr)
                raise SystemExit(f"{preset} on {n} devices failed")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'preset':10} {'layers':>6} {'dev':>3} {'batch':>5} {'params':>10} {'step ms':>9} {'tok/s':>10}"
          f" {'TFLOP/s':>8} {'MFU':>6} {'compile s':>9}")
    for r in rows:
        print(f"{r['preset']:10} {r['n_layers']:>6} {r['devices']:>3} {r['batch']:>5} {r['params']:>10,} "
              f"{r['step_s'] * 1e3:>9.1f} {r['tokens_per_s']:>10.0f} {r['model_tflops_per_s']:>8.3f} {r['mfu']:>6.1%}"
              f" {r['compile_s']:>9.1f}")
    save_json(args.out, rows)


if __name__ == "__main__":
    main()
