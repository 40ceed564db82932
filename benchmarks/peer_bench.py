"""Our train step against an independent JAX Llama's train step of the same shape, in one process.

    pip install penzai && python benchmarks/peer_bench.py          # demo + gpt2-124m shapes
    python benchmarks/peer_bench.py --shapes demo --rounds 9

The peer is **penzai** (google-deepmind/penzai, ``pip install penzai``; the version is printed and
saved): its Llama-like transformer (``build_llamalike_transformer``: RMSNorm, RoPE, SwiGLU, GQA,
a ``LayerStack`` scanned over the blocks) trained by its own ``StatefulTrainer`` with donated
state, AdamW and next-token cross-entropy. MaxText, the first choice, needs Python >= 3.12 and
this project runs on 3.11. What was adapted to make the shapes equal: same width, depth, heads,
kv heads, SwiGLU width, vocabulary, batch and sequence; float32 parameters and activations; tied
embeddings (penzai then scales the input embeddings by sqrt(d), one multiply). Ours runs its
full step — mixer, tracker and in-step sampling included — without QK-norm (penzai's Llama has
none) and with its CPU preset's remat; penzai keeps no remat (its default). Reported: median
tokens/s over interleaved rounds (min/max), % of a measured float32 matmul peak, and our ratio.
About 4 minutes on 2 CPU cores. Writes benchmarks/results/peer_bench.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from remat_bench import build
from results_io import save_json
from step_bench import cpu_matmul_peak

# Shapes: (our preset, --set overrides). gpt2-124m with a reduced batch, float32, on CPU.
SHAPES = {"demo": ("demo", ["model.qk_norm=false"]),
          "gpt2-124m": ("gpt2-124m", ["model.qk_norm=false", "train.batch_size=4", "train.seq_len=256",
                                      "model.compute_dtype=float32", "model.remat=full"])}


def ours(preset: str, overrides: list[str]):
    """Our step (``remat_bench.build`` with ``overrides``): a ``run()`` closure and tokens/step."""
    import ado_jax.config as config

    load = config.load_config
    config.load_config = lambda p, o=(): load(p, [*o, *overrides])  # build() loads the preset
    try:
        step, state, stream, tokens = build(preset, None, None)
    finally:
        config.load_config = load
    box = {"state": state}

    def run(n: int):
        for _ in range(n):
            box["state"], m = step(box["state"], stream)
        jax.block_until_ready(m["loss"])

    cfg = config.load_config(preset, ["mesh.data=1", *overrides])
    cfg.model.vocab_size = cfg.model.vocab_size or 257
    return run, tokens, cfg


def peer(cfg):
    """penzai's Llama-like model and trainer at ``cfg``'s shape: a ``run()`` closure."""
    from penzai import pz
    from penzai.models.transformer.variants import llamalike_common as ll
    from penzai.toolshed import basic_training

    m, t = cfg.model, cfg.train
    pcfg = ll.LlamalikeTransformerConfig(
        num_kv_heads=m.n_kv_heads, query_head_multiplier=m.n_heads // m.n_kv_heads, embedding_dim=m.d_model,
        projection_dim=m.d_model // m.n_heads, mlp_hidden_dim=m.ff_dim, num_decoder_blocks=m.n_layers,
        vocab_size=m.vocab_size, mlp_variant="swiglu", tie_embedder_and_logits=True, rms_norm_eps=m.norm_eps,
        parameter_dtype=jnp.float32, activation_dtype=jnp.float32, use_layer_stack=True)
    model = ll.build_llamalike_transformer(pcfg, init_base_rng=jax.random.key(0))

    def loss_fn(*, model, state, rng, inputs, targets):
        logits = model(inputs).unwrap("batch", "seq", "vocabulary")
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1)), state, None

    trainer = basic_training.StatefulTrainer.build(
        root_rng=jax.random.key(1), model=model, optimizer_def=optax.adamw(t.lr, t.b1, t.b2),
        loss_fn=loss_fn, donate_states=True)
    rng = np.random.default_rng(0)
    seqs = jnp.asarray(rng.integers(0, m.vocab_size, (t.batch_size, t.seq_len + 1)), jnp.int32)
    inputs, targets = pz.nx.wrap(seqs[:, :-1]).tag("batch", "seq"), seqs[:, 1:]

    def run(n: int):
        for _ in range(n):
            trainer.step(inputs=inputs, targets=targets)
        jax.block_until_ready(trainer.state.value.opt_state)

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (the median is over these)")
    p.add_argument("--block", type=int, default=3, help="steps per codebase per round")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "peer_bench.json"))
    args = p.parse_args()
    import penzai

    from ado_jax.models.llama import flops_per_token

    peak = cpu_matmul_peak()
    rows = []
    for shape in args.shapes:
        preset, overrides = SHAPES[shape]
        run_ours, tokens, cfg = ours(preset, overrides)
        runs = {"ado_jax": run_ours, f"penzai {penzai.__version__}": peer(cfg)}
        for run in runs.values():
            run(1)  # compile
        times = {k: [] for k in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                t0 = time.perf_counter()
                run(args.block)
                times[name].append((time.perf_counter() - t0) / args.block)
        flops = flops_per_token(cfg.model, cfg.train.seq_len) * tokens
        for name, ts in times.items():
            med = statistics.median(ts)
            rows.append({"shape": shape, "codebase": name, "tokens_per_s": tokens / med,
                         "tokens_per_s_min": tokens / max(ts), "tokens_per_s_max": tokens / min(ts),
                         "pct_of_matmul_peak": 100 * flops / med / peak})
        ours_row, peer_row = rows[-2], rows[-1]
        ours_row["ratio_to_peer"] = ours_row["tokens_per_s"] / peer_row["tokens_per_s"]
    print(f"{'shape':10} {'codebase':14} {'tok/s':>9} {'(min-max)':>17} {'% peak':>7} {'ours/peer':>9}")
    for r in rows:
        ratio = f"{r['ratio_to_peer']:.2f}" if "ratio_to_peer" in r else ""
        print(f"{r['shape']:10} {r['codebase']:14} {r['tokens_per_s']:9.0f} {r['tokens_per_s_min']:8.0f}-"
              f"{r['tokens_per_s_max']:<8.0f} {r['pct_of_matmul_peak']:7.1f} {ratio:>9}")
    save_json(args.out, {"backend": jax.default_backend(), "machine": platform.processor() or platform.machine(),
                         "cpus": os.cpu_count(), "peer": f"penzai {penzai.__version__}", "jax": jax.__version__,
                         "matmul_peak_tflops": peak / 1e12, "rounds": args.rounds, "block": args.block,
                         "rows": rows})


if __name__ == "__main__":
    main()
