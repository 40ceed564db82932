"""Greedy generation (the harness's ``generate_until``) with the key/value cache
(``BucketedRunner.extend``, ``ado_jax.models.decode``) against a whole forward pass per new token
(what ``extend`` did before the cache), on the same model and contexts, interleaved in one process.

    python benchmarks/generate_bench.py [--contexts 32] [--new 64] [--d-model 256] [--layers 4]

The model is harness_bench.py's (byte vocabulary, float32, ``--max-seq-len`` 512), random weights;
contexts of 200-300 tokens (one bucket, 384, with 64 new), ``--new`` tokens each, one bucketed
batch. Both paths are compiled first, then timed over ``--rounds`` interleaved rounds (median; min
and max); the two must produce the same tokens. About 8 minutes on 2 CPU cores with the defaults
(the uncached path is most of it).
Results: benchmarks/results/generate_bench.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from results_io import save_json


@eqx.filter_jit
def _uncached_loop(model, tokens_BT, lengths_B, new: int):
    """``new`` greedy tokens appended at ``lengths_B``, a whole forward pass per token."""
    rows_B = jnp.arange(tokens_BT.shape[0])

    def step(_, carry):
        tokens_BT, lengths_B = carry
        last_BV = jnp.take_along_axis(model(tokens_BT), (lengths_B - 1)[:, None, None], axis=1)[:, 0]
        return tokens_BT.at[rows_B, lengths_B].set(jnp.argmax(last_BV, -1).astype(jnp.int32)), lengths_B + 1

    return jax.lax.fori_loop(0, new, step, (tokens_BT, lengths_B))[0]


def uncached(model, contexts, new: int, T: int) -> list[list[int]]:
    """Greedy tokens by a whole forward pass per new token (one jitted loop over the batch,
    compiled once: the timed rounds reuse it)."""
    tokens_BT = np.zeros((len(contexts), T), np.int32)
    for row, c in enumerate(contexts):
        tokens_BT[row, :len(c)] = c
    lengths_B = np.array([len(c) for c in contexts], np.int32)
    out = np.asarray(_uncached_loop(model, jnp.asarray(tokens_BT), jnp.asarray(lengths_B), new))
    return [out[row, len(c):len(c) + new].tolist() for row, c in enumerate(contexts)]


def main() -> None:
    from ado_jax.config import load_config
    from ado_jax.harness.batching import BucketedRunner
    from ado_jax.models.llama import Llama

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--contexts", type=int, default=32)
    p.add_argument("--new", type=int, default=64, help="new tokens per context")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 "results", "generate_bench.json"))
    args = p.parse_args()
    cfg = load_config("demo", [f"model.d_model={args.d_model}", f"model.n_layers={args.layers}",
                               f"model.max_seq_len={args.max_seq_len}", "model.vocab_size=256",
                               "model.compute_dtype=float32", "model.n_heads=4", "model.n_kv_heads=4"]).model
    model = Llama(cfg, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    contexts = [rng.integers(0, 256, rng.integers(200, 301)).tolist() for _ in range(args.contexts)]
    runner = BucketedRunner(model, args.max_seq_len, batch_size=args.contexts, gen_chunk=args.new)
    (T,) = {T for T, _, _ in runner._batches([len(c) + args.new for c in contexts])}
    paths = {"cached": lambda: runner.extend(contexts, args.new),
             "uncached": lambda: uncached(model, contexts, args.new, T)}
    outputs = {name: fn() for name, fn in paths.items()}  # compiles
    same = outputs["cached"] == outputs["uncached"]
    times = {name: [] for name in paths}
    for _ in range(args.rounds):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    n_tokens = args.contexts * args.new
    rows = [{"path": name, "s": statistics.median(t), "s_min": min(t), "s_max": max(t),
             "new_tokens_per_s": n_tokens / statistics.median(t)} for name, t in times.items()]
    for r in rows:
        r["speedup_over_uncached"] = rows[1]["s"] / r["s"]
    print(f"{args.contexts} contexts x {args.new} new tokens, bucket {T}, d_model {args.d_model}, "
          f"{args.layers} layers; same tokens: {same}")
    for r in rows:
        print(f"{r['path']:<10}{r['s']:>8.2f} s ({r['s_min']:.2f}-{r['s_max']:.2f}){r['new_tokens_per_s']:>10.0f} tok/s"
              f"{r['speedup_over_uncached']:>7.2f}x")
    save_json(args.out, {"backend": jax.default_backend(), "cpus": os.cpu_count(), "jax": jax.__version__,
                         "contexts": args.contexts, "new": args.new, "bucket": T, "d_model": args.d_model,
                         "layers": args.layers, "rounds": args.rounds, "same_tokens": same, "rows": rows})


if __name__ == "__main__":
    main()
