"""``ado-jax corpus build --check``: does a corpus match its manifest's per-domain content hashes?

Two questions, per domain, against the sha256 a manifest records (``corpus.content_hash``):

* **files**: do the documents on disk (``text/<domain>.<split>.jsonl``) still hash to it?
* **packages**: does *this machine* build the same documents — the packages under the build's
  root extracted, capped and split with the manifest's settings (nothing is written)? Only for
  the built-in corpus; an encode of text folders is checked on its files alone.

``check_corpus_hashes(corpus_dir, reference=None)`` returns one row per domain; ``reference``
(another corpus's ``manifest.json``, e.g. the one a results file was made with) replaces the
corpus's own hashes as the expectation. A domain matches when every available answer agrees.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ado_jax.data.corpus import content_hash, extract_domains, load_manifest
from ado_jax.data.token_files import SPLITS


def files_hash(corpus_dir: Path, name: str) -> str | None:
    """The content hash of ``name``'s text files on disk (None when a file is missing)."""
    h = hashlib.sha256()
    for split in SPLITS:
        path = corpus_dir / "text" / f"{name}.{split}.jsonl"
        if not path.exists():
            return None
        h.update(f"{split}\n".encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def check_corpus_hashes(corpus_dir: str | os.PathLike, reference: str | os.PathLike | None = None,
                        packages: bool = True, log=print) -> list[dict]:
    """Rows ``{"name", "expected", "files", "packages", "ok"}`` (hashes as hex; None where not
    checked or not available) for every domain of the corpus at ``corpus_dir``."""
    corpus_dir = Path(corpus_dir)
    manifest = load_manifest(corpus_dir)
    if (corpus_dir / "encode.json").exists():
        raise ValueError(f"{corpus_dir} is an encode of record files, which --check does not cover: its shards "
                         "carry sha256 digests instead (token_files.open_tokens(path, verify='sha256'))")
    packages = packages and "root" in manifest.get("config", {})  # a text-folder encode: files only
    expected = manifest if reference is None else json.loads(Path(reference).read_text())
    want = {d["name"]: d.get("sha256") for d in expected["domains"]}
    missing = [n for n, h in want.items() if h is None]
    if missing:
        raise ValueError(f"the manifest records no content hash for {missing}; rebuild it with this version "
                         "(`ado-jax corpus build --force`)")
    built = {}
    if packages:
        config = {**manifest["config"], "domains": sorted(want)}
        splits, _ = extract_domains(config, install=False, log=log)
        built = {n: content_hash(s) for n, s in splits.items()}
    rows = []
    for name in sorted(want):
        row = {"name": name, "expected": want[name], "files": files_hash(corpus_dir, name),
               "packages": built.get(name)}
        row["ok"] = all(row[k] in (None, want[name]) for k in ("files", "packages")) and (
            row["files"] is not None or row["packages"] is not None)
        rows.append(row)
    return rows


def format_rows(rows: list[dict]) -> str:
    """One line per domain: name, ok / MISMATCH, and which side differs (short hashes)."""
    lines = []
    for r in rows:
        short = {k: (r[k] or "-")[:12] for k in ("expected", "files", "packages")}
        state = "ok" if r["ok"] else "MISMATCH"
        lines.append(f"{r['name']:12s} {state:8s} manifest {short['expected']}  files {short['files']}  "
                     f"packages {short['packages']}")
    return "\n".join(lines)
