"""MB/s of ``ado-jax corpus encode`` on Pile-shaped .jsonl.zst, per worker, beside the ceilings.

    python benchmarks/encode_bench.py [--mb 48] [--byte-mb 192] [--files 4]

Input: the Python standard library's source files as documents (one JSON record each, domain
in ``meta.pile_set_name``, 4 domains), written as ``--files`` .jsonl.zst files of ``--mb`` MB
of text in all (``--byte-mb`` for the byte tokenizer, which is ~50x faster, so that process
start-up does not dominate). Measured (MB of document text per second of wall time, start-up
included):

  ceiling_byte      ByteTokenizer.encode_docs on the texts already in memory (numpy)
  ceiling_bpe       plain ``tokenizers`` ``encode_batch`` of the same texts, in memory: what the
                    tokenizer alone does, without reading, parsing or writing
  encode_<tok>_w<N> ``encode_records`` with N worker processes: zstd, JSON, tokenizing, shards

Tokenizer threads are pinned to one per process (RAYON_NUM_THREADS=1), so "per worker" means
per core. Saves benchmarks/results/encode_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # before tokenizers is imported (workers inherit it)
os.environ.setdefault("RAYON_RS_NUM_CPUS", "1")

import platform  # noqa: E402
import sys  # noqa: E402
import sysconfig  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import save_json  # noqa: E402

DOMAINS = ["Github", "StackExchange", "ArXiv", "Pile-CC"]


def _texts(mb: float) -> list[tuple[str, str]]:
    """(domain, text) of stdlib files, repeated until ``mb`` MB of text."""
    base = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(base.rglob("*.py"))
    out, total = [], 0
    while total < mb * 1e6:
        for f in files:
            text = f.read_text(encoding="utf-8", errors="replace")
            out.append((DOMAINS[zlib.crc32(str(f.parent).encode()) % 4], text))
            total += len(text.encode())
            if total >= mb * 1e6:
                break
    return out


def _write_inputs(docs, folder: Path, n_files: int) -> list[Path]:
    import zstandard

    paths = []
    for i in range(n_files):
        raw = "".join(json.dumps({"text": t, "meta": {"pile_set_name": d}}) + "\n" for d, t in docs[i::n_files])
        paths.append(folder / f"{i:02d}.jsonl.zst")
        paths[-1].write_bytes(zstandard.ZstdCompressor(level=3).compress(raw.encode()))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=48.0, help="MB of document text in all (BPE)")
    ap.add_argument("--byte-mb", type=float, default=192.0, help="MB of document text in all (byte tokenizer)")
    ap.add_argument("--files", type=int, default=4, help="input .jsonl.zst files")
    ap.add_argument("--out", default="benchmarks/results/encode_bench.json")
    args = ap.parse_args()

    from ado_jax.data.encode_records import encode_records
    from ado_jax.data.tokenizer import ByteTokenizer, make_tokenizer, save_tokenizer

    sets = {"bpe": _texts(args.mb), "byte": _texts(args.byte_mb)}
    mbs = {k: sum(len(t.encode()) for _, t in v) / 1e6 for k, v in sets.items()}
    res = {"text_mb": {k: round(v, 2) for k, v in mbs.items()}, "files": args.files, "cpus": os.cpu_count(),
           "platform": platform.platform(), "python": platform.python_version(), "results": {}}
    r = res["results"]
    texts = [t for _, t in sets["byte"]]
    t0 = time.perf_counter()
    for i in range(0, len(texts), 256):
        ByteTokenizer().encode_docs(texts[i:i + 256])
    r["ceiling_byte"] = {"mb_per_s": mbs["byte"] / (time.perf_counter() - t0)}
    texts = [t for _, t in sets["bpe"]]
    mb = mbs["bpe"]
    bpe = make_tokenizer("bpe", texts[: max(1, len(texts) // 12)], 4096)
    t0 = time.perf_counter()
    for i in range(0, len(texts), 256):
        bpe._tok.encode_batch(texts[i:i + 256])
    r["ceiling_bpe"] = {"mb_per_s": mb / (time.perf_counter() - t0)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_tokenizer(bpe, tmp / "bpe_tok")
        for name, tok in [("byte", "byte"), ("bpe", str(tmp / "bpe_tok"))]:
            (tmp / f"in_{name}").mkdir()
            inputs = _write_inputs(sets[name], tmp / f"in_{name}", args.files)
            mb = mbs[name]
            for workers in (1, 2):
                out = tmp / f"out_{name}_{workers}"
                t0 = time.perf_counter()
                encode_records(inputs, out, tokenizer=tok, workers=workers, progress=False, log=lambda s: None)
                dt = time.perf_counter() - t0
                r[f"encode_{name}_w{workers}"] = {"mb_per_s": mb / dt, "mb_per_s_per_worker": mb / dt / workers,
                                                  "seconds": dt}
                print(f"encode {name:4s} workers={workers}: {mb / dt:6.2f} MB/s ({mb / dt / workers:6.2f} per worker)")
    for name in ("byte", "bpe"):
        r[f"scaling_{name}_1_to_2"] = r[f"encode_{name}_w2"]["mb_per_s"] / r[f"encode_{name}_w1"]["mb_per_s"]
        r[f"encode_{name}_w1_vs_ceiling"] = r[f"encode_{name}_w1"]["mb_per_s"] / r[f"ceiling_{name}"]["mb_per_s"]
    for k, v in r.items():
        print(f"{k:26s} {json.dumps(v)}")
    save_json(args.out, res)


if __name__ == "__main__":
    main()
