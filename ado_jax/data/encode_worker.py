"""One input file's encode (``encode_file``), run by ``encode_records`` in worker processes.

Its documents go, by the record's domain field, to that domain's shards
``tokens/<domain>/<split>-<input>-<k>.bin`` (``shard_writer.ShardWriter``); a document is held
out when ``crc32(seed, input, line) < heldout_fraction * 2**32``. Every ``RESUME_BYTES`` of
text a resume point ``resume/<input>.json`` is saved (pending documents written, shards synced):
a rerun continues the file from there, keeping its finished shards and cutting its open
``.partial`` shards back to the saved length, so it writes exactly the shards an uninterrupted
run would have (the point is dropped if the input file changed since). When the file is done its
summary ``parts/<input>.json`` (shards, counts, malformed records) is written atomically.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections import Counter, defaultdict
from pathlib import Path

from ado_jax import storage
from ado_jax.data.records import read_records
from ado_jax.data.shard_writer import ShardWriter
from ado_jax.data.tokenizer import load_tokenizer

BATCH_BYTES = 1 << 20  # documents are tokenized in batches of about this much text
RESUME_BYTES = 256 << 20  # of text between two resume points of one input file
MAX_DOMAINS = 256  # per input file: more distinct values means the wrong --domain-field (and open files)


def write_json_atomic(path: Path, obj) -> None:
    """Writes ``obj`` as JSON to ``path`` via a temporary file and ``os.replace`` (parents made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.write_text(path, json.dumps(obj, indent=1))


def _check_domain(name: str, where: str) -> None:
    if not name or "/" in name or "\0" in name or name.startswith(".") or len(name) > 200:
        raise ValueError(f"{where}: domain name {name!r} cannot name a file; expected a short name without '/' "
                         "that does not start with '.'")


def _resume_point(out: Path, input_id: str, path: str) -> dict | None:
    """The resume point saved for ``input_id``, if any and if the input file is unchanged."""
    file = out / "resume" / f"{input_id}.json"
    if not file.exists():
        return None
    point = json.loads(file.read_text())
    st = os.stat(path)
    return point if (point["input_bytes"], point["input_mtime_ns"]) == (st.st_size, st.st_mtime_ns) else None


def encode_file(input_id: str, path: str, out_dir: str, settings: dict, report=None) -> dict:
    """Encodes one record file into ``out_dir``'s shards; writes and returns its part summary.

    ``settings``: the run's ``encode.json`` (fields, errors, seed, heldout_fraction,
    shard_tokens). ``report(n)`` is called with each increment of input bytes read. Every
    ``RESUME_BYTES`` of text a resume point ``parts/<input>.resume.json`` is saved (all pending
    documents written, shards synced), from which a rerun continues this file."""
    out, st = Path(out_dir), os.stat(path)
    tok = load_tokenizer(out)
    point = _resume_point(out, input_id, path)
    counts, position, buffers = Counter(point["counts"] if point else {}), [], defaultdict(list)
    writers = {(w["domain"], w["split"]): ShardWriter.resume(out / "tokens" / w["domain"], f"{w['split']}-{input_id}",
                                                             tok.vocab_size, settings["shard_tokens"], w["state"])
               for w in (point["writers"] if point else [])}
    threshold = int(settings["heldout_fraction"] * 2**32)
    batch_bytes = min(BATCH_BYTES, settings["shard_tokens"])  # so small shards are cut between documents too
    read, since_point, sizes = 0, 0, Counter()

    def flush(key):
        docs = buffers.pop(key, [])
        sizes[key] = 0
        if not docs:
            return
        if key not in writers:
            writers[key] = ShardWriter(out / "tokens" / key[0], f"{key[1]}-{input_id}", tok.vocab_size,
                                       settings["shard_tokens"])
        ids = tok.encode_docs(docs)
        writers[key].write(ids, len(docs), sum(len(d.encode("utf-8")) for d in docs))

    def save_point(line: int) -> None:
        for key in list(buffers):
            flush(key)
        for w in writers.values():
            w.sync()
        write_json_atomic(out / "resume" / f"{input_id}.json",
                     {"line": line, "input_bytes": st.st_size, "input_mtime_ns": st.st_mtime_ns, "counts": counts,
                      "writers": [{"domain": d, "split": s, "state": w.state()} for (d, s), w in writers.items()]})

    try:
        records = read_records(path, settings["text_field"], settings["domain_field"], settings["errors"],
                               counts, position, start=point["line"] if point else 0)
        for n, rec in enumerate(records):
            held = zlib.crc32(f"{settings['seed']}:{input_id}:{rec.line}".encode()) < threshold
            key = (rec.domain, "heldout" if held else "train")
            if key not in writers and key not in buffers:
                _check_domain(rec.domain, f"{path}:{rec.line}")
                if len({d for d, _ in [*writers, *buffers, key]}) > MAX_DOMAINS:
                    raise ValueError(f"{path}:{rec.line}: more than {MAX_DOMAINS} distinct values of --domain-field "
                                     f"{settings['domain_field']!r} (e.g. {rec.domain!r}); is it the domain's field?")
            buffers[key].append(rec.text)
            sizes[key] += len(rec.text)
            since_point += len(rec.text)
            if sizes[key] >= batch_bytes:
                flush(key)
            if since_point >= RESUME_BYTES:
                save_point(rec.line)
                since_point = 0
            if report is not None and n % 256 == 0 and position:
                now = position[0]()
                report(now - read)
                read = now
        for key in list(buffers):
            flush(key)
        result = defaultdict(dict)
        for (domain, split), w in sorted(writers.items()):
            result[domain][split] = w.close()
    finally:
        for w in writers.values():
            w.abort()
    if report is not None:
        report(st.st_size - read)
    part = {"input": str(path), "input_bytes": st.st_size, "shards": result,
            "errors": {k: v for k, v in sorted(counts.items()) if v}}
    write_json_atomic(out / "parts" / f"{input_id}.json", part)
    (out / "resume" / f"{input_id}.json").unlink(missing_ok=True)
    mine = re.compile(rf"(train|heldout)-{re.escape(input_id)}-\d{{4}}\.bin\.partial")
    for stale in (out / "tokens").glob("*/*.partial"):  # left by an earlier, abandoned attempt
        if mine.fullmatch(stale.name):
            stale.unlink()
    return part
