"""A Hugging Face tokenizer (the ``tokenizers`` library's ``tokenizer.json``) for corpora.

``HFTokenizer.from_file("path/to/tokenizer.json")`` (CLI: ``--tokenizer path/to/tokenizer.json``)
loads the file any model family ships (Llama, Mistral, GPT-2, ...), offline; ``from_pretrained``
fetches one by hub name and needs the network (``--tokenizer hf:NAME``).

Special tokens, stated once for every corpus:

* Documents are encoded **without** the tokenizer's own template (``add_special_tokens=False``),
  so a post-processor that adds ``<s>`` or ``[CLS]`` never runs.
* **EOS** ``eos_id`` follows every document: ``eos_token`` if given, else the first of
  ``EOS_CANDIDATES`` in the vocabulary (``<|endoftext|>``, ``</s>``, ``<|end_of_text|>``,
  ``<eos>``); a vocabulary with none of them needs an explicit ``eos_token`` (``--eos-token``).
* **BOS** ``bos_id`` precedes every document only when ``bos_token`` is given (``--bos-token
  '<s>'``, as Llama models were trained); by default there is none.
* ``vocab_size`` = the largest id + 1 (added tokens included): ``model.vocab_size=0`` takes it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

HF_FILE = "hf_tokenizer.json"
EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>")


def _lib():
    try:
        import tokenizers
    except ImportError as e:
        raise ImportError("a Hugging Face tokenizer needs the `tokenizers` package: pip install 'ado-jax[bpe]'") from e
    return tokenizers


def check_ids(ids: np.ndarray, vocab_size: int) -> None:
    """Raises ValueError naming the first id of ``ids: [n]`` outside ``[0, vocab_size)``."""
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = int(ids.max()) if ids.max() >= vocab_size else int(ids.min())
        raise ValueError(f"token id {bad} is outside the vocabulary [0, {vocab_size})")


def decode_ids(tok, ids: Iterable[int], vocab_size: int) -> str:
    """The text of ``ids: [n]`` by a ``tokenizers.Tokenizer`` ``tok``, special tokens dropped."""
    ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
    check_ids(ids, vocab_size)
    return tok.decode(ids.tolist(), skip_special_tokens=True)


def save_atomic(tok, path: str | os.PathLike) -> None:
    """Writes a ``tokenizers.Tokenizer`` to ``path`` via a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tok.save(str(tmp))
    os.replace(tmp, path)


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` with the corpus's EOS/BOS rule (module docstring)."""

    kind = "hf"

    def __init__(self, tokenizer, eos_token: str | None = None, bos_token: str | None = None):
        self._tok = tokenizer
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values()) + 1
        if eos_token is None:
            eos_token = next((t for t in EOS_CANDIDATES if t in vocab), None)
            if eos_token is None:
                raise ValueError(f"the tokenizer has none of the end-of-document tokens {list(EOS_CANDIDATES)}; "
                                 "name one with --eos-token")
        for role, token in (("eos", eos_token), ("bos", bos_token)):
            if token is not None and token not in vocab:
                raise ValueError(f"{role} token {token!r} is not in the tokenizer's vocabulary")
        self.eos_token, self.bos_token = eos_token, bos_token
        self.eos_id = vocab[eos_token]
        self.bos_id = None if bos_token is None else vocab[bos_token]

    @classmethod
    def from_file(cls, path: str | os.PathLike, eos_token: str | None = None,
                  bos_token: str | None = None) -> "HFTokenizer":
        """Loads a ``tokenizer.json`` (Hugging Face ``tokenizers`` format) from disk."""
        try:
            tok = _lib().Tokenizer.from_file(str(path))
        except Exception as e:  # the library raises a bare Exception on a malformed file
            raise ValueError(f"{path}: not a Hugging Face tokenizer.json ({e})") from None
        return cls(tok, eos_token, bos_token)

    @classmethod
    def from_pretrained(cls, name: str, eos_token: str | None = None, bos_token: str | None = None) -> "HFTokenizer":
        """Downloads the tokenizer of hub model ``name`` (needs the network)."""
        return cls(_lib().Tokenizer.from_pretrained(name), eos_token, bos_token)

    def encode(self, text: str) -> np.ndarray:
        """Returns uint32[n] ids of ``text`` (no special tokens added)."""
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.uint32)

    def encode_docs(self, docs: Sequence[str]) -> np.ndarray:
        """Returns uint32[n_tokens]: per document ``[bos_id] + ids + [eos_id]`` (bos only if set)."""
        head = [] if self.bos_id is None else [self.bos_id]
        parts = [np.asarray(head + enc.ids + [self.eos_id], dtype=np.uint32)
                 for enc in self._tok.encode_batch(list(docs), add_special_tokens=False)]
        return np.concatenate(parts) if parts else np.zeros((0,), np.uint32)

    def decode(self, ids: Iterable[int]) -> str:
        """Returns the text of ``ids: [n]`` (special tokens dropped)."""
        return decode_ids(self._tok, ids, self.vocab_size)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the tokenizer (its ``tokenizer.json`` form) to ``path`` atomically."""
        save_atomic(self._tok, path)

    def to_config(self) -> dict:
        """What a corpus's ``tokenizer.json`` records (the model itself is in ``hf_tokenizer.json``)."""
        return {"kind": self.kind, "vocab_size": self.vocab_size, "eos_id": self.eos_id, "eos_token": self.eos_token,
                "bos_id": self.bos_id, "bos_token": self.bos_token, "file": HF_FILE}
