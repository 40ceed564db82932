"""Sequences/s of each data source at the ``demo`` and ``gpt2-124m`` shapes, beside the train step's rate.

    python benchmarks/data_bench.py [--corpus DIR] [--steps N] [--no-train]

Sources (all over the built-in corpus, byte tokens, 8 domains, mixture weights changed every step):
  host_sync      HostSource.sample on memmapped .bin files, called in the loop
  host_prefetch  the same through Prefetcher(lag=1) (a background thread draws the next batch)
  array_record   ArrayRecordSource, one record per document (<= 2048 tokens), windows span records;
                 also through Prefetcher(lag=4): 4 threads draw 4 batches at once
  in_memory      the lead's InMemoryDomains.next, jitted (samples inside the step; CPU here)
The ``demo`` train step (the lead's ``train.make_train_step``, CPU) gives the consumption rate;
the ``gpt2-124m`` step cannot run on CPU, so its rate is bounded by an H200 at its full bf16
peak (790 TFLOP/s, 6 * params * tokens FLOPs): a ceiling no real step reaches.
Saves benchmarks/results/data_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def _rate(fn, steps: int, batch: int, warmup: int = 2) -> float:
    for t in range(warmup):
        fn(t)
    t0 = time.perf_counter()
    for t in range(warmup, warmup + steps):
        fn(t)
    return steps * batch / (time.perf_counter() - t0)


def _weights(t: int, D: int) -> np.ndarray:
    w = np.abs(np.sin(np.arange(D) * 1.3 + 0.1 * t)) + 0.02
    return (w / w.sum()).astype(np.float32)


def _array_record_dir(corpus_dir: Path, tmp: Path, eos: int) -> Path:
    from ado_jax.data.tfds_source import write_array_record
    from ado_jax.data.token_files import domains_vocab_size, open_domains

    vocab = domains_vocab_size(corpus_dir)
    for name, ids in open_domains(corpus_dir, "train").items():
        ids = np.asarray(ids)
        docs = np.split(ids, np.flatnonzero(ids == eos)[:-1] + 1)
        # Long documents become several records of <= 2048 tokens: a window then never decodes a whole book.
        recs = [c for d in docs for c in np.split(d, np.arange(2048, d.size, 2048))]
        write_array_record(tmp / f"{name}.train.array_record", recs, vocab)
    return tmp


def _train_rate(doms, B: int, T: int, vocab: int, steps: int) -> dict:
    """Seq/s of the demo train step fed host batches, alone and with the prefetcher in the loop."""
    import jax

    from ado_jax import sharding, train
    from ado_jax.optimizer import make_optimizer
    from ado_jax.config import load_config
    from ado_jax.data.base import FixedBatch
    from ado_jax.data.host_source import HostSource, Prefetcher
    from ado_jax.data.in_memory import InMemoryDomains

    cfg = load_config("demo", [f"model.vocab_size={vocab}"])
    mesh = sharding.make_mesh(cfg.mesh)
    src = HostSource(doms, B, T, vocab)
    mixer = cfg.mixer.build(src.sizes())
    opt = make_optimizer(cfg.train)
    small = InMemoryDomains.from_arrays({n: np.asarray(a[:4 * T]) for n, a in doms.items()}, B, T, vocab)
    state = train.create_state(cfg.model, opt, mixer, small.init(jax.random.PRNGKey(1)), src.num_domains,
                               jax.random.PRNGKey(0), mesh)
    step_fn = train.make_train_step(cfg.train, opt, mixer, mesh, train.state_shardings(state, mesh), src.num_domains)
    batches = [src.sample(0, t, _weights(t, src.num_domains)) for t in range(steps + 2)]
    box = {"state": state}

    def step(t):
        box["state"], m = step_fn(box["state"], FixedBatch(batches[t]))
        jax.block_until_ready(m["loss"])

    alone = _rate(step, steps, B)
    it = Prefetcher(src, seed=0, lag=1)

    def fed(t):
        batch = it.next(np.asarray(box["state"].mixer_state.weights))
        box["state"], m = step_fn(box["state"], FixedBatch(batch))
        jax.block_until_ready(m["loss"])

    with_source = _rate(fed, steps, B)
    it.close()
    return {"train_step_seq_s": alone, "train_step_with_host_prefetch_seq_s": with_source}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", default=None, help="corpus dir (default: build/reuse the default one)")
    p.add_argument("--steps", type=int, default=20, help="timed batches per source and shape")
    p.add_argument("--no-train", action="store_true", help="skip the demo train step")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "data_bench.json"))
    a = p.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from ado_jax.config import load_config
    from ado_jax.data.corpus import build_corpus, load_manifest
    from ado_jax.data.host_source import HostSource, Prefetcher
    from ado_jax.data.in_memory import InMemoryDomains
    from ado_jax.data.tfds_source import ArrayRecordSource, open_array_record_domains
    from ado_jax.data.token_files import open_domains

    corpus_dir = Path(a.corpus) if a.corpus else build_corpus(log=lambda s: None)
    manifest = load_manifest(corpus_dir)
    vocab, eos = manifest["tokenizer"]["vocab_size"], manifest["tokenizer"]["eos_id"]
    doms = open_domains(corpus_dir, "train")
    D = len(doms)
    tmp = Path(tempfile.mkdtemp(prefix="ado_data_bench_"))
    ar_doms = open_array_record_domains(_array_record_dir(corpus_dir, tmp, eos))
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "jax_backend": jax.default_backend()}
    results = {"machine": machine,
               "corpus": {"dir": str(corpus_dir), "domains": D, "train_tokens": int(sum(x.size for x in doms.values())),
                          "tokenizer": manifest["tokenizer"]["kind"]}, "shapes": {}}
    for preset in ["demo", "gpt2-124m"]:
        t = load_config(preset).train
        B, T = t.batch_size, t.seq_len
        steps = a.steps if B * T <= 2**16 else max(5, a.steps // 2)
        row = {"batch_size": B, "seq_len": T}
        src = HostSource(doms, B, T, vocab)
        row["host_sync_seq_s"] = _rate(lambda s: src.sample(0, s, _weights(s, D)), steps, B)
        it = Prefetcher(src, seed=0, lag=1)
        row["host_prefetch_seq_s"] = _rate(lambda s: it.next(_weights(s, D)), steps, B)
        it.close()
        ar = ArrayRecordSource(ar_doms, B, T)
        row["array_record_seq_s"] = _rate(lambda s: ar.sample(0, s, _weights(s, D)), steps, B)
        it = Prefetcher(ar, seed=0, lag=4)
        row["array_record_prefetch4_seq_s"] = _rate(lambda s: it.next(_weights(s, D)), steps, B)
        it.close()
        mem = InMemoryDomains.from_arrays({n: np.asarray(x) for n, x in doms.items()}, B, T, vocab)
        nxt = jax.jit(lambda m, st, w: m.next(st, w))
        box = {"st": mem.init(jax.random.PRNGKey(0))}

        def in_mem(s):
            batch, box["st"] = nxt(mem, box["st"], jnp.asarray(_weights(s, D)))
            jax.block_until_ready(batch["inputs"])

        row["in_memory_jit_seq_s"] = _rate(in_mem, steps, B)
        if preset == "demo" and not a.no_train:
            row.update(_train_rate(doms, B, T, vocab, steps))
            row["step_source"] = "measured: demo train step on this machine's CPU"
        if preset == "gpt2-124m":
            flops = 6 * 124e6 * B * T
            row["train_step_seq_s"] = B / (flops / 790e12)
            row["step_source"] = "bound: H200 at 100% of 790 TFLOP/s bf16 (6*124M*B*T FLOPs); real steps are slower"
        if "train_step_seq_s" in row:
            row["host_prefetch_x_step"] = row["host_prefetch_seq_s"] / row["train_step_seq_s"]
            row["array_record_prefetch4_x_step"] = row["array_record_prefetch4_seq_s"] / row["train_step_seq_s"]
        results["shapes"][preset] = row

    cols = ["host_sync_seq_s", "host_prefetch_seq_s", "array_record_seq_s", "array_record_prefetch4_seq_s",
            "in_memory_jit_seq_s", "train_step_with_host_prefetch_seq_s",
            "train_step_seq_s", "host_prefetch_x_step", "array_record_prefetch4_x_step"]
    short = [c.replace("_seq_s", "").replace("train_step_with_host_prefetch", "step+prefetch") for c in cols]
    print(f"{'shape':>10s} {'B':>4s} {'T':>5s} " + " ".join(f"{c:>16s}" for c in short))
    for preset, row in results["shapes"].items():
        vals = " ".join(f"{row[c]:16.1f}" if c in row else f"{'-':>16s}" for c in cols)
        print(f"{preset:>10s} {row['batch_size']:4d} {row['seq_len']:5d} {vals}")
    for preset, row in results["shapes"].items():
        if "step_source" in row:
            print(f"  {preset} step rate: {row['step_source']}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(json.dumps(results, indent=1))
    os.replace(tmp_out, out)
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
