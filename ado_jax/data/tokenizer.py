"""Offline tokenizers: byte-level (zero setup, the default), a locally trained BPE, and any
Hugging Face ``tokenizer.json`` (``hf_tokenizer.HFTokenizer``; its EOS/BOS rule is stated there).

Both turn a list of documents into one flat token stream with an end-of-document id after each
document, which is how the ``.bin`` token files store a domain::

    tok = ByteTokenizer()                    # vocab 257: bytes 0..255 + <eos> = 256
    ids = tok.encode_docs(["a doc", "another"])   # uint32[n_tokens], eos after each doc
    tok = BPETokenizer.train(docs, vocab_size=4096)   # needs `pip install tokenizers` (extra "bpe")
    save_tokenizer(tok, corpus_dir); tok = load_tokenizer(corpus_dir)
    model_vocab = tok.vocab_size             # feeds the model config

The saved form is ``tokenizer.json`` (kind, vocab_size, eos_id) plus ``bpe.json`` (the
``tokenizers`` model) for BPE or ``hf_tokenizer.json`` for a Hugging Face one. Nothing here
needs the network except ``resolve_tokenizer("hf:NAME")``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ado_jax import storage
from ado_jax.data.hf_tokenizer import HFTokenizer, check_ids, decode_ids, save_atomic

TOKENIZER_FILE = "tokenizer.json"
BPE_FILE = "bpe.json"
EOS = "<|endoftext|>"


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255; ``eos_id`` = 256 when ``add_eos`` (vocab 257), else vocab 256."""

    kind = "byte"

    def __init__(self, add_eos: bool = True):
        self.add_eos = bool(add_eos)
        self.eos_id = 256 if self.add_eos else None
        self.vocab_size = 257 if self.add_eos else 256

    def encode(self, text: str) -> np.ndarray:
        """Returns uint32[n] ids of ``text``'s UTF-8 bytes (no eos)."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint32)

    def encode_docs(self, docs: Sequence[str]) -> np.ndarray:
        """Returns uint32[n_tokens]: the documents' ids, each followed by ``eos_id`` if any."""
        if not self.add_eos:
            return self.encode("".join(docs))
        sep = b"\x00"  # placeholder byte, replaced by eos below; real NULs are kept as 0
        raw = sep.join(d.encode("utf-8") for d in docs) + (sep if docs else b"")
        ids = np.frombuffer(raw, dtype=np.uint8).astype(np.uint32)
        lengths = np.fromiter((len(d.encode("utf-8")) for d in docs), dtype=np.int64, count=len(docs))
        ids[np.cumsum(lengths + 1) - 1] = self.eos_id
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Returns the text of ``ids: [n]``; eos becomes a newline, bad UTF-8 is replaced."""
        ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
        check_ids(ids, self.vocab_size)
        out, start = [], 0
        for pos in np.flatnonzero(ids >= 256).tolist() + [len(ids)]:
            out.append(ids[start:pos].astype(np.uint8).tobytes().decode("utf-8", errors="replace"))
            start = pos + 1
        return "\n".join(out)

    def to_config(self) -> dict:
        """What ``tokenizer.json`` records to rebuild this tokenizer."""
        return {"kind": self.kind, "vocab_size": self.vocab_size, "eos_id": self.eos_id, "add_eos": self.add_eos}


class BPETokenizer:
    """Byte-level BPE trained locally with the ``tokenizers`` package (optional extra ``bpe``)."""

    kind = "bpe"

    def __init__(self, tokenizer):
        self._tok = tokenizer
        self.eos_id = tokenizer.token_to_id(EOS)
        self.vocab_size = tokenizer.get_vocab_size()

    @staticmethod
    def _lib():
        try:
            import tokenizers
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("BPE needs the `tokenizers` package: pip install 'ado-jax[bpe]' "
                              "(or pip install tokenizers); the byte tokenizer needs nothing") from e
        return tokenizers

    @classmethod
    def train(cls, docs: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2) -> "BPETokenizer":
        """Trains a byte-level BPE of ``vocab_size`` ids (incl. 256 byte symbols and eos) on ``docs``."""
        if vocab_size < 258:
            raise ValueError(f"bpe vocab_size must be >= 258 (256 bytes + eos + merges), got {vocab_size}")
        tk = cls._lib()
        tok = tk.Tokenizer(tk.models.BPE())
        tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOS],
            initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(docs, trainer=trainer)
        return cls(tok)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "BPETokenizer":
        return cls(cls._lib().Tokenizer.from_file(str(path)))

    def encode(self, text: str) -> np.ndarray:
        """Returns uint32[n] ids of ``text`` (no eos)."""
        return np.asarray(self._tok.encode(text).ids, dtype=np.uint32)

    def encode_docs(self, docs: Sequence[str]) -> np.ndarray:
        """Returns uint32[n_tokens]: each document's ids followed by ``eos_id``."""
        parts = []
        for enc in self._tok.encode_batch(list(docs)):
            parts.append(np.asarray(enc.ids + [self.eos_id], dtype=np.uint32))
        return np.concatenate(parts) if parts else np.zeros((0,), np.uint32)

    def decode(self, ids: Iterable[int]) -> str:
        """Returns the text of ``ids: [n]`` (eos dropped)."""
        return decode_ids(self._tok, ids, self.vocab_size)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the BPE model to ``path`` atomically (temporary file, then rename)."""
        save_atomic(self._tok, path)

    def to_config(self) -> dict:
        """What ``tokenizer.json`` records to rebuild this tokenizer (the BPE model is in ``bpe.json``)."""
        return {"kind": self.kind, "vocab_size": self.vocab_size, "eos_id": self.eos_id, "file": BPE_FILE}


Tokenizer = ByteTokenizer | BPETokenizer | HFTokenizer


def make_tokenizer(kind: str = "byte", docs: Iterable[str] | None = None, vocab_size: int = 4096) -> Tokenizer:
    """Returns a new tokenizer: ``kind`` "byte", or "bpe" trained on ``docs`` with ``vocab_size`` ids."""
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        if docs is None:
            raise ValueError("a bpe tokenizer needs training docs")
        return BPETokenizer.train(docs, vocab_size=vocab_size)
    raise ValueError(f"unknown tokenizer kind {kind!r}; expected 'byte' or 'bpe'")


def save_tokenizer(tok: Tokenizer, directory: str | os.PathLike) -> None:
    """Writes ``tokenizer.json`` (+ ``bpe.json`` for BPE) into ``directory`` atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(tok, (BPETokenizer, HFTokenizer)):
        tok.save(directory / tok.to_config()["file"])
    storage.write_text(directory / TOKENIZER_FILE, json.dumps(tok.to_config(), indent=1))


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """Loads the tokenizer saved in a corpus directory; ``.vocab_size`` feeds the model config."""
    path = Path(directory) / TOKENIZER_FILE
    if not path.exists():
        raise FileNotFoundError(f"no {TOKENIZER_FILE} in {directory}; build it with `ado-jax corpus build` "
                                "or `ado-jax corpus encode`")
    cfg = json.loads(path.read_text())
    if cfg.get("kind") == "byte":
        tok = ByteTokenizer(add_eos=cfg.get("add_eos", True))
    elif cfg.get("kind") == "bpe":
        tok = BPETokenizer.from_file(Path(directory) / cfg.get("file", BPE_FILE))
    elif cfg.get("kind") == "hf":
        tok = HFTokenizer.from_file(Path(directory) / cfg["file"], cfg["eos_token"], cfg.get("bos_token"))
    elif "model" in cfg:
        raise ValueError(f"{path} is a Hugging Face tokenizer file, not a corpus's; pass it as --tokenizer {path}")
    else:
        raise ValueError(f"{path}: unknown tokenizer kind {cfg.get('kind')!r}; expected 'byte', 'bpe' or 'hf'")
    if tok.vocab_size != cfg.get("vocab_size"):
        raise ValueError(f"{path}: vocab_size {cfg.get('vocab_size')} does not match the loaded "
                         f"tokenizer's {tok.vocab_size}")
    return tok


def resolve_tokenizer(spec, eos_token: str | None = None, bos_token: str | None = None) -> Tokenizer:
    """The tokenizer a ``--tokenizer`` value names.

    ``spec``: a tokenizer object (returned as is); "byte"; a Hugging Face ``tokenizer.json`` file,
    or a folder holding one (a model download); a corpus directory (its saved tokenizer); or
    ``hf:NAME``, fetched from the Hugging Face hub (needs the network). ``eos_token`` /
    ``bos_token`` apply to Hugging Face tokenizers (``hf_tokenizer`` states the rule).
    """
    if not isinstance(spec, (str, os.PathLike)):
        return spec
    spec = str(spec)
    if spec == "byte":
        return ByteTokenizer()
    if spec == "bpe":
        raise ValueError("tokenizer 'bpe' is trained on the data: use it with `ado-jax corpus build|encode`")
    if spec.startswith("hf:"):
        return HFTokenizer.from_pretrained(spec[3:], eos_token, bos_token)
    path = Path(spec)
    if path.is_dir():
        file = path / TOKENIZER_FILE
        if file.exists() and "kind" in json.loads(file.read_text()):
            return load_tokenizer(path)
        if not file.exists():
            raise FileNotFoundError(f"--tokenizer {spec}: the folder has no {TOKENIZER_FILE}")
        path = file
    if not path.is_file():
        raise FileNotFoundError(f"--tokenizer {spec}: expected byte, bpe, a tokenizer.json file, a corpus "
                                "directory or hf:NAME")
    return HFTokenizer.from_file(path, eos_token, bos_token)
