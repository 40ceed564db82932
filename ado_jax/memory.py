"""How much memory a run needs, estimated before anything is allocated, against what the devices have.

The estimate per device is the train state (parameters, gradients, AdamW's two moments and the
update, all in ``param_dtype``, sharded over the FSDP and tensor axes) plus the activations the backward pass
keeps for one micro-batch (per the ``remat`` policy, the batch split over the data and FSDP axes)
plus the logits and their gradient. It is a planning figure, not XLA's allocation: compiled
programs add temporaries and may fuse some buffers away. ``benchmarks/memory_estimate.py``
compares it with XLA's own memory analysis of the compiled step.

Available memory is each accelerator's ``bytes_limit``; on CPU every device shares the host's
RAM, so the estimates of all devices are summed and compared with the host's available memory.
"""

from __future__ import annotations

import math
import os

import equinox as eqx
import jax
import numpy as np

from ado_jax.config import Config
from ado_jax.models.llama import Llama

GiB = 1024**3
# XLA's temporaries beside the kept activations (fusion outputs, the backward's buffers): on CPU the
# compiled step needs 1.2-1.35x the activations counted below (benchmarks/memory_estimate.py).
XLA_OVERHEAD = 1.3
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def param_count(cfg: Config) -> int:
    """Number of model parameters (from the model's abstract shapes: nothing is allocated)."""
    shapes = eqx.filter_eval_shape(Llama, cfg.model, jax.random.PRNGKey(0))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes) if isinstance(x, jax.ShapeDtypeStruct))


def _activation_values_per_token(cfg: Config) -> tuple[float, float]:
    """``(values kept per token per layer in compute dtype, float32 values per token per layer)``."""
    m = cfg.model
    D, F, H, T = m.d_model, m.ff_dim, m.n_heads, cfg.train.seq_len
    KE = m.n_kv_heads * (D // m.n_heads)
    if m.remat == "full":
        return D, 0.0  # only each block's input; one block is recomputed at a time (added below)
    if m.remat in ("dots", "dots_no_batch"):
        return 3 * D + 2 * KE + 3 * F, (H * T if m.remat == "dots" else 0.0)  # matmul outputs
    return 9 * D + 3 * KE + 4 * F, 2.0 * H * T  # everything: norms, q/k/v, rotary, scores, probs, SwiGLU


def estimate(cfg: Config, mesh_shape: tuple[int, int, int]) -> dict:
    """The per-device memory estimate in bytes: ``{"params", "state", "activations", "logits",
    "total", "param_count"}``, for ``mesh_shape = (data, fsdp, tensor)``."""
    data, fsdp, tensor = mesh_shape
    m, t = cfg.model, cfg.train
    n = param_count(cfg)
    pbytes, cbytes = BYTES[m.param_dtype], BYTES[m.compute_dtype]
    shards = fsdp * tensor
    state = 5 * n * pbytes / shards  # params, grads, two AdamW moments, the update
    tokens = t.batch_size // t.grad_accum * t.seq_len / (data * fsdp)
    kept, kept32 = _activation_values_per_token(cfg)
    acts = tokens * m.n_layers * (kept * cbytes + kept32 * 4) / tensor
    if m.remat == "full":  # the block being recomputed holds its whole activations once
        full, full32 = 9 * m.d_model + 4 * m.ff_dim, 2.0 * m.n_heads * t.seq_len
        acts += tokens * (full * cbytes + full32 * 4) / tensor
    logits = 1.5 * tokens * m.vocab_size * 4 / tensor  # float32 logits and their gradient, partly fused
    acts = XLA_OVERHEAD * acts
    total = state + acts + logits
    return {"param_count": n, "params": n * pbytes / shards, "state": state, "activations": acts,
            "logits": logits, "total": total}


def host_available_bytes() -> int:
    """The host's available RAM (``MemAvailable`` of /proc/meminfo; total RAM elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check(cfg: Config, mesh, force: bool = False) -> dict:
    """Raises MemoryError (with the estimate and what the devices have) when the run will not
    fit, unless ``force``; returns the estimate (``estimate`` plus ``available`` and ``needed``,
    both in bytes over the compared devices)."""
    shape = tuple(mesh.shape[a] for a in ("data", "fsdp", "tensor"))
    est = estimate(cfg, shape)
    devices = list(np.asarray(mesh.devices).flat)
    if devices[0].platform == "cpu":
        needed, available, where = est["total"] * len(devices), host_available_bytes(), "host RAM available"
    else:
        stats = devices[0].memory_stats() or {}
        needed, available = est["total"], stats.get("bytes_limit", 0)
        where = f"{devices[0].device_kind} memory per device"
    est.update(needed=needed, available=available)
    if available and needed > 0.9 * available and not force:
        remat = "" if cfg.model.remat == "full" else ", remat=full"
        raise MemoryError(
            f"this run needs about {needed / GiB:.1f} GiB ({est['param_count'] / 1e6:.1f}M parameters: state "
            f"{est['state'] / GiB:.2f} GiB, activations {est['activations'] / GiB:.2f} GiB, logits "
            f"{est['logits'] / GiB:.2f} GiB per device, over {len(devices)} device(s)) but {where} is "
            f"{available / GiB:.1f} GiB; use a smaller model or batch{remat}"
            ", more devices, or --force to try anyway")
    return est
