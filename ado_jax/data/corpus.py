"""The built-in multi-domain text corpus, built offline from Debian packages.

``build_corpus(out_dir)`` (CLI: ``ado-jax corpus build [--out DIR]``) gathers the domains of
``corpus_domains.DOMAINS`` (installing missing packages with apt-get when run as root, else
saying exactly what to install), caps each at ``max_mb`` by a seeded random choice of documents,
splits documents into train / held-out with a fixed seed, and writes::

    <out>/manifest.json                 domains (name, packages, license, bytes, n_docs, tokens per split,
                                        sha256 of the documents: ``content_hash``)
    <out>/tokenizer.json [+ bpe.json]   the tokenizer (``load_tokenizer(out)``)
    <out>/text/<domain>.<split>.jsonl   the raw documents, one JSON string a line
    <out>/tokens/<domain>.<split>.bin   token ids (+ .json sidecars; see token_files)

Everything is written into a temporary sibling directory and renamed into place at the end, so a
half-built corpus is never seen; an existing corpus whose manifest matches the request is reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from ado_jax.data import token_files
from ado_jax.data.corpus_domains import DOMAINS
from ado_jax.data.tokenizer import Tokenizer, load_tokenizer, make_tokenizer, save_tokenizer

MANIFEST = "manifest.json"
FORMAT = "ado_jax.corpus/v1"


def default_corpus_dir() -> Path:
    """``$ADO_JAX_DATA/corpus`` if set, else ``./data/corpus``."""
    return Path(os.environ.get("ADO_JAX_DATA", "data")) / "corpus"


def load_manifest(corpus_dir: str | os.PathLike) -> dict:
    """Returns the manifest of a complete corpus, or raises FileNotFoundError saying how to build one."""
    path = Path(corpus_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"no corpus at {corpus_dir} ({MANIFEST} missing); run `ado-jax corpus build "
                                f"--out {corpus_dir}`")
    return json.loads(path.read_text())


def _domain_rng(seed: int, name: str) -> np.random.Generator:
    # Per-domain streams: adding or removing a domain does not change the others' splits.
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def split_docs(docs: Sequence[str], name: str, max_bytes: float, heldout_fraction: float,
               seed: int) -> dict[str, list[str]]:
    """Chooses documents up to ``max_bytes`` (seeded, original order kept) and splits them.

    Held-out gets ``round(heldout_fraction * n)`` documents, at least one when n >= 2; a domain
    of a single document is split by characters (last ``heldout_fraction`` of it held out).
    """
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise ValueError(f"domain {name!r} has no (non-empty) documents")
    rng = _domain_rng(seed, name)
    sizes = np.array([len(d.encode("utf-8")) for d in docs], np.int64)
    if sizes.sum() > max_bytes:
        order = rng.permutation(len(docs))
        keep = order[np.cumsum(sizes[order]) <= max_bytes]
        docs = [docs[i] for i in np.sort(keep if keep.size else order[:1])]
    if heldout_fraction <= 0:
        return {"train": docs, "heldout": []}
    if len(docs) == 1:
        cut = int(len(docs[0]) * (1 - heldout_fraction))
        return {"train": [docs[0][:cut]], "heldout": [docs[0][cut:]]}
    n_held = min(len(docs) - 1, max(1, round(heldout_fraction * len(docs))))
    held = np.zeros(len(docs), bool)
    held[rng.choice(len(docs), n_held, replace=False)] = True
    return {"train": [d for d, h in zip(docs, held) if not h], "heldout": [d for d, h in zip(docs, held) if h]}


def content_hash(splits: Mapping[str, Sequence[str]]) -> str:
    """sha256 of a domain's documents: per split (train, then heldout) a ``<split>\n`` line and
    each document as the JSON line ``text/<domain>.<split>.jsonl`` holds (hex digest)."""
    h = hashlib.sha256()
    for split in token_files.SPLITS:
        h.update(f"{split}\n".encode())
        for d in splits.get(split, []):
            h.update((json.dumps(d) + "\n").encode())
    return h.hexdigest()


def write_corpus(out_dir: str | os.PathLike, splits: Mapping[str, Mapping[str, list[str]]],
                 tokenizer: str | Tokenizer = "byte", bpe_vocab_size: int = 4096,
                 domain_info: Mapping[str, dict] | None = None, config: dict | None = None,
                 log: Callable[[str], None] = print) -> Path:
    """Writes ``{domain: {"train": docs, "heldout": docs}}`` as a corpus at ``out_dir``, atomically.

    ``tokenizer`` is "byte", "bpe" (trained here on up to 1 MB of each domain's train split, so
    every domain shapes the merges) or a tokenizer object. ``domain_info`` adds manifest fields.
    Replaces nothing: ``out_dir`` must not exist.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; remove it or choose another --out")
    if not splits:
        raise ValueError("no domains to write")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private
    try:
        if isinstance(tokenizer, str):
            sample = ([d for n in sorted(splits) for d in _prefix(splits[n]["train"], 1_000_000)]
                      if tokenizer == "bpe" else None)
            if tokenizer == "bpe":
                log(f"training a {bpe_vocab_size}-id BPE on {sum(map(len, sample)) / 1e6:.1f} MB")
            tokenizer = make_tokenizer(tokenizer, sample, bpe_vocab_size)
        save_tokenizer(tokenizer, tmp)
        domains = []
        for name in sorted(splits):
            entry = {"name": name, **(domain_info or {}).get(name, {}), "splits": {}}
            for split in token_files.SPLITS:
                docs = splits[name].get(split, [])
                (tmp / "text").mkdir(exist_ok=True)
                with open(tmp / "text" / f"{name}.{split}.jsonl", "w") as f:
                    f.writelines(json.dumps(d) + "\n" for d in docs)
                ids = tokenizer.encode_docs(docs)
                token_files.write_tokens(tmp / "tokens" / f"{name}.{split}.bin", ids, tokenizer.vocab_size)
                entry["splits"][split] = {"n_docs": len(docs), "bytes": sum(len(d.encode()) for d in docs),
                                          "tokens": int(ids.size)}
            entry["sha256"] = content_hash(splits[name])
            entry["n_docs"] = sum(s["n_docs"] for s in entry["splits"].values())
            entry["bytes"] = sum(s["bytes"] for s in entry["splits"].values())
            if entry["splits"]["train"]["tokens"] == 0:
                raise ValueError(f"domain {name!r} has no training tokens")
            domains.append(entry)
            log(f"  {name:12s} {entry['n_docs']:7d} docs {entry['bytes'] / 1e6:7.2f} MB "
                f"{entry['splits']['train']['tokens']:10d} train tokens")
        manifest = {"format": FORMAT, "names": sorted(splits), "tokenizer": tokenizer.to_config(),
                    "config": config or {}, "domains": domains,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))  # written last: marks completeness
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _prefix(docs: list[str], max_chars: int) -> list[str]:
    out, total = [], 0
    for d in docs:
        if total >= max_chars:
            break
        out.append(d)
        total += len(d)
    return out


def _ensure_installed(specs, root: Path, install: bool, log) -> None:
    missing = [s for s in specs if not s.find(root)]
    if not missing:
        return
    packages = sorted({p for s in missing for p in s.packages})
    names = [s.name for s in missing]
    can_apt = root == Path("/") and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")
    if install and packages and can_apt:
        log(f"installing {' '.join(packages)} for domains {names}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", *packages]
        if subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, stdin=subprocess.DEVNULL, check=True)
            subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, check=True)
        missing = [s for s in missing if not s.find(root)]
        if not missing:
            return
        names = [s.name for s in missing]
    raise RuntimeError(f"domains {names} are not installed under {root}; install them with:\n"
                       f"  apt-get install -y {' '.join(packages)}\n(or choose other domains with --domains)")


def check_corpus(corpus_dir: str | os.PathLike) -> dict:
    """Opens every token file listed in the manifest (sidecar + size checks); returns the manifest."""
    manifest = load_manifest(corpus_dir)
    load_tokenizer(corpus_dir)
    for split in token_files.SPLITS:
        token_files.open_domains(corpus_dir, split, manifest["names"], min_tokens=0)
    return manifest


def extract_domains(config: dict, install: bool = False, log: Callable[[str], None] = print) -> tuple[dict, dict]:
    """``({domain: {"train": docs, "heldout": docs}}, {domain: manifest fields})`` of a build
    ``config`` (a manifest's ``config``: domains, root, max_mb, heldout_fraction, seed), read
    from the packages under ``config["root"]`` (installed first when ``install``)."""
    specs = [DOMAINS[n] for n in config["domains"]]
    root = Path(config["root"])
    _ensure_installed(specs, root, install, log)
    splits, info = {}, {}
    for spec in specs:
        files = spec.find(root)
        docs = spec.extract(files)
        if not docs:
            raise ValueError(f"domain {spec.name!r} produced no documents from {len(files)} files under {root}")
        splits[spec.name] = split_docs(docs, spec.name, config["max_mb"] * 1e6, config["heldout_fraction"],
                                       config["seed"])
        info[spec.name] = {"description": spec.description, "packages": list(spec.packages),
                           "license": spec.license, "license_files": ["/" + p for p in spec.license_files],
                           "source_files": len(files), "source_docs": len(docs)}
    return splits, info


def build_corpus(out_dir: str | os.PathLike | None = None, domains: Sequence[str] | None = None,
                 root: str | os.PathLike = "/", tokenizer: str = "byte", bpe_vocab_size: int = 4096,
                 max_mb: float = 8.0, heldout_fraction: float = 0.05, seed: int = 0, install: bool = True,
                 force: bool = False, log: Callable[[str], None] = print) -> Path:
    """Builds (or reuses) the built-in corpus at ``out_dir`` and returns its path.

    Args:
      domains: names from ``DOMAINS`` (default: all eight); unknown names raise ValueError.
      root: filesystem root to read packages from ("/"; tests pass a fake tree).
      tokenizer: "byte" (vocab 257) or "bpe" (``bpe_vocab_size`` ids, needs ``tokenizers``).
      max_mb: cap per domain in MB of UTF-8 text (a seeded random subset of its documents).
      install: apt-get install missing packages (root + apt + root=="/" only); else raise with the command.
      force: rebuild even if a corpus with a different configuration exists at ``out_dir``.
    """
    out_dir = Path(out_dir) if out_dir is not None else default_corpus_dir()
    names = sorted(DOMAINS) if domains is None else list(domains)
    unknown = [n for n in names if n not in DOMAINS]
    if unknown or not names:
        raise ValueError(f"unknown domain name(s) {unknown or names}; known domains: {sorted(DOMAINS)}")
    if heldout_fraction < 0 or heldout_fraction >= 1 or max_mb <= 0:
        raise ValueError(f"need 0 <= heldout_fraction < 1 and max_mb > 0, got {heldout_fraction}, {max_mb}")
    config = {"domains": sorted(set(names)), "root": str(Path(root).resolve()), "tokenizer": tokenizer,
              "bpe_vocab_size": bpe_vocab_size if tokenizer == "bpe" else None, "max_mb": max_mb,
              "heldout_fraction": heldout_fraction, "seed": seed}
    if (out_dir / MANIFEST).exists():
        old = load_manifest(out_dir)
        if old.get("config") == config:
            check_corpus(out_dir)
            log(f"corpus at {out_dir} is complete and matches; reusing it")
            return out_dir
        if not force:
            old_config = old.get("config", {})
            diff = {k: (old_config.get(k), v) for k, v in config.items() if old_config.get(k) != v}
            raise FileExistsError(f"{out_dir} holds a corpus built with other settings {diff} (old, new); "
                                  "pass --force to rebuild it or choose another --out")
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists, is not empty and has no {MANIFEST}; not overwriting it")
    t0 = time.time()
    splits, info = extract_domains(config, install, log)
    log(f"extracted {len(splits)} domains in {time.time() - t0:.1f}s; writing {out_dir}")
    staging = out_dir.with_name(f".{out_dir.name}.new-{os.getpid()}")
    write_corpus(staging, splits, tokenizer, bpe_vocab_size, info, config, log)
    if out_dir.exists():  # --force, or an empty directory: swap in the finished build
        trash = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, trash)
        os.replace(staging, out_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, out_dir)
    log(f"corpus ready at {out_dir} in {time.time() - t0:.1f}s")
    return out_dir
