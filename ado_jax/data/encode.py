"""Your own text folders as a corpus: ``encode_dir`` (CLI: ``ado-jax corpus encode``).

It splits and writes the documents the way the built-in corpus does (``corpus.split_docs``,
``corpus.write_corpus``), so the result has the same layout (manifest, tokenizer, ``text/``,
``tokens/``) and loads the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

from ado_jax.data.corpus import split_docs, write_corpus
from ado_jax.data.records import ERRORS
from ado_jax.data.tokenizer import resolve_tokenizer


def read_text(path: Path, errors: str, counts: dict) -> str | None:
    """``path``'s text as UTF-8 under ``errors`` (strict: ValueError naming the file and byte;
    replace: U+FFFD, counted in ``counts["replaced_chars"]``; skip: None). Bad files are counted
    in ``counts["invalid_utf8_files"]``."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        counts["invalid_utf8_files"] = counts.get("invalid_utf8_files", 0) + 1
        if errors == "strict":
            raise ValueError(f"{path}: not valid UTF-8 at byte {e.start} ({e.reason}); pass --errors replace "
                             "or --errors skip to encode it anyway") from None
        if errors == "skip":
            return None
        text = raw.decode("utf-8", errors="replace")
        counts["replaced_chars"] = counts.get("replaced_chars", 0) + text.count("\ufffd") - raw.count(
            "\ufffd".encode())
        return text


def encode_dir(text_dir: str | os.PathLike, out_dir: str | os.PathLike, tokenizer="byte",
               pattern: str = "**/*", heldout_fraction: float = 0.05, seed: int = 0,
               bpe_vocab_size: int = 4096, max_mb: float = float("inf"), errors: str = "replace",
               log=print) -> Path:
    """Encodes your own domains into a corpus directory (CLI: ``ado-jax corpus encode``).

    ``text_dir`` holds one subdirectory per domain; every file in it matching ``pattern`` is one
    UTF-8 document. Documents are split into train / held-out by ``seed`` as in the built-in
    corpus, and ``out_dir`` gets the same layout (manifest, tokenizer, text/, tokens/).
    ``tokenizer``: "byte", "bpe" (trained on these domains), a tokenizer object, or anything
    ``tokenizer.resolve_tokenizer`` takes (a corpus directory, a Hugging Face tokenizer.json).
    ``errors``: strict | replace | skip for files that are not valid UTF-8 (``read_text``); the
    counts are logged and recorded per domain in the manifest.
    """
    if errors not in ERRORS:
        raise ValueError(f"errors={errors!r}: expected one of {'|'.join(ERRORS)}")
    text_dir = Path(text_dir)
    if not text_dir.is_dir():
        raise FileNotFoundError(f"text directory {text_dir} does not exist")
    subdirs = sorted(p for p in text_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise ValueError(f"{text_dir} has no subdirectories; put each domain's text files in <dir>/<domain>/")
    if isinstance(tokenizer, (str, os.PathLike)) and str(tokenizer) not in ("byte", "bpe"):
        tokenizer = resolve_tokenizer(tokenizer)
    splits, info = {}, {}
    for sub in subdirs:
        files = sorted(p for p in sub.glob(pattern) if p.is_file())
        counts = {}
        docs = [d for d in (read_text(p, errors, counts) for p in files) if d is not None]
        if counts:
            log(f"  {sub.name}: {counts.get('invalid_utf8_files', 0)} files not valid UTF-8 ("
                + (f"{counts.get('replaced_chars', 0)} characters replaced by U+FFFD)" if errors == "replace"
                   else "skipped)"))
        if not any(d.strip() for d in docs):
            raise ValueError(f"domain {sub.name!r} is empty: no non-empty files matching {pattern!r} in {sub}")
        splits[sub.name] = split_docs(docs, sub.name, max_mb * 1e6, heldout_fraction, seed)
        info[sub.name] = {"description": f"text files from {sub}", "source_files": len(files), **counts}
    config = {"text_dir": str(text_dir.resolve()), "pattern": pattern, "heldout_fraction": heldout_fraction,
              "seed": seed, "max_mb": None if max_mb == float("inf") else max_mb, "errors": errors}
    return write_corpus(out_dir, splits, tokenizer, bpe_vocab_size, info, config, log)
