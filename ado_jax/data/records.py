"""Streaming documents out of record files: JSONL (plain, ``.gz``, ``.zst``) and Parquet.

Each record is one document that names its domain in a field, as the Pile
(``{"text": ..., "meta": {"pile_set_name": "Github"}}``) and SlimPajama
(``meta.redpajama_set_name``) do::

    for rec in read_records("00.jsonl.zst", text_field="text", domain_field="meta.pile_set_name",
                            errors="replace", counts=counts):
        rec.line, rec.domain, rec.text      # 1-based line (JSONL) or row (Parquet)

Reading is streaming and constant-memory (one line, or one Parquet record batch, at a time).
``.zst`` needs ``zstandard`` and Parquet needs ``pyarrow`` (extra ``records``).

Malformed records (bad JSON, a missing field, a text or domain that is not a string) and text
that is not valid UTF-8 (undecodable bytes, or lone surrogates from ``\\udXXX`` escapes) are
counted in ``counts`` (a ``collections.Counter``) under ``bad_json``, ``missing_field``,
``not_string``, ``invalid_utf8``; ``errors`` says what happens to them:

* ``strict``: raise ``RecordError`` at the first one, naming the file, line and problem;
* ``replace`` (default): malformed records are skipped; bad UTF-8 becomes U+FFFD and the record
  is kept (``counts["replaced_chars"]`` counts the replacement characters);
* ``skip``: malformed records and records with bad UTF-8 are skipped.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterator, NamedTuple

ERRORS = ("strict", "replace", "skip")
_SURROGATE = re.compile("[\ud800-\udfff]")
SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".json.zst", ".parquet")


class RecordError(ValueError):
    """A malformed record under ``errors="strict"``: the message names the file and line."""


class Record(NamedTuple):
    line: int  # 1-based line (JSONL) or row (Parquet) number in its file
    domain: str
    text: str


def is_record_file(path: str | os.PathLike) -> bool:
    """Whether ``path``'s name ends in a supported record suffix (``SUFFIXES``)."""
    return str(path).lower().endswith(SUFFIXES)


def get_field(record, dotted: str):
    """``record["a"]["b"]`` for ``dotted="a.b"``; raises KeyError naming the missing part."""
    value = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(part)
        value = value[part]
    return value


class _Position:
    """The compressed-byte position of an open input, for progress reporting."""

    def __init__(self, raw):
        self.raw = raw

    def __call__(self) -> int:
        return self.raw.tell()


def _open_binary(path: Path):
    """``(line-iterable binary stream, raw file)`` of a JSONL file, decompressing .gz / .zst."""
    raw = open(path, "rb")
    name = path.name.lower()
    if name.endswith(".gz"):
        return io.BufferedReader(gzip.GzipFile(fileobj=raw), 1 << 20), raw
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError as e:
            raw.close()
            raise ImportError(f"{path}: .zst input needs the `zstandard` package: "
                              "pip install 'ado-jax[records]'") from e
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_size=1 << 20)
        return io.BufferedReader(reader, 1 << 20), raw
    return raw, raw


def _fix_text(text: str, errors: str, counts: Counter, where: str) -> str | None:
    """``text`` with lone surrogates handled per ``errors``; None when the record is skipped."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        counts["invalid_utf8"] += 1
        if errors == "strict":
            raise RecordError(f"{where}: text is not valid UTF-8 (lone surrogate escape)") from None
        if errors == "skip":
            return None
        fixed, n = _SURROGATE.subn("\ufffd", text)
        counts["replaced_chars"] += n
        return fixed


def _check(obj, path: Path, line: int, text_field: str, domain_field: str, errors: str,
           counts: Counter) -> Record | None:
    where = f"{path}:{line}"
    fields = {}
    for key, dotted in (("text", text_field), ("domain", domain_field)):
        try:
            fields[key] = get_field(obj, dotted)
        except KeyError as e:
            counts["missing_field"] += 1
            if errors == "strict":
                raise RecordError(f"{where}: record has no field {dotted!r} (missing {e.args[0]!r})") from None
            return None
        if not isinstance(fields[key], str):
            counts["not_string"] += 1
            if errors == "strict":
                raise RecordError(f"{where}: field {dotted!r} is {type(fields[key]).__name__}, expected a string")
            return None
    text = _fix_text(fields["text"], errors, counts, where)
    return None if text is None else Record(line, fields["domain"], text)


def _jsonl(path: Path, text_field: str, domain_field: str, errors: str, counts: Counter,
           progress: list, start: int) -> Iterator[Record]:
    stream, raw = _open_binary(path)
    progress.append(_Position(raw))
    with stream, raw:
        for line_no, raw_line in enumerate(stream, 1):
            if line_no <= start or not raw_line.strip():
                continue
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as e:
                counts["invalid_utf8"] += 1
                if errors == "strict":
                    raise RecordError(f"{path}:{line_no}: not valid UTF-8 (byte {e.start}: {e.reason})") from None
                if errors == "skip":
                    continue
                line = raw_line.decode("utf-8", "replace")
                counts["replaced_chars"] += line.count("\ufffd") - raw_line.count("\ufffd".encode())
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                counts["bad_json"] += 1
                if errors == "strict":
                    raise RecordError(f"{path}:{line_no}: not valid JSON ({e.msg} at column {e.colno})") from None
                continue
            rec = _check(obj, path, line_no, text_field, domain_field, errors, counts)
            if rec is not None:
                yield rec


def _parquet(path: Path, text_field: str, domain_field: str, errors: str, counts: Counter,
             progress: list, start: int) -> Iterator[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"{path}: Parquet input needs the `pyarrow` package: pip install 'ado-jax[records]'") from e
    pf = pq.ParquetFile(path)
    top = sorted({text_field.split(".")[0], domain_field.split(".")[0]})
    missing = [c for c in top if c not in pf.schema_arrow.names]
    if missing:  # a column missing from the whole file: every row is malformed
        counts["missing_field"] += pf.metadata.num_rows
        if errors == "strict":
            raise RecordError(f"{path}:1: no column {missing[0]!r}; columns: {pf.schema_arrow.names}")
        return
    done = [0]
    progress.append(lambda: done[0])
    row = 0
    for g in range(pf.num_row_groups):
        if row + pf.metadata.row_group(g).num_rows <= start:  # resuming: skip whole row groups unread
            row += pf.metadata.row_group(g).num_rows
            continue
        for batch in pf.iter_batches(batch_size=1024, row_groups=[g], columns=top):
            for obj in batch.to_pylist():
                row += 1
                if row <= start:
                    continue
                rec = _check(obj, path, row, text_field, domain_field, errors, counts)
                if rec is not None:
                    yield rec
        done[0] = int(path.stat().st_size * (g + 1) / pf.num_row_groups)


def read_records(path: str | os.PathLike, text_field: str = "text", domain_field: str = "meta.pile_set_name",
                 errors: str = "replace", counts: Counter | None = None,
                 progress: list | None = None, start: int = 0) -> Iterator[Record]:
    """Yields the ``Record(line, domain, text)`` of each well-formed record of ``path``.

    Args:
      text_field: dotted path of the document text in each record (``text``).
      domain_field: dotted path of the domain name (``meta.pile_set_name``).
      errors: ``strict`` | ``replace`` | ``skip`` (module docstring); counts go to ``counts``.
      progress: if given, a callable returning the input bytes read so far is appended to it.
      start: skip the records of lines (rows) ``1..start`` unparsed (resuming a file).
    """
    if errors not in ERRORS:
        raise ValueError(f"errors={errors!r}: expected one of {'|'.join(ERRORS)}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"record file {path} does not exist")
    counts = Counter() if counts is None else counts
    progress = [] if progress is None else progress
    reader = _parquet if path.name.lower().endswith(".parquet") else _jsonl
    if not is_record_file(path):
        raise ValueError(f"{path}: unknown record file type; expected a name ending in {', '.join(SUFFIXES)}")
    yield from reader(path, text_field, domain_field, errors, counts, progress, start)
