"""Known-answer suites: mixtures whose right answer is known, built from the built-in corpus.

Each suite is 3 real text domains plus one special domain whose best weight is known:

- ``noise``: uniformly random printable ASCII (95 characters): nothing to learn beyond the
  unigram entropy ln 95 ≈ 4.55 nats per byte, so every step spent on it is wasted;
- ``memorize``: one short document (the Apache-2.0 license text of the pinned PyPI package
  ``spdx``, 11 KB) repeated, its held-out split the same text: learned fast, then worth nothing;
- ``scarce``: 3 large domains + a small ``target`` domain (``legal``, ≤ 5 % of the tokens),
  whose held-out loss is the score.

The real domains are ``computing`` (FOLDOC), ``dictionary`` (GCIDE) and ``scripture`` (KJV):
fixed texts of Debian packages, capped to their first ``real_mb`` MB (documents in the built
corpus's order), so a suite is the same on every machine with the same packages; the noise is
drawn from a seeded generator. ``build_known_suite`` writes an ordinary corpus directory
(``data.source=corpus data.corpus_dir=OUT``), its manifest naming the suite and the special
domain. The scores are stated in docs/results.md ("Known answers").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

REAL_DOMAINS = ("computing", "dictionary", "scripture")
SUITES = {"noise": "noise", "memorize": "memorize", "scarce": "target"}  # suite -> its special domain
NOISE_ALPHABET = "".join(chr(c) for c in range(32, 127))  # the 95 printable ASCII characters


def _corpus_docs(corpus_dir: Path, name: str, split: str) -> list[str]:
    path = corpus_dir / "text" / f"{name}.{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the source corpus needs domain {name!r} (ado-jax corpus build "
                                f"--domains {','.join(REAL_DOMAINS)},legal)")
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _prefix(docs: list[str], max_bytes: float) -> list[str]:
    out, total = [], 0
    for d in docs:
        if total >= max_bytes:
            break
        out.append(d)
        total += len(d.encode())
    return out


def _memorize_doc() -> str:
    import importlib.util

    spec = importlib.util.find_spec("spdx")
    if spec is None:
        raise ImportError("the memorize suite reads its document from the PyPI package spdx (pip install spdx)")
    return (Path(next(iter(spec.submodule_search_locations))) / "data" / "Apache-2.0.txt").read_text()


def _noise_docs(rng: np.random.Generator, n_docs: int, doc_chars: int) -> list[str]:
    alphabet = np.array(list(NOISE_ALPHABET))
    return ["".join(alphabet[rng.integers(0, len(alphabet), doc_chars)]) for _ in range(n_docs)]


def known_suite_splits(suite: str, corpus_dir, real_mb: float = 1.0, seed: int = 0,
                       target_share: float = 0.04) -> dict[str, dict[str, list[str]]]:
    """``{domain: {"train": docs, "heldout": docs}}`` of ``suite`` from the corpus at ``corpus_dir``.

    Args:
      suite: noise | memorize | scarce.
      corpus_dir: a built corpus with the domains computing, dictionary, scripture (and legal).
      real_mb: MB of each real domain's train split (held-out: its first 5 %).
      seed: the noise generator's seed.
      target_share: scarce: the target's train bytes as a share of all train bytes.
    """
    if suite not in SUITES:
        raise ValueError(f"suite {suite!r}: expected one of {', '.join(SUITES)}")
    if not 0 < target_share <= 0.05 or real_mb <= 0:
        raise ValueError(f"need real_mb > 0 and 0 < target_share <= 0.05, got {real_mb}, {target_share}")
    corpus_dir = Path(corpus_dir)
    budget = real_mb * 1e6
    out = {n: {"train": _prefix(_corpus_docs(corpus_dir, n, "train"), budget),
               "heldout": _prefix(_corpus_docs(corpus_dir, n, "heldout"), 0.05 * budget)} for n in REAL_DOMAINS}
    if suite == "noise":
        rng = np.random.default_rng([seed, 95])
        n_docs = int(budget // 2000)
        out["noise"] = {"train": _noise_docs(rng, n_docs, 2000),
                        "heldout": _noise_docs(rng, max(1, n_docs // 20), 2000)}
    elif suite == "memorize":
        doc = _memorize_doc()
        out["memorize"] = {"train": [doc] * max(1, int(budget // len(doc.encode()))), "heldout": [doc]}
    else:
        real_bytes = sum(len(d.encode()) for n in REAL_DOMAINS for d in out[n]["train"])
        want = target_share / (1 - target_share) * real_bytes
        docs, total = [], 0
        for d in _corpus_docs(corpus_dir, "legal", "train"):  # exactly `want` bytes: the last document cut
            size = len(d.encode())
            if total + size > want:
                docs.append(d.encode()[:int(want - total)].decode(errors="ignore"))
                break
            docs.append(d)
            total += size
        out["target"] = {"train": [d for d in docs if d],
                         "heldout": _prefix(_corpus_docs(corpus_dir, "legal", "heldout"), 0.25 * want)}
    return out


def build_known_suite(suite: str, out, corpus_dir=None, real_mb: float = 1.0, seed: int = 0,
                      log: Callable[[str], None] = print) -> Path:
    """Writes ``suite`` as a byte-level corpus at ``out`` (which must not exist); returns its path.
    ``corpus_dir``: the source corpus (default: the built-in one, built when missing)."""
    from ado_jax.data import corpus

    if corpus_dir is None:
        corpus_dir = corpus.build_corpus(domains=[*REAL_DOMAINS, "legal"], log=log) if not (
            corpus.default_corpus_dir() / corpus.MANIFEST).exists() else corpus.default_corpus_dir()
    splits = known_suite_splits(suite, corpus_dir, real_mb, seed)
    special = SUITES[suite]
    info = {n: {"role": "special" if n == special else "real"} for n in splits}
    config = {"suite": suite, "special_domain": special, "real_domains": list(REAL_DOMAINS), "real_mb": real_mb,
              "seed": seed, "source": str(corpus_dir)}
    return corpus.write_corpus(out, splits, "byte", domain_info=info, config=config, log=log)
