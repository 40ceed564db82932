"""Requests per second of our LM Evaluation Harness adapter (``ado_jax.harness.lm.JaxLM``, the
jitted model) against lm-eval's Hugging Face backend (``hf``: transformers + torch) on the same
model, exported with ``ado-jax export --format hf``, on the CPU.

    python benchmarks/harness_bench.py [--requests 512] [--d-model 256] [--layers 4] [--bpe-vocab 8192]

About 4 minutes on a quiet 2-core machine with the defaults. Needs lm-eval, torch, transformers,
accelerate, safetensors and tokenizers (CI's parity step installs them). The requests are
HellaSwag-shaped ``loglikelihood`` requests (a 150-400 byte context, four 20-80 byte
continuations each, all four with the identical context string, as lm-eval's requests of one
document are; the byte tokenizer, or with ``--bpe-vocab N`` a BPE of N ids trained on the same
text, where the output projection weighs more) and, separately, ``loglikelihood_rolling`` over
1-3 KB texts (windows of ``max_seq_len`` tokens). Both models compute in float32 and are given
the same batch size. Ours is timed twice: the first pass includes the compilations (one per
bucket length), the second is what a long evaluation sees. ``ours_unpacked`` is
``JaxLM(pack=False)`` (one padded row per request, no shared-prefix packing), cold and warm;
``tokens`` counts the positions each of our two paths runs through the model (real, and padded
to the batch shapes). One run each (the issue asks for one run), interleaved in one process;
wall time and process CPU time. Results: benchmarks/results/harness_bench.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys
import tempfile
import time

import jax
import numpy as np

from results_io import save_json

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _text(rng: np.random.Generator, lo: int, hi: int, corpus: str) -> str:
    start = int(rng.integers(0, len(corpus) - hi))
    return corpus[start:start + int(rng.integers(lo, hi))]


def requests(n: int, rolling: int, seed: int = 0):
    """``(loglikelihood instances [n], rolling instances [rolling])`` cut from Python's own docs."""
    from lm_eval.api.instance import Instance
    from pydoc_data import topics

    corpus = " ".join(" ".join(topics.topics[k].split()) for k in sorted(topics.topics))
    corpus = corpus.encode("ascii", "ignore").decode()
    rng = np.random.default_rng(seed)
    ll = []
    while len(ll) < n:
        context = _text(rng, 150, 400, corpus)
        for _ in range(4):
            ll.append(Instance("loglikelihood", {}, (context, " " + _text(rng, 20, 80, corpus)), len(ll)))
    roll = [Instance("loglikelihood_rolling", {}, (_text(rng, 1000, 3000, corpus),), i) for i in range(rolling)]
    return ll[:n], roll


def token_counts(lm, instances) -> dict:
    """Positions the model runs for ``instances`` (loglikelihood): packed (``runner.score_packed``)
    and one row per request (``runner.score``), without and with the padding of the batch shapes."""
    from ado_jax.harness import batching, packing

    runner, L = lm.runner, lm.max_length
    pairs = [lm._encode_pair(*r.args) for r in instances]
    lengths = [len((c + k)[-(L + 1):]) - 1 for c, k in pairs]
    groups, _, rows = runner.pack(packing.group_requests(pairs, L))
    padded = lambda ls, buckets=None: sum(T * B for T, B, _ in runner._batches(ls, buckets))
    assert isinstance(runner, batching.BucketedRunner)
    out = {"unpacked": {"real": sum(lengths), "padded": padded(lengths), "rows": len(lengths),
                        "est_flops": runner.cost(lengths)},
           "packed": {"real": sum(rows), "padded": padded(rows, runner.row_buckets), "rows": len(rows),
                      "groups": len(groups), "est_flops": runner.cost(rows, runner.row_buckets)}}
    out["padded_ratio_unpacked_over_packed"] = out["unpacked"]["padded"] / out["packed"]["padded"]
    out["flops_ratio_unpacked_over_packed"] = out["unpacked"]["est_flops"] / out["packed"]["est_flops"]
    return out


def timed(fn, *args):
    """``(result, wall seconds, process CPU seconds)`` of ``fn(*args)``."""
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=512, help="loglikelihood requests")
    p.add_argument("--rolling", type=int, default=32, help="loglikelihood_rolling requests")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--bpe-vocab", type=int, default=0, help="a BPE tokenizer of this many ids (0: bytes)")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/harness_bench.json"))
    args = p.parse_args()

    import equinox as eqx
    import torch
    from lm_eval.models.huggingface import HFLM
    from test_harness_parity import byte_tokenizer_for_transformers

    from ado_jax.checkpoint import Checkpointer
    from ado_jax.data.tokenizer import BPETokenizer, ByteTokenizer, save_tokenizer
    from ado_jax.harness.lm import JaxLM
    from ado_jax.harness.run import load_run_model
    from ado_jax.hf_checkpoint import export_run
    from ado_jax.models.llama import Llama, ModelConfig

    load_before = os.getloadavg()
    ll, roll = requests(args.requests, args.rolling)
    tok = ByteTokenizer() if not args.bpe_vocab else BPETokenizer.train(
        [r.args[0] for r in roll] + [a + b for a, b in (r.args for r in ll)], vocab_size=args.bpe_vocab)
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=args.d_model, n_layers=args.layers, n_heads=args.d_model // 64,
                      n_kv_heads=args.d_model // 64, max_seq_len=args.max_seq_len, compute_dtype="float32",
                      remat="none", tie_embeddings=False)
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        save_tokenizer(tok, f"{tmp}/corpus")
        ckpt = Checkpointer(f"{tmp}/run/checkpoints")
        ckpt.save(1, {"model": eqx.filter_jit(lambda k: Llama(cfg, k))(jax.random.PRNGKey(0))},
                  {"model": dataclasses.asdict(cfg), "data": {"source": "corpus", "corpus_dir": f"{tmp}/corpus"}})
        ckpt.close()
        export_run(f"{tmp}/run", f"{tmp}/hf")
        model, tokenizer, _, _ = load_run_model(f"{tmp}/run")
        ours = JaxLM(model, tokenizer, batch_size=args.batch_size)
        unpacked = JaxLM(model, tokenizer, batch_size=args.batch_size, pack=False)
        tokens = token_counts(ours, ll)
        print(f"loglikelihood tokens through the model, padded: {tokens['unpacked']['padded']} one row per request, "
              f"{tokens['packed']['padded']} packed ({tokens['padded_ratio_unpacked_over_packed']:.2f}x fewer)")
        hf_tok = None if args.bpe_vocab else byte_tokenizer_for_transformers()  # BPE: the export's tokenizer.json
        theirs = HFLM(pretrained=f"{tmp}/hf", tokenizer=hf_tok, device="cpu",
                      dtype="float32", batch_size=args.batch_size)
        rows = {}
        for name, lm, kind, reqs in [("ours_cold", ours, "loglikelihood", ll), ("ours", ours, "loglikelihood", ll),
                                     ("ours_unpacked_cold", unpacked, "loglikelihood", ll),
                                     ("ours_unpacked", unpacked, "loglikelihood", ll),
                                     ("hf", theirs, "loglikelihood", ll),
                                     ("ours_cold", ours, "loglikelihood_rolling", roll),
                                     ("ours", ours, "loglikelihood_rolling", roll),
                                     ("hf", theirs, "loglikelihood_rolling", roll)]:
            out, wall, cpu = timed(lambda r: getattr(lm, kind)(r, disable_tqdm=True), reqs)
            rows.setdefault(kind, {})[name] = {"requests": len(reqs), "wall_s": wall, "cpu_s": cpu,
                                               "requests_per_s": len(reqs) / wall,
                                               "loglik": [x[0] if isinstance(x, tuple) else x for x in out]}
            print(f"{kind:22s} {name:18s} {len(reqs) / wall:8.1f} requests/s  (wall {wall:6.1f} s, cpu {cpu:6.1f} s)")
    result = {"model": {k: getattr(cfg, k) for k in ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len")},
              "tokenizer": tok.kind,
              "batch_size": args.batch_size, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "jax": jax.__version__, "torch": torch.__version__,
              "load_average_1_5_15min": {"before": load_before, "after": os.getloadavg()}}
    for kind, r in rows.items():
        max_diff = lambda a, b: float(np.max(np.abs(np.subtract(r[a]["loglik"], r[b]["loglik"]))))
        diff, packing = max_diff("ours", "hf"), {}
        if "ours_unpacked" in r:
            packing = {"tokens": tokens, "max_abs_loglik_diff_packed_unpacked": max_diff("ours", "ours_unpacked"),
                       "speedup_packed_over_unpacked_warm":
                       r["ours"]["requests_per_s"] / r["ours_unpacked"]["requests_per_s"]}
        for row in r.values():
            row.pop("loglik")
        result[kind] = {**r, **packing, "speedup_warm": r["ours"]["requests_per_s"] / r["hf"]["requests_per_s"],
                        "speedup_cold": r["ours_cold"]["requests_per_s"] / r["hf"]["requests_per_s"],
                        "max_abs_loglik_diff": diff}
        print(f"{kind}: ours / hf = {result[kind]['speedup_warm']:.2f}x warm, {result[kind]['speedup_cold']:.2f}x "
              f"with compilation; max |loglik diff| {diff:.2g}"
              + (f"; packed / unpacked {packing['speedup_packed_over_unpacked_warm']:.2f}x warm, max |diff| "
                 f"{packing['max_abs_loglik_diff_packed_unpacked']:.2g}" if packing else ""))
    save_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
