"""Tokens/s the object-store host loader delivers with 50 ms per request, against what a TPU v4 host consumes.

    python benchmarks/gcs_data_bench.py [--domains 22] [--mb-per-domain 32] [--threads 2] [--seconds 15]

Takes about 1.5 minutes on 2 shared CPU cores (corpus of 704 MB written and uploaded ~50 s, two
shapes measured up to ``--seconds`` each, a one-request-per-sequence baseline ~3 s).

Setup, all on 127.0.0.1: the tests' GCS emulator (fake-gcs-server, tests/gcs_server.py) behind
the tests' HTTP proxy (tests/gcs_proxy.py) adding ``--latency-ms`` (50) before every request is
answered: a GCS-like round trip. A corpus of ``--domains`` domains of random uint16 tokens
(``--mb-per-domain`` MB each) is uploaded with ``ado-jax corpus upload``'s ``upload_corpus``
(straight to the emulator), then read through the proxy by ``ChunkedSource`` +
``ChunkedPrefetcher(lag=1)`` (the ``data.loader=host`` path for a ``gs://`` corpus) with
``--threads`` reader threads, 8 MiB chunks and a 256 MiB read-ahead cap, a single process filling
whole global batches of the ``gpt2-124m`` (512 x 1024) and ``1b`` (1024 x 2048) shapes, mixture
weights near the natural mixture and changed every step. Each shape stops before any domain has
used 90 % of its chunks (or after ``--seconds``), so every chunk it uses is fetched from the store
during the measurement (``store_mb`` >= ``delivered_mb``), none kept from a previous pass.

Consumption of one TPU v4 host (4 chips, 275 TFLOP/s peak bf16 each, from the TPU v4 datasheet) at
50 % MFU, training a preset of N parameters at 6 N FLOPs per token:
``tokens/s = 0.5 * 4 * 275e12 / (6 N)``, N from the preset (``memory.param_count``). The goal is
delivering at least 5x that per host. The baseline reads one window per request (``HostSource``
over the same remote arrays, 2 threads): what a memmap-style loader does on an object store.
Saves benchmarks/results/gcs_data_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # the emulator and the proxy the tests use
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # before gcsfs is imported
os.environ.setdefault("JAX_PLATFORMS", "cpu")
from results_io import save_json  # noqa: E402

TPU_V4_CHIP_BF16 = 275e12   # FLOP/s per chip (TPU v4 datasheet)
CHIPS_PER_HOST, MFU = 4, 0.5
SHAPES = {"gpt2-124m": (512, 1024), "1b": (1024, 2048)}


def host_consumption() -> dict:
    """Tokens/s one TPU v4 host consumes at 50 % MFU per preset, with the preset's parameter count."""
    from ado_jax.config import load_config
    from ado_jax.memory import param_count

    out = {}
    for preset in SHAPES:
        n = param_count(load_config(preset))
        out[preset] = {"params": n, "tokens_per_s": MFU * CHIPS_PER_HOST * TPU_V4_CHIP_BF16 / (6 * n)}
    return out


def write_corpus(root: Path, domains: int, mb: float, vocab: int = 50304) -> Path:
    """A corpus folder of ``domains`` domains of random ids (train: ``mb`` MB, held-out: 64 KB)."""
    from ado_jax.data.token_files import write_tokens

    rng = np.random.default_rng(0)
    names = [f"d{i:02d}" for i in range(domains)]
    for name in names:
        for split, n in (("train", int(mb * 1e6) // 2), ("heldout", 32768)):
            write_tokens(root / "tokens" / f"{name}.{split}.bin", rng.integers(0, vocab, n, dtype=np.uint16), vocab)
    (root / "tokenizer.json").write_text(json.dumps({"kind": "synthetic", "vocab_size": vocab}))
    (root / "manifest.json").write_text(json.dumps({"format": "ado_jax.corpus/v1", "names": names, "domains": []}))
    return root


def _weights(t: int, D: int) -> np.ndarray:
    w = 1 + 0.3 * np.sin(np.arange(D) * 1.3 + 0.1 * t)  # near the natural mixture, moving every step
    return (w / w.sum()).astype(np.float32)


def measure(url: str, B: int, T: int, threads: int, seconds: float) -> dict:
    """Tokens/s delivered by ChunkedPrefetcher over ``url`` (first batch, start-up included, timed apart)."""
    from ado_jax.data.chunked_source import ChunkedPrefetcher, ChunkedSource, ChunkedState
    from ado_jax.data.remote_tokens import open_remote_domains

    doms = open_remote_domains(url, min_tokens=T + 2)
    D = len(doms)
    src = ChunkedSource(doms, B, T, chunk_bytes=8 << 20, readahead_bytes=256 << 20, threads=threads)
    state = ChunkedState(np.int64(0), np.int64(0), _weights(0, D)[None], np.zeros((1, D), np.int64))
    it = ChunkedPrefetcher(src, state)
    t0 = time.perf_counter()
    it.next(_weights(0, D))
    first = time.perf_counter() - t0
    one_pass = 0.9 * src.n_chunks * src.windows  # [D] windows: stop before a chunk could come round again
    steps, t1 = 0, time.perf_counter()
    while time.perf_counter() - t1 < seconds and (it.state.consumed[0] < one_pass).all():
        it.next(_weights(steps + 1, D))
        steps += 1
    wall = time.perf_counter() - t1
    it.close()
    src.close()
    s = src.reader.stats
    return {"batch": B, "seq_len": T, "steps": steps, "seconds": round(wall, 2), "first_batch_s": round(first, 2),
            "tokens_per_s": steps * B * T / wall, "delivered_mb": (steps + 1) * B * (T + 1) * 2 / 1e6,
            "requests": s["requests"], "store_mb": s["bytes_read"] / 1e6,
            "store_mb_per_s": s["bytes_read"] / 1e6 / (wall + first), "fill_wait_s": round(s["wait_s"], 2),
            "peak_readahead_mb": s["peak_bytes"] / 2**20}


def per_sequence_baseline(url: str, threads: int, T: int = 1024, batches: int = 4) -> dict:
    """Tokens/s when every sequence is its own range request (HostSource over the remote arrays)."""
    from ado_jax.data.host_source import HostSource, Prefetcher
    from ado_jax.data.remote_tokens import open_remote_domains

    doms = open_remote_domains(url, min_tokens=T + 2)
    B = 16
    src = HostSource(doms, B, T)
    with Prefetcher(src, seed=0, lag=threads, workers=threads) as it:
        t0 = time.perf_counter()
        for t in range(batches):
            it.next(_weights(t, len(doms)))
        wall = time.perf_counter() - t0
    return {"batch": B, "seq_len": T, "batches": batches, "tokens_per_s": batches * B * T / wall}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domains", type=int, default=22)
    ap.add_argument("--mb-per-domain", type=float, default=32.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--seconds", type=float, default=15.0, help="measuring time per shape")
    ap.add_argument("--out", default=str(HERE / "results" / "gcs_data_bench.json"))
    args = ap.parse_args(argv)
    from gcs_proxy import FaultyProxy
    from gcs_server import GcsServer

    from ado_jax.data.corpus_upload import upload_corpus

    t_start = time.perf_counter()
    consume = host_consumption()
    server = GcsServer()
    res = {"setup": {"domains": args.domains, "mb_per_domain": args.mb_per_domain, "threads": args.threads,
                     "latency_ms": args.latency_ms, "chunk_mib": 8, "readahead_mib": 256, "cpus": os.cpu_count(),
                     "load_avg": os.getloadavg(), "platform": platform.platform(), "python": platform.python_version(),
                     "tpu_v4_host": f"{CHIPS_PER_HOST} chips x {TPU_V4_CHIP_BF16 / 1e12:.0f} TFLOP/s bf16 x "
                                    f"{MFU:.0%} MFU, 6 N FLOPs/token"}}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = write_corpus(Path(tmp) / "corpus", args.domains, args.mb_per_domain)
            url = f"gs://{server.bucket()}/corpus"
            t0 = time.perf_counter()
            up = upload_corpus(local, url, log=lambda *a: None)
            res["upload"] = {**up, "mb_per_s": up["bytes"] / 1e6 / (time.perf_counter() - t0)}
        with FaultyProxy(server.url, latency_s=args.latency_ms / 1e3) as proxy:
            os.environ["STORAGE_EMULATOR_HOST"] = proxy.url  # gcsfs reads it at every request
            res["chunked"] = {}
            for preset, (B, T) in SHAPES.items():
                r = measure(url, B, T, args.threads, args.seconds)
                r["host_consumes_tokens_per_s"] = consume[preset]["tokens_per_s"]
                r["x_host_consumption"] = r["tokens_per_s"] / consume[preset]["tokens_per_s"]
                res["chunked"][preset] = r
                host = consume[preset]
                print(f"{preset:10s} {B}x{T}: {r['tokens_per_s'] / 1e6:7.2f} M tokens/s delivered "
                      f"({r['requests']} requests, {r['store_mb_per_s']:.0f} MB/s from the store, first batch "
                      f"{r['first_batch_s']} s) = {r['x_host_consumption']:.1f}x a TPU v4 host at 50 % MFU "
                      f"({host['tokens_per_s'] / 1e3:.0f} k tokens/s, N = {host['params'] / 1e6:.0f}M)",
                      flush=True)
            res["per_sequence_requests"] = per_sequence_baseline(url, args.threads)
            print(f"one request per sequence: {res['per_sequence_requests']['tokens_per_s'] / 1e3:.1f} k tokens/s")
            res["proxy"] = proxy.snapshot()
    finally:
        server.stop()
    res["consumption"] = consume
    res["goal_5x_met"] = all(r["x_host_consumption"] >= 5 for r in res["chunked"].values())
    res["setup"]["total_s"] = round(time.perf_counter() - t_start, 1)
    save_json(args.out, res)
    print(f"goal (>= 5x per host) met: {res['goal_5x_met']}; {res['setup']['total_s']} s; saved {args.out}")
    return res


if __name__ == "__main__":
    main()
