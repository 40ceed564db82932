"""``ado-jax corpus upload LOCAL_CORPUS gs://bucket/corpus``: copy a finished corpus to an object store.

First every file is checked against what the corpus records, and nothing is uploaded when one
does not match (a ``ValueError`` naming the file):

* each token file ``tokens/**.bin``: its size against its sidecar's count and dtype, its sha256
  against the sidecar's and, for a shard, the shard index's; each domain's token count against
  ``manifest.json``;
* each domain's documents ``text/<domain>.<split>.jsonl``, where present: their content hash
  against the manifest's ``sha256`` (``corpus_check.files_hash``).

Then the files are uploaded (``workers`` at a time). An object upload is atomic, so each object
appears complete or not at all; after each upload the object's MD5 (from the store) is compared
with the bytes checked, and ``manifest.json`` goes up last, once everything else is there: a
reader (``remote_tokens.read_manifest``) never sees a partial corpus. Rerunning after an
interruption skips the objects already uploaded (same size and MD5). A destination holding another
corpus's manifest, or objects the local corpus lacks, is refused.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import hashlib
import json
import os
import time
from pathlib import Path

from ado_jax import storage
from ado_jax.data.corpus import MANIFEST, load_manifest
from ado_jax.data.corpus_check import files_hash
from ado_jax.data.shards import INDEX_SUFFIX
from ado_jax.data.token_files import SPLITS

_BLOCK = 8 << 20


def corpus_files(local: str | os.PathLike) -> list[str]:
    """Relative paths (posix) of the files a corpus at ``local`` consists of, sorted, manifest last:
    everything but hidden names, temporaries (``.tmp-``, ``.partial``) and an encode's ``resume/``."""
    root = Path(local)
    out = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if not path.is_file() or rel == MANIFEST or rel.startswith("resume/"):
            continue
        if any(part.startswith(".") for part in rel.split("/")) or ".tmp-" in rel or rel.endswith(".partial"):
            continue
        out.append(rel)
    return sorted(out) + [MANIFEST]


def _hashes(path: Path) -> tuple[str, str, int]:
    """``(sha256 hex, md5 base64, bytes)`` of a file."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            sha.update(block)
            md5.update(block)
            size += len(block)
    return sha.hexdigest(), base64.b64encode(md5.digest()).decode(), size


def _check_tokens(root: Path, rel: str, sha: str, size: int, expected: dict) -> None:
    side = root / rel[:-4]
    side = side.with_name(side.name + ".json")
    if not side.exists():
        raise ValueError(f"{root / rel}: its sidecar {side.name} is missing; not uploading")
    meta = json.loads(side.read_text())
    want = meta["count"] * {"uint16": 2, "uint32": 4}.get(meta.get("dtype"), 0)
    if size != want:
        raise ValueError(f"{root / rel}: {size} bytes but its sidecar says {meta['count']} {meta.get('dtype')} "
                         f"tokens = {want} bytes (truncated or replaced): not uploading")
    for what, digest in (("its sidecar", meta.get("sha256")), ("the shard index", expected.get(rel))):
        if digest is not None and digest != sha:
            raise ValueError(f"{root / rel}: sha256 {sha[:12]}... does not match {what}'s {digest[:12]}... (file "
                             "changed or corrupted since it was encoded): not uploading; re-encode this corpus")


def verify_corpus(local: str | os.PathLike, workers: int = 4) -> dict[str, tuple[str, int]]:
    """Checks the corpus at ``local`` (see the module docstring); returns ``{relative path:
    (md5 base64, bytes)}`` of its files. Raises ValueError naming the first file that does not match."""
    root = Path(local)
    manifest = load_manifest(root)
    files = corpus_files(root)
    shard_sha, counts = {}, {}
    for name in manifest["names"]:
        for split in SPLITS:
            index = root / "tokens" / f"{name}.{split}{INDEX_SUFFIX}"
            single = root / "tokens" / f"{name}.{split}.json"
            if index.exists():
                meta = json.loads(index.read_text())
                shard_sha.update({f"tokens/{s['file']}": s.get("sha256") for s in meta["shards"]})
            elif single.exists():
                meta = json.loads(single.read_text())
            else:
                raise ValueError(f"{root}: domain {name!r} has no {split} token file (tokens/{name}.{split}.bin)")
            counts[(name, split)] = meta["count"]
    for d in manifest.get("domains", []):
        for split, info in d.get("splits", {}).items():
            if "tokens" in info and counts.get((d["name"], split), info["tokens"]) != info["tokens"]:
                raise ValueError(f"{root}/tokens: domain {d['name']!r} ({split}) has {counts[(d['name'], split)]} "
                                 f"tokens but {MANIFEST} records {info['tokens']}: not uploading")
        if d.get("sha256") and (root / "text" / f"{d['name']}.train.jsonl").exists():
            got = files_hash(root, d["name"])
            if got != d["sha256"]:
                raise ValueError(f"{root}/text/{d['name']}.{{train,heldout}}.jsonl: the documents hash to "
                                 f"{(got or 'a missing file')[:12]}... but {MANIFEST} records {d['sha256'][:12]}... "
                                 "(edited or corrupted): not uploading")
    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        hashed = dict(zip(files, pool.map(lambda rel: _hashes(root / rel), files)))
    for rel, (sha, _, size) in hashed.items():
        if rel.startswith("tokens/") and rel.endswith(".bin"):
            _check_tokens(root, rel, sha, size, shard_sha)
    return {rel: (md5, size) for rel, (_, md5, size) in hashed.items()}


def _same(info: dict | None, md5: str, size: int) -> bool:
    return info is not None and info.get("size") == size and info.get("md5Hash") in (md5, None)


def upload_corpus(local: str | os.PathLike, dest: str, workers: int = 4, log=print) -> dict:
    """Copies the corpus at ``local`` to the object-store URL ``dest`` (checked first, manifest last).

    Returns ``{"files", "uploaded", "skipped", "bytes", "seconds"}``. Raises ValueError for a file
    that does not match the corpus's records (nothing uploaded), FileExistsError for a destination
    holding something else, OSError when an uploaded object differs from the bytes checked."""
    if not storage.is_object_store(dest):
        raise ValueError(f"{dest!r} is not an object-store URL (gs://bucket/path); copy local folders with cp")
    t0, root = time.time(), Path(local)
    expected = verify_corpus(root, workers)
    log(f"{root}: {len(expected)} files, {sum(s for _, s in expected.values()) / 1e6:.1f} MB match the corpus's "
        "hashes")
    fs, inner = storage.filesystem(dest)
    inner = inner.rstrip("/")
    present = {p[len(inner) + 1:]: info for p, info in fs.find(inner, detail=True).items()} if fs.exists(inner) else {}
    if MANIFEST in present and fs.cat_file(f"{inner}/{MANIFEST}") != (root / MANIFEST).read_bytes():
        raise FileExistsError(f"{dest} already holds another corpus (its {MANIFEST} differs); upload to another "
                              "path or delete that one first")
    stray = sorted(set(present) - set(expected))
    if stray:
        raise FileExistsError(f"{dest} holds objects that are not part of {root}: {stray[:5]}"
                              f"{' ...' if len(stray) > 5 else ''}; upload to an empty path")

    def put(rel: str) -> bool:
        md5, size = expected[rel]
        if _same(present.get(rel), md5, size):
            return False
        fs.put_file(str(root / rel), f"{inner}/{rel}")
        info = fs.info(f"{inner}/{rel}")
        if not _same(info, md5, size):
            fs.rm_file(f"{inner}/{rel}")
            raise OSError(f"{root / rel} changed while it was uploaded (the object's MD5 or size differs from the "
                          "bytes checked); deleted it there: check the local corpus and rerun")
        return True

    body = [rel for rel in expected if rel != MANIFEST]
    with cf.ThreadPoolExecutor(max_workers=workers) as pool:
        done = list(pool.map(put, body))
    manifest_uploaded = put(MANIFEST)  # last: the corpus exists for readers from here on
    uploaded = sum(done) + manifest_uploaded
    out = {"files": len(expected), "uploaded": uploaded, "skipped": len(expected) - uploaded,
           "bytes": sum(s for _, s in expected.values()), "seconds": round(time.time() - t0, 2)}
    log(f"{dest}: {out['uploaded']} files uploaded, {out['skipped']} already there, in {out['seconds']} s")
    return out
