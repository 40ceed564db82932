"""Record files (JSONL, .gz, .zst, Parquet) to sharded token files: ``encode_records``
(CLI: ``ado-jax corpus encode FILE_OR_DIR... --domain-field meta.pile_set_name``).

Each input file is one unit of work, run by one of ``workers`` processes. Its documents go, by
the record's domain field, to that domain's shards ``tokens/<domain>/<split>-<input>-<k>.bin``;
a document is held out when ``crc32(seed, input, line) / 2**32 < heldout_fraction`` (so the
split depends on neither the worker count nor the machine). Each file is encoded by
``encode_worker.encode_file``, which saves resume points inside the file and, when the file is
done, its summary ``parts/<input>.json``: a rerun of the same command after a crash skips every
finished file and continues an unfinished one from its last resume point.
At the end (and on every rerun) the shard indexes and ``manifest.json`` are assembled from the
parts (``assemble``); ``corpus_merge.merge_corpora`` joins encodes of disjoint input files.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from ado_jax.data import shards
from ado_jax.data.encode_pool import run_files
from ado_jax.data.encode_worker import write_json_atomic, encode_file
from ado_jax.data.records import ERRORS, is_record_file, read_records
from ado_jax.data.token_files import SPLITS
from ado_jax.data.tokenizer import load_tokenizer, make_tokenizer, resolve_tokenizer, save_tokenizer

FORMAT = "ado_jax.corpus/v1"
SETTINGS = "encode.json"


def list_inputs(inputs, input_root=None) -> dict[str, Path]:
    """``{input id: file}`` of the record files named by ``inputs`` (files, or directories searched
    recursively), sorted. The id is the path relative to ``input_root`` (default: the inputs'
    common folder) with ``/`` as ``__`` and the suffix dropped: machines that encode disjoint
    parts of one dataset must pass the same ``input_root`` so their ids never collide."""
    files = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and is_record_file(f))
        elif p.is_file():
            if not is_record_file(p):
                raise ValueError(f"{p}: not a record file (expected .jsonl[.gz|.zst], .json[.gz|.zst] or .parquet)")
            files.append(p)
        else:
            raise FileNotFoundError(f"input {p} does not exist")
    if not files:
        raise ValueError(f"no record files (.jsonl[.gz|.zst], .parquet) in {[str(i) for i in inputs]}")
    files = [f.resolve() for f in files]
    root = Path(input_root).resolve() if input_root else Path(os.path.commonpath([f.parent for f in files]))
    out = {}
    for f in files:
        try:
            rel = f.relative_to(root)
        except ValueError:
            raise ValueError(f"input {f} is not under --input-root {root}") from None
        stem = str(rel)
        for suffix in (".gz", ".zst", ".jsonl", ".json", ".parquet"):
            stem = stem[: -len(suffix)] if stem.lower().endswith(suffix) else stem
        out[stem.replace(os.sep, "__")] = f
    if len(out) != len(files):
        raise ValueError("two inputs map to the same id (same path without suffix); rename one of them")
    return dict(sorted(out.items()))


def _train_bpe(inputs: dict, settings: dict, vocab_size: int, log):
    """A BPE trained on up to 1 MB of text per domain from the first input files (8 MB in all)."""
    per, total = Counter(), 0
    sample = []
    for path in inputs.values():
        for rec in read_records(path, settings["text_field"], settings["domain_field"], "replace", Counter()):
            if per[rec.domain] < 1_000_000:
                sample.append(rec.text)
                per[rec.domain] += len(rec.text)
                total += len(rec.text)
            if total >= 8_000_000:
                break
        if total >= 8_000_000:
            break
    log(f"training a {vocab_size}-id BPE on {total / 1e6:.1f} MB ({len(per)} domains)")
    return make_tokenizer("bpe", sample, vocab_size)


def prepare(out: Path, inputs: dict, settings: dict, tokenizer, bpe_vocab_size: int, log) -> None:
    """Creates ``out`` (settings + tokenizer) or checks that it holds an encode with the same
    settings (a resumed run); raises FileExistsError naming the settings that differ."""
    if (out / SETTINGS).exists():
        old = json.loads((out / SETTINGS).read_text())
        diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if tokenizer != "bpe" and resolve_tokenizer(tokenizer).to_config() != load_tokenizer(out).to_config():
            diff["tokenizer"] = (load_tokenizer(out).to_config(), resolve_tokenizer(tokenizer).to_config())
        if diff:
            raise FileExistsError(f"{out} holds an encode with other settings {diff} (old, new); choose another --out")
        for tmp in [*(out / "tokens").glob("*/*.tmp-*"), *(out / "parts").glob("*.tmp-*"),
                    *(out / "resume").glob("*.tmp-*")]:
            tmp.unlink()  # left by a killed run (one encode per --out at a time)
        seen = {json.loads(p.read_text())["input"]: p.stem for p in (out / "parts").glob("*.json")}
        moved = {str(f): (seen[str(f)], i) for i, f in inputs.items() if seen.get(str(f), i) != i}
        if moved:
            raise ValueError(f"inputs were encoded under other ids {moved} (old, new): their common folder changed; "
                             "pass the earlier --input-root")
        return
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists, is not empty and has no {SETTINGS}; not writing into it")
    out.mkdir(parents=True, exist_ok=True)
    tok = _train_bpe(inputs, settings, bpe_vocab_size, log) if tokenizer == "bpe" else resolve_tokenizer(tokenizer)
    save_tokenizer(tok, out)
    write_json_atomic(out / SETTINGS, settings)  # last: marks a usable output folder


def assemble(out_dir: str | os.PathLike, log=print) -> dict:
    """Writes every domain's shard indexes and ``manifest.json`` from ``parts/*.json``; returns
    the manifest. A domain without held-out documents gets an empty held-out index."""
    out = Path(out_dir)
    settings, tok = json.loads((out / SETTINGS).read_text()), load_tokenizer(out)
    parts = {p.name[:-5]: json.loads(p.read_text()) for p in sorted((out / "parts").glob("*.json"))}
    by = defaultdict(lambda: {s: [] for s in SPLITS})
    for pid in sorted(parts):
        for domain, splits in parts[pid]["shards"].items():
            for split, entries in splits.items():
                by[domain][split] += entries
    dtype = np.dtype(np.uint16 if tok.vocab_size <= 2**16 else np.uint32).name
    domains = []
    for name in sorted(by):
        entry = {"name": name, "description": f"records whose {settings['domain_field']} is {name!r}", "splits": {}}
        for split in SPLITS:
            listed = by[name][split]
            shards.write_index(shards.index_path(out / "tokens", name, split),
                               [{k: s[k] for k in ("file", "count", "sha256")} for s in listed], dtype, tok.vocab_size)
            entry["splits"][split] = {"n_docs": sum(s["docs"] for s in listed),
                                      "tokens": sum(s["count"] for s in listed),
                                      "bytes": sum(s["bytes"] for s in listed), "shards": len(listed)}
        entry["n_docs"] = sum(s["n_docs"] for s in entry["splits"].values())
        entry["bytes"] = sum(s["bytes"] for s in entry["splits"].values())
        domains.append(entry)
    errors = {parts[p]["input"]: parts[p]["errors"] for p in sorted(parts) if parts[p]["errors"]}
    manifest = {"format": FORMAT, "names": sorted(by), "tokenizer": tok.to_config(), "config": settings,
                "inputs": sorted(parts), "domains": domains, "errors": errors,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json_atomic(out / "manifest.json", manifest)
    if errors:
        log(f"malformed records in {len(errors)} of {len(parts)} input files (manifest.json: errors):")
    for path, c in errors.items():
        log(f"  {path}: " + ", ".join(f"{v} {k}" for k, v in c.items()))
    return manifest


def encode_records(inputs, out_dir, tokenizer="byte", text_field: str = "text",
                   domain_field: str = "meta.pile_set_name", workers: int = 1, errors: str = "replace",
                   heldout_fraction: float = 0.05, seed: int = 0, shard_tokens: int = 2**27,
                   bpe_vocab_size: int = 4096, input_root=None, progress: bool = True, log=print) -> Path:
    """Encodes record files into a sharded corpus at ``out_dir`` (resuming an unfinished one).

    Args:
      inputs: record files or directories (searched recursively for record files).
      tokenizer: "byte", "bpe" (trained on a sample of the inputs), a Hugging Face
        ``tokenizer.json``, or a corpus directory whose tokenizer to reuse.
      workers: processes encoding input files in parallel (one file each at a time).
      errors: strict | replace | skip, for malformed records and bad UTF-8 (``records``).
      shard_tokens: a shard is closed at the first document end past this many tokens.
    Returns ``out_dir``; its manifest lists every domain (sorted) with per-split counts.
    """
    if errors not in ERRORS:
        raise ValueError(f"errors={errors!r}: expected one of {'|'.join(ERRORS)}")
    if not 0 <= heldout_fraction < 1 or workers < 1 or shard_tokens < 1:
        raise ValueError(f"need 0 <= heldout_fraction < 1, workers >= 1, shard_tokens >= 1; got "
                         f"{heldout_fraction}, {workers}, {shard_tokens}")
    files = list_inputs(inputs, input_root)
    out = Path(out_dir)
    settings = {"text_field": text_field, "domain_field": domain_field, "errors": errors, "seed": seed,
                "heldout_fraction": heldout_fraction, "shard_tokens": int(shard_tokens)}
    prepare(out, files, settings, tokenizer, bpe_vocab_size, log)
    todo = {i: f for i, f in files.items() if not (out / "parts" / f"{i}.json").exists()}
    if len(todo) < len(files):
        log(f"{len(files) - len(todo)} of {len(files)} input files already encoded in {out}; skipping them")
    run_files(encode_file, todo, out, settings, workers, progress)
    if not assemble(out, log)["names"]:
        raise ValueError(f"no documents in {len(files)} input files: check --text-field {text_field!r} and "
                         f"--domain-field {domain_field!r} (malformed records are listed above)")
    return out
