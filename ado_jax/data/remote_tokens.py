"""A corpus in an object store (``gs://...``, any ``scheme://`` fsspec opens), read by byte ranges.

``ado-jax corpus upload`` copies a local corpus there (``corpus_upload``); the layout is the local
one (``manifest.json``, ``tokenizer.json``, ``tokens/<domain>.<split>.bin`` + sidecars, or shard
indexes). ``open_remote_domains`` mirrors ``token_files.open_domains``: the same checks (manifest
names, sidecar dtype and vocab, object size == count * itemsize, shard counts), from one listing
of ``tokens/`` and one concurrent read of the small JSON files, and returns each domain as a
``RemoteTokens``: nothing is downloaded until a range is asked for. The host loader reads them in
large chunks ahead of time (``chunked_source``); ``np.asarray(RemoteTokens)`` downloads a whole
domain (the held-out split, or ``data.loader=device``).
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from ado_jax import storage
from ado_jax.data.shards import INDEX_FORMAT, INDEX_SUFFIX
from ado_jax.data.token_files import SPLITS

MANIFEST = "manifest.json"


class RemoteTokens:
    """``[size]`` token ids of one ``dtype`` stored as the concatenation of objects (``segments``).

    Attributes:
      fs: the fsspec filesystem; segments: ``[(path within fs, count, sha256 or None), ...]`` in
      reading order; offsets: ``[S + 1]`` int64 first token of each segment.
    """

    ndim = 1

    def __init__(self, fs, segments: Sequence[tuple[str, int, str | None]], dtype):
        self.fs, self.dtype = fs, np.dtype(dtype).newbyteorder("<")
        self.segments = [(p, int(n), h) for p, n, h in segments if int(n) > 0]
        self.offsets = np.concatenate([[0], np.cumsum([n for _, n, _ in self.segments], dtype=np.int64)])
        self.size = int(self.offsets[-1])
        self.shape = (self.size,)

    @classmethod
    def concat(cls, parts: Sequence["RemoteTokens"]) -> "RemoteTokens":
        """The parts one after another (a ``data.groups`` group); they must share dtype."""
        if len({p.dtype for p in parts}) > 1:
            raise ValueError(f"cannot join domains of dtypes {sorted({p.dtype.name for p in parts})}")
        return cls(parts[0].fs, [s for p in parts for s in p.segments], parts[0].dtype)

    def __len__(self) -> int:
        """Tokens in all segments."""
        return self.size

    def identity(self) -> str:
        """A string naming exactly these bytes (paths, counts, sha256s): the local cache's key."""
        return json.dumps([self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0],
                           self.dtype.name, self.segments])

    def pieces(self, lo: int, hi: int) -> list[tuple[str, int, int]]:
        """``[(path, first byte, end byte), ...]``: the range requests that read tokens ``[lo, hi)``."""
        if not 0 <= lo <= hi <= self.size:
            raise IndexError(f"token range [{lo}, {hi}) is outside [0, {self.size})")
        out, item = [], self.dtype.itemsize
        first = int(np.searchsorted(self.offsets, lo, side="right")) - 1
        for s in range(max(first, 0), len(self.segments)):
            a, b = max(lo, self.offsets[s]), min(hi, self.offsets[s + 1])
            if a >= b:
                break
            a, b = int(a - self.offsets[s]), int(b - self.offsets[s])
            out.append((self.segments[s][0], a * item, b * item))
        return out

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Tokens ``[lo, hi)`` as a read-only array ``[hi - lo]``: one range GET per object it spans."""
        parts = []
        for path, a, b in self.pieces(lo, hi):
            try:
                data = self.fs.cat_file(path, start=a, end=b)
            except FileNotFoundError:
                raise FileNotFoundError(f"{self.fs.unstrip_protocol(path)} is gone (corpus changed?)") from None
            if len(data) != b - a:
                raise OSError(f"{self.fs.unstrip_protocol(path)}: asked bytes [{a}, {b}), got {len(data)}")
            parts.append(np.frombuffer(data, self.dtype))
        if not parts:
            return np.zeros((0,), self.dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def __getitem__(self, key) -> np.ndarray:
        """Tokens of a slice with step 1 (downloaded now)."""
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("RemoteTokens supports slices with step 1 only")
        start, stop, _ = key.indices(self.size)
        return self.read(start, max(start, stop))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.read(0, self.size)
        return out if dtype is None else out.astype(dtype)


def read_json(url: str):
    """The JSON object at ``url``, or FileNotFoundError naming it."""
    text = storage.read_text(url)
    if text is None:
        raise FileNotFoundError(f"{url} does not exist")
    return json.loads(text)


def read_manifest(corpus_url: str) -> dict:
    """The manifest of the corpus at ``corpus_url``, or FileNotFoundError saying how to upload one."""
    text = storage.read_text(f"{corpus_url.rstrip('/')}/{MANIFEST}")
    if text is None:
        raise FileNotFoundError(f"no corpus at {corpus_url} ({MANIFEST} missing); copy a local one there with "
                                f"`ado-jax corpus upload LOCAL_CORPUS {corpus_url}`")
    return json.loads(text)


def remote_vocab_size(corpus_url: str) -> int:
    """The vocabulary size recorded in the corpus's ``tokenizer.json``."""
    tok = read_json(f"{corpus_url.rstrip('/')}/tokenizer.json")
    if not isinstance(tok, dict) or not isinstance(tok.get("vocab_size"), int):
        raise ValueError(f"{corpus_url}/tokenizer.json records no vocab_size")
    return tok["vocab_size"]


def _meta(fs, folder: str, sizes: dict, names: Sequence[str], split: str) -> dict[str, dict]:
    """``{name: sidecar or shard index}`` of ``split``, read concurrently (one request each)."""
    paths = {}
    for name in names:
        index = f"{folder}/{name}.{split}{INDEX_SUFFIX}"
        paths[name] = index if index in sizes else f"{folder}/{name}.{split}.json"
    missing = [fs.unstrip_protocol(p) for p in paths.values() if p not in sizes]
    if missing:
        raise FileNotFoundError(f"token file sidecar(s) missing: {missing} (upload the corpus again)")
    texts = fs.cat(list(paths.values()))
    return {name: json.loads(texts[p]) for name, p in paths.items()}


def open_remote_domains(corpus_url: str, split: str = "train", names: Sequence[str] | None = None,
                        min_tokens: int = 1) -> dict[str, RemoteTokens]:
    """``{domain: RemoteTokens [count]}`` of ``split`` (the manifest's names, or ``names``), checked
    like ``token_files.open_domains``: unknown names, sidecar dtype and vocab agreement, every
    object's size against its count, at least ``min_tokens`` per domain. Reads only metadata."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    known = read_manifest(corpus_url)["names"]
    names = list(known if names is None else names)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown domain name(s) {unknown}; {corpus_url} has {known}")
    fs, inner = storage.filesystem(corpus_url)
    folder = f"{inner.rstrip('/')}/tokens"
    sizes = {p: info["size"] for p, info in fs.find(folder, detail=True).items()}
    metas, out = _meta(fs, folder, sizes, names, split), {}
    for name in names:
        meta = metas[name]
        if meta.get("dtype") not in ("uint16", "uint32"):
            raise ValueError(f"{corpus_url}: domain {name!r} ({split}) has dtype {meta.get('dtype')!r}; "
                             "expected uint16 or uint32")
        if meta.get("format") == INDEX_FORMAT:
            segs = [(f"{folder}/{s['file']}", s["count"], s.get("sha256")) for s in meta["shards"]]
        else:
            segs = [(f"{folder}/{name}.{split}.bin", meta["count"], meta.get("sha256"))]
        item = np.dtype(meta["dtype"]).itemsize
        for path, count, _ in segs:
            if sizes.get(path, 0 if count == 0 else None) != count * item:
                raise ValueError(f"{fs.unstrip_protocol(path)}: object has {sizes.get(path)} bytes but its "
                                 f"sidecar says {count} {meta['dtype']} tokens = {count * item} bytes "
                                 "(missing, truncated or replaced; upload the corpus again)")
        out[name] = RemoteTokens(fs, segs, meta["dtype"])
        if out[name].size < min_tokens:
            raise ValueError(f"domain {name!r} ({split}) has {out[name].size} tokens; at least {min_tokens} are "
                             "needed (empty domain or sequence too long)")
    for name in names[1:]:
        for key in ("dtype", "vocab_size"):
            if metas[name].get(key) != metas[names[0]].get(key):
                raise ValueError(f"domain {name!r} has {key} {metas[name].get(key)} but {names[0]!r} has "
                                 f"{metas[names[0]].get(key)}; all domains must share one tokenizer")
    return out
