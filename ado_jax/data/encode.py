"""Your own text folders as a corpus: ``encode_dir`` (CLI: ``ado-jax corpus encode``).

It splits and writes the documents the way the built-in corpus does (``corpus.split_docs``,
``corpus.write_corpus``), so the result has the same layout (manifest, tokenizer, ``text/``,
``tokens/``) and loads the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

from ado_jax.data.corpus import split_docs, write_corpus
from ado_jax.data.tokenizer import load_tokenizer


def encode_dir(text_dir: str | os.PathLike, out_dir: str | os.PathLike, tokenizer="byte",
               pattern: str = "**/*", heldout_fraction: float = 0.05, seed: int = 0,
               bpe_vocab_size: int = 4096, max_mb: float = float("inf"), log=print) -> Path:
    """Encodes your own domains into a corpus directory (CLI: ``ado-jax corpus encode``).

    ``text_dir`` holds one subdirectory per domain; every file in it matching ``pattern`` is one
    UTF-8 document. Documents are split into train / held-out by ``seed`` as in the built-in
    corpus, and ``out_dir`` gets the same layout (manifest, tokenizer, text/, tokens/).
    ``tokenizer``: "byte", "bpe" (trained on these domains), a tokenizer object, or the path of
    a corpus directory whose saved tokenizer should be reused.
    """
    text_dir = Path(text_dir)
    if not text_dir.is_dir():
        raise FileNotFoundError(f"text directory {text_dir} does not exist")
    subdirs = sorted(p for p in text_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise ValueError(f"{text_dir} has no subdirectories; put each domain's text files in <dir>/<domain>/")
    if isinstance(tokenizer, (str, os.PathLike)) and str(tokenizer) not in ("byte", "bpe"):
        tokenizer = load_tokenizer(tokenizer)
    splits, info = {}, {}
    for sub in subdirs:
        files = sorted(p for p in sub.glob(pattern) if p.is_file())
        docs = [p.read_text(encoding="utf-8", errors="replace") for p in files]
        if not any(d.strip() for d in docs):
            raise ValueError(f"domain {sub.name!r} is empty: no non-empty files matching {pattern!r} in {sub}")
        splits[sub.name] = split_docs(docs, sub.name, max_mb * 1e6, heldout_fraction, seed)
        info[sub.name] = {"description": f"text files from {sub}", "source_files": len(files)}
    config = {"text_dir": str(text_dir.resolve()), "pattern": pattern, "heldout_fraction": heldout_fraction,
              "seed": seed, "max_mb": None if max_mb == float("inf") else max_mb}
    return write_corpus(out_dir, splits, tokenizer, bpe_vocab_size, info, config, log)
