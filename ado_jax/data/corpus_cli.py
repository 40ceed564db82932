"""``ado-jax corpus build|encode``: argument parsers and entry functions (mounted by ``ado_jax.cli``).

    ado-jax corpus build  [--out DIR] [--domains a,b] [--tokenizer byte|bpe] [--no-install] ...
    ado-jax corpus encode TEXT_DIR --out DIR [--tokenizer byte|bpe|CORPUS_DIR] [--pattern GLOB] ...

``add_build_args(parser)`` / ``add_encode_args(parser)`` fill a (sub)parser; ``corpus_build_main``
and ``corpus_encode_main`` take the parsed namespace (or an argv list) and return an exit code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ado_jax.data.corpus_domains import DOMAINS


def add_build_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the flags of ``ado-jax corpus build`` to ``p``; returns ``p``."""
    p.add_argument("--out", default=None, help="corpus directory (default: $ADO_JAX_DATA/corpus or ./data/corpus)")
    p.add_argument("--domains", default=None,
                   help=f"comma-separated subset of {','.join(sorted(DOMAINS))} (default: all)")
    p.add_argument("--tokenizer", default="byte", choices=["byte", "bpe"],
                   help="byte: vocab 257, no setup; bpe: trained here (needs `tokenizers`)")
    p.add_argument("--bpe-vocab-size", type=int, default=4096, help="BPE vocabulary size")
    p.add_argument("--max-mb", type=float, default=8.0, help="cap per domain, MB of text")
    p.add_argument("--heldout-fraction", type=float, default=0.05, help="documents held out per domain")
    p.add_argument("--seed", type=int, default=0, help="seed of the document choice and split")
    p.add_argument("--root", default="/", help="filesystem root to read the packages from")
    p.add_argument("--no-install", action="store_true", help="never run apt-get; print what to install")
    p.add_argument("--force", action="store_true", help="rebuild over a corpus built with other settings")
    return p


def add_encode_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the flags of ``ado-jax corpus encode`` to ``p``; returns ``p``."""
    p.add_argument("text_dir", help="directory with one subdirectory of text files per domain")
    p.add_argument("--out", required=True, help="output corpus directory (must not exist)")
    p.add_argument("--tokenizer", default="byte",
                   help="byte, bpe (trained on these files) or a corpus directory whose tokenizer to reuse")
    p.add_argument("--bpe-vocab-size", type=int, default=4096, help="BPE vocabulary size")
    p.add_argument("--pattern", default="**/*", help="glob of document files inside each domain folder")
    p.add_argument("--heldout-fraction", type=float, default=0.05, help="documents held out per domain")
    p.add_argument("--seed", type=int, default=0, help="seed of the train / held-out split")
    p.add_argument("--max-mb", type=float, default=float("inf"), help="cap per domain, MB of text")
    return p


def _parse(args, add) -> argparse.Namespace:
    if args is None or isinstance(args, (list, tuple)):
        return add(argparse.ArgumentParser()).parse_args(args)
    return args


def corpus_build_main(args=None) -> int:
    """Runs ``ado-jax corpus build``; ``args`` is a parsed namespace or an argv list."""
    from ado_jax.data.corpus import build_corpus

    a = _parse(args, add_build_args)
    domains = None if a.domains is None else [d.strip() for d in a.domains.split(",") if d.strip()]
    try:
        out = build_corpus(a.out, domains=domains, root=a.root, tokenizer=a.tokenizer,
                           bpe_vocab_size=a.bpe_vocab_size, max_mb=a.max_mb, heldout_fraction=a.heldout_fraction,
                           seed=a.seed, install=not a.no_install, force=a.force)
    except (ValueError, RuntimeError, FileExistsError, FileNotFoundError, ImportError) as e:
        print(f"ado-jax corpus build: {e}", file=sys.stderr)
        return 2
    print(Path(out))
    return 0


def corpus_encode_main(args=None) -> int:
    """Runs ``ado-jax corpus encode``; ``args`` is a parsed namespace or an argv list."""
    from ado_jax.data.encode import encode_dir

    a = _parse(args, add_encode_args)
    try:
        out = encode_dir(a.text_dir, a.out, tokenizer=a.tokenizer, pattern=a.pattern,
                         heldout_fraction=a.heldout_fraction, seed=a.seed, bpe_vocab_size=a.bpe_vocab_size,
                         max_mb=a.max_mb)
    except (ValueError, FileExistsError, FileNotFoundError, ImportError) as e:
        print(f"ado-jax corpus encode: {e}", file=sys.stderr)
        return 2
    print(Path(out))
    return 0
