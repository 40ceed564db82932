"""Our train step against an independent JAX Llama's train step of the same shape, in one process.

    pip install -e '.[peer]' && python benchmarks/peer_bench.py    # penzai; demo + gpt2-124m shapes
    python benchmarks/peer_bench.py --peer maxtext                # Python >= 3.12 (MaxText's floor)
    python benchmarks/peer_bench.py --peer penzai maxtext --quick # does every step compile and run?

Peers, each timed interleaved with ours (``--block`` steps of each in turn, ``--rounds`` rounds):

* **penzai** (google-deepmind/penzai): its Llama-like transformer (``build_llamalike_transformer``:
  RMSNorm, RoPE, SwiGLU, GQA, a ``LayerStack`` scanned over the blocks) trained by its own
  ``StatefulTrainer`` with donated state, AdamW and next-token cross-entropy. Matched: width,
  depth, heads, kv heads, SwiGLU width, vocabulary, batch and sequence; float32 parameters and
  activations; tied embeddings (penzai then scales the input embeddings by sqrt(d), one
  multiply). Not matched: penzai keeps no remat (its default), ours its preset's.
* **maxtext** (AI-Hypercomputer/maxtext): its own llama2 decoder built by its own config system
  and its own jitted train step (``benchmarks/maxtext_peer.py``, which lists what is matched
  and what is not). On Python < 3.12 its row is skipped with the reason.

Ours runs its full step — mixer, tracker and in-step sampling included — without QK-norm
(neither peer has it) and with the preset's remat. Reported per shape and codebase: median
tokens/s over the rounds with min/max, the loss at the first and last step, % of the peak (CPU:
a measured float32 matmul; accelerators: the datasheet bf16 peak, i.e. MFU), and ours/peer of
the medians (and of the minima). penzai: about 4 minutes on 2 CPU cores; MaxText about as long.
Writes benchmarks/results/peer_bench.json (penzai alone) or peer_bench_<peers>.json.
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

import maxtext_peer
from remat_bench import build
from results_io import save_json
from step_bench import cpu_matmul_peak

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

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

    def run(n: int) -> float:
        for _ in range(n):
            box["state"], m = step(box["state"], stream)
        return float(m["loss"])

    cfg = config.load_config(preset, ["mesh.data=1", *overrides])
    cfg.model.vocab_size = cfg.model.vocab_size or 257
    return run, tokens, cfg


def penzai_peer(cfg):
    """penzai's Llama-like model and trainer at ``cfg``'s shape: a ``run(n) -> loss`` closure."""
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
        loss = -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))
        return loss, state, {"loss": loss}

    trainer = basic_training.StatefulTrainer.build(
        root_rng=jax.random.key(1), model=model, optimizer_def=optax.adamw(t.lr, t.b1, t.b2),
        loss_fn=loss_fn, donate_states=True)
    rng = np.random.default_rng(0)
    seqs = jnp.asarray(rng.integers(0, m.vocab_size, (t.batch_size, t.seq_len + 1)), jnp.int32)
    inputs, targets = pz.nx.wrap(seqs[:, :-1]).tag("batch", "seq"), seqs[:, 1:]

    def run(n: int) -> float:
        for _ in range(n):
            aux = trainer.step(inputs=inputs, targets=targets)
        return float(aux["loss"])

    run.remat = "none"  # penzai's default
    return run


def _penzai_skip_reason():
    try:
        import penzai  # noqa: F401
    except ImportError as e:
        return f"penzai is not importable ({e}); pip install -e '.[peer]'"
    return None


def _penzai_version():
    import penzai
    return f"penzai {penzai.__version__}"


# name -> (skip_reason() -> str | None, version() -> str, build(cfg) -> run closure)
PEERS = {"penzai": (_penzai_skip_reason, _penzai_version, penzai_peer),
         "maxtext": (maxtext_peer.skip_reason, maxtext_peer.version, maxtext_peer.build)}


def compare(shapes: dict, peers: list[str], rounds: int, block: int) -> tuple[list[dict], dict]:
    """Ours and each available peer at each of ``shapes`` (name -> (preset, overrides)), ``block``
    steps each in turn for ``rounds`` rounds: one row per shape and codebase (a skipped peer: one
    row with its reason), and ``{peer: version or skip reason}``."""
    from ado_jax.models.llama import flops_per_token
    from step_bench import peak_bf16

    skipped = {p: PEERS[p][0]() for p in peers}
    for p, why in skipped.items():
        if why:
            print(f"{p}: skipped: {why}", flush=True)
    live = [p for p in peers if not skipped[p]]
    info = {p: skipped[p] or PEERS[p][1]() for p in peers}
    rows = [{"shape": s, "codebase": p, "skipped": skipped[p]} for s in shapes for p in peers if skipped[p]]
    if not live:
        return rows, info
    accel = jax.default_backend() != "cpu"
    peak = peak_bf16(jax.devices()[0].device_kind) if accel else cpu_matmul_peak()
    for shape, (preset, overrides) in shapes.items():
        run_ours, tokens, cfg = ours(preset, overrides)
        run_ours.remat = cfg.model.remat
        runs = {"ado_jax": run_ours, **{info[p]: PEERS[p][2](cfg) for p in live}}
        first = {name: run(1) for name, run in runs.items()}  # compile; the loss at step 1
        print(f"{shape}: loss at the first step " + ", ".join(f"{k} {v:.3f}" for k, v in first.items()), flush=True)
        times, last = {k: [] for k in runs}, {}
        for _ in range(rounds):
            for name, run in runs.items():
                t0 = time.perf_counter()
                last[name] = run(block)
                times[name].append((time.perf_counter() - t0) / block)
        flops = flops_per_token(cfg.model, cfg.train.seq_len) * tokens
        base = len(rows)
        for name, ts in times.items():
            med = statistics.median(ts)
            rows.append({"shape": shape, "codebase": name, "tokens_per_s": tokens / med,
                         "tokens_per_s_min": tokens / max(ts), "tokens_per_s_max": tokens / min(ts),
                         "pct_of_peak": 100 * flops / med / peak, "loss_first": first[name],
                         "loss_last": last[name], "batch": cfg.train.batch_size, "seq_len": cfg.train.seq_len,
                         "compute_dtype": cfg.model.compute_dtype, "remat": getattr(runs[name], "remat", None)})
        for r in rows[base + 1:]:
            r["ours_over_this"] = rows[base]["tokens_per_s"] / r["tokens_per_s"]
            r["ours_over_this_min"] = rows[base]["tokens_per_s_min"] / r["tokens_per_s_min"]
    return rows, info


def table(rows: list[dict]) -> str:
    out = [f"{'shape':10} {'codebase':16} {'tok/s':>9} {'(min-max)':>17} {'% peak':>7} {'ours/this':>9}"]
    for r in rows:
        if r.get("skipped"):
            out.append(f"{r['shape']:10} {r['codebase']:16} skipped: {r['skipped']}")
            continue
        ratio = f"{r['ours_over_this']:.2f}" if "ours_over_this" in r else ""
        out.append(f"{r['shape']:10} {r['codebase']:16} {r['tokens_per_s']:9.0f} {r['tokens_per_s_min']:8.0f}-"
                   f"{r['tokens_per_s_max']:<8.0f} {r['pct_of_peak']:7.1f} {ratio:>9}")
    return "\n".join(out)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer", nargs="+", default=["penzai"], choices=list(PEERS), help="peers to time (default penzai)")
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds (the median is over these)")
    p.add_argument("--block", type=int, default=3, help="steps per codebase per round")
    p.add_argument("--quick", action="store_true", help="a check that every step compiles and runs: the demo "
                   "shape, 2 rounds of 1 step (no figure to keep; writes nothing unless --out is given)")
    p.add_argument("--out", default=None, help="default benchmarks/results/peer_bench.json (penzai alone), "
                   "else peer_bench_<peers>.json")
    args = p.parse_args(argv)
    if args.quick:
        args.shapes, args.rounds, args.block = ["demo"], 2, 1
    rows, info = compare({s: SHAPES[s] for s in args.shapes}, args.peer, args.rounds, args.block)
    print(table(rows))
    result = {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "python": platform.python_version(), "jax": jax.__version__, "peers": info,
              "peak": "measured float32 matmul" if jax.default_backend() == "cpu" else "datasheet bf16 dense",
              "rounds": args.rounds, "block": args.block, "quick": args.quick, "rows": rows}
    out = args.out or (None if args.quick else os.path.join(
        RESULTS, "peer_bench.json" if args.peer == ["penzai"] else f"peer_bench_{'_'.join(args.peer)}.json"))
    if out and any(not r.get("skipped") for r in rows):
        save_json(out, result)
        print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
