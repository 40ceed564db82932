"""One layer's attention on the CPU: ``attention_by_blocks`` (``xla_blocks``, what the harness uses
on CPU) against XLA's kernel (``xla``) and against no attention, on the shapes harness_bench.py
sends through the model.

    python benchmarks/attention_bench.py [--rounds 7] [--block 64]

Two inputs, float32, 4 heads of 64 (harness_bench's model): ``packed``, the first packed batch of
harness_bench's 512 HellaSwag-shaped byte requests (``[32, 1024]`` rows of shared-context groups,
its real ``SegmentMask``), and ``causal``, ``[32, 512]`` full rows with the causal mask alone
(rolling windows). Random queries, keys and values. Each kernel is compiled first, then timed over
``--rounds`` interleaved rounds (median, min, max); ``gflop_read`` counts the multiply-adds of the
scores a query actually reads (its own sequence's earlier tokens), ``gflop_computed`` those the
kernel computes (whole blocks, or XLA's whole ``[T, T]``). About 1 minute on 2 CPU cores.
Results: benchmarks/results/attention_bench.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from results_io import save_json

from ado_jax.models.attention import SegmentMask, attention, attention_by_blocks, first_key_blocks



def packed_batch():
    """``(group_BT, segment_BT)`` of the first packed batch of harness_bench's byte requests."""
    from harness_bench import requests

    from ado_jax.data.tokenizer import ByteTokenizer
    from ado_jax.harness import packing
    from ado_jax.harness.lm import JaxLM
    from ado_jax.models.llama import Llama, ModelConfig

    cfg = ModelConfig(vocab_size=257, d_model=256, n_layers=1, n_heads=4, n_kv_heads=4, max_seq_len=512,
                      compute_dtype="float32", remat="none")
    lm = JaxLM(Llama(cfg, jax.random.PRNGKey(0)), ByteTokenizer(), batch_size=32)
    pairs = [lm._encode_pair(*r.args) for r in requests(512, 0)[0]]
    groups, rows, lengths = lm.runner.pack(packing.group_requests(pairs, lm.max_length))
    T, B, idx = next(iter(lm.runner._batches(lengths, lm.runner.row_buckets)))
    _, _, group, segment, *_ = packing.layout_rows(groups, [rows[i] for i in idx], B, T)
    return group, segment


def flops(group_BT: np.ndarray, segment_BT: np.ndarray, E: int, H: int, block: int) -> tuple[float, float]:
    """``(read, computed)`` attention GFLOP: scores read by real queries, and those of the blocks
    ``attention_by_blocks`` visits (``first_key_blocks``; both QK^T and PV, 4 flops per score and
    head dim)."""
    B, T = group_BT.shape
    read = 0
    for b in range(B):  # a row at a time: [T, T] masks
        reads = np.asarray(SegmentMask(group_BT[b:b + 1], segment_BT[b:b + 1]).dense()[0]) & np.tri(T, dtype=bool)
        read += int(reads[group_BT[b] >= 0].sum())
    first_Bn = np.asarray(first_key_blocks(jnp.asarray(group_BT), block))
    visited = int(np.sum(np.arange(T // block)[None] + 1 - first_Bn))  # blocks first..i of query block i
    return 4 * H * E * read / 1e9, 4 * H * E * visited * block * block / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 "results/attention_bench.json"))
    args = p.parse_args()
    H, E = 4, 64
    group, segment = packed_batch()
    inputs = {"packed": (group, segment), "causal": (np.zeros((32, 512), np.int32),) * 2}
    kernels = {"xla": lambda q, k, v, m: attention(q, k, v, "xla", m),
               "xla_blocks": lambda q, k, v, m: attention_by_blocks(q, k, v, m, block=args.block),
               "none": lambda q, k, v, m: q}
    result = {"heads": H, "head_dim": E, "block": args.block, "rounds": args.rounds, "cpu_count": os.cpu_count(),
              "jax": jax.__version__, "load_average_before": os.getloadavg()}
    for name, (g, s) in inputs.items():
        B, T = g.shape
        rng = np.random.default_rng(0)
        q, k, v = (jnp.asarray(rng.normal(size=(B, T, H, E)), jnp.float32) for _ in range(3))
        mask = SegmentMask(jnp.asarray(g), jnp.asarray(s)) if name == "packed" else None
        compiled = {kn: jax.jit(f).lower(q, k, v, mask).compile() for kn, f in kernels.items()}
        want = compiled["xla"](q, k, v, mask)
        real = np.asarray(g >= 0)
        diff = float(jnp.max(jnp.abs(compiled["xla_blocks"](q, k, v, mask) - want)[real]))
        times = {kn: [] for kn in kernels}
        for _ in range(args.rounds):
            for kn, f in compiled.items():
                start = time.perf_counter()
                f(q, k, v, mask).block_until_ready()
                times[kn].append(time.perf_counter() - start)
        read, visited = flops(g, s, E, H, args.block)
        row = {"shape_BT": [B, T], "gflop_read": read, "gflop_computed": {"xla": 4 * H * E * B * T * T / 1e9,
                                                                         "xla_blocks": visited},
               "max_abs_diff_blocks_vs_xla": diff}
        for kn, ts in times.items():
            row[kn] = {"median_ms": 1e3 * statistics.median(ts), "min_ms": 1e3 * min(ts), "max_ms": 1e3 * max(ts)}
        row["speedup_blocks_over_xla"] = row["xla"]["median_ms"] / row["xla_blocks"]["median_ms"]
        result[name] = row
        print(f"{name} [{B}, {T}]: xla {row['xla']['median_ms']:.0f} ms, xla_blocks "
              f"{row['xla_blocks']['median_ms']:.0f} ms ({row['speedup_blocks_over_xla']:.2f}x), no attention "
              f"{row['none']['median_ms']:.1f} ms; GFLOP read {read:.1f}, computed by blocks {visited:.1f}, "
              f"by xla {row['gflop_computed']['xla']:.1f}; max |diff| {diff:.1e}")
    save_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
