"""``ado-jax corpus build|encode|merge|upload|known``: argument parsers and entry functions (mounted
by ``ado_jax.cli``).

    ado-jax corpus build  [--out DIR] [--domains a,b] [--tokenizer byte|bpe] [--no-install] [--check] ...
    ado-jax corpus encode TEXT_DIR --out DIR [--tokenizer T] [--pattern GLOB] [--errors E] ...
    ado-jax corpus encode FILE_OR_DIR... --out DIR --domain-field meta.pile_set_name [--workers N] ...
    ado-jax corpus merge DIR DIR... --out DIR
    ado-jax corpus upload LOCAL_CORPUS gs://bucket/corpus [--workers N]
    ado-jax corpus known --suite noise|memorize|scarce --out DIR [--from CORPUS]

``add_*_args(parser)`` fill a (sub)parser; ``corpus_*_main`` take the parsed namespace (or an
argv list) and return an exit code (0 ok, 1 check mismatch, 2 bad input).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ado_jax.data.corpus_domains import DOMAINS

_ERRORS = (ValueError, RuntimeError, FileExistsError, FileNotFoundError, ImportError)


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
    p.add_argument("--check", action="store_true",
                   help="build nothing: check the corpus at --out (its text files, and what this machine's packages "
                        "give) against the manifest's per-domain content hashes; exit 1 on a mismatch")
    p.add_argument("--manifest", default=None, help="with --check: the manifest.json whose hashes to expect "
                                                     "(default: the corpus's own)")
    return p


def add_encode_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the flags of ``ado-jax corpus encode`` to ``p``; returns ``p``."""
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="a directory with one subdirectory of text files per domain, or record files "
                        "(.jsonl, .jsonl.gz, .jsonl.zst, .parquet) and directories of them")
    p.add_argument("--out", required=True, help="output corpus directory (text folders: must not exist; "
                                                "record files: new, or an unfinished encode to resume)")
    p.add_argument("--tokenizer", default="byte",
                   help="byte | bpe (trained on the input) | path/to/tokenizer.json (Hugging Face) | a corpus "
                        "directory whose tokenizer to reuse | hf:NAME (hub download, needs the network)")
    p.add_argument("--eos-token", default=None, help="Hugging Face tokenizer: the end-of-document token "
                                                      "(default: the first of <|endoftext|>, </s>, ... it has)")
    p.add_argument("--bos-token", default=None, help="Hugging Face tokenizer: a token put before every document "
                                                      "(default: none)")
    p.add_argument("--bpe-vocab-size", type=int, default=4096, help="BPE vocabulary size")
    p.add_argument("--heldout-fraction", type=float, default=0.05, help="documents held out per domain")
    p.add_argument("--seed", type=int, default=0, help="seed of the train / held-out split")
    p.add_argument("--errors", default="replace", choices=["strict", "replace", "skip"],
                   help="malformed records and text that is not UTF-8: strict stops at the first (file and line); "
                        "replace puts U+FFFD for bad bytes and skips malformed records; skip skips both")
    p.add_argument("--pattern", default="**/*", help="text folders: glob of document files inside each domain folder")
    p.add_argument("--max-mb", type=float, default=float("inf"), help="text folders: cap per domain, MB of text")
    p.add_argument("--text-field", default="text", help="record files: dotted path of the document text")
    p.add_argument("--domain-field", default=None,
                   help="record files: dotted path of the domain name (default meta.pile_set_name; giving it "
                        "also selects record input for a directory)")
    p.add_argument("--workers", type=int, default=1, help="record files: processes, each encoding whole files")
    p.add_argument("--shard-tokens", type=int, default=2**27,
                   help="record files: a shard is closed at the first document end past this many tokens")
    p.add_argument("--input-root", default=None, help="record files: ids of inputs are paths relative to this "
                                                       "(default: their common folder; give the same on every machine)")
    p.add_argument("--no-progress", action="store_true", help="record files: no progress bar")
    return p


def add_merge_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the flags of ``ado-jax corpus merge`` to ``p``; returns ``p``."""
    p.add_argument("dirs", nargs="+", metavar="DIR", help="finished record encodes of disjoint input files")
    p.add_argument("--out", required=True, help="the merged corpus directory (must not exist)")
    return p


def add_upload_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the arguments of ``ado-jax corpus upload`` to ``p``; returns ``p``."""
    p.add_argument("local", metavar="LOCAL_CORPUS", help="a finished corpus directory (built, encoded or merged)")
    p.add_argument("dest", metavar="DEST", help="object-store URL to copy it to, e.g. gs://bucket/corpus (empty, or "
                                                "an interrupted upload of the same corpus to finish)")
    p.add_argument("--workers", type=int, default=4, help="files hashed and uploaded at a time")
    return p


def _is_records(a) -> bool:
    from ado_jax.data.records import is_record_file

    if a.domain_field is not None or len(a.inputs) > 1:
        return True
    p = Path(a.inputs[0])
    return p.is_file() or (p.is_dir() and any(is_record_file(f) for f in p.iterdir() if f.is_file()))


def _parse(args, add) -> argparse.Namespace:
    if args is None or isinstance(args, (list, tuple)):
        return add(argparse.ArgumentParser()).parse_args(args)
    return args


def corpus_build_main(args=None) -> int:
    """Runs ``ado-jax corpus build``; ``args`` is a parsed namespace or an argv list."""
    from ado_jax.data.corpus import build_corpus

    a = _parse(args, add_build_args)
    if a.check:
        return _check(a)
    domains = None if a.domains is None else [d.strip() for d in a.domains.split(",") if d.strip()]
    try:
        out = build_corpus(a.out, domains=domains, root=a.root, tokenizer=a.tokenizer,
                           bpe_vocab_size=a.bpe_vocab_size, max_mb=a.max_mb, heldout_fraction=a.heldout_fraction,
                           seed=a.seed, install=not a.no_install, force=a.force)
    except _ERRORS as e:
        print(f"ado-jax corpus build: {e}", file=sys.stderr)
        return 2
    print(Path(out))
    return 0


def _check(a) -> int:
    from ado_jax.data.corpus import default_corpus_dir
    from ado_jax.data.corpus_check import check_corpus_hashes, format_rows

    out = Path(a.out) if a.out is not None else default_corpus_dir()
    try:
        rows = check_corpus_hashes(out, a.manifest)
    except _ERRORS as e:
        print(f"ado-jax corpus build --check: {e}", file=sys.stderr)
        return 2
    print(format_rows(rows))
    bad = [r["name"] for r in rows if not r["ok"]]
    print(f"corpus at {out} matches the manifest's hashes" if not bad else
          f"corpus at {out} does NOT match the manifest's hashes for {bad}")
    return 1 if bad else 0


def corpus_encode_main(args=None) -> int:
    """Runs ``ado-jax corpus encode``; ``args`` is a parsed namespace or an argv list."""
    from ado_jax.data.encode import encode_dir
    from ado_jax.data.encode_records import encode_records
    from ado_jax.data.tokenizer import resolve_tokenizer

    a = _parse(args, add_encode_args)
    try:
        tok = a.tokenizer
        if a.eos_token or a.bos_token:
            tok = resolve_tokenizer(tok, a.eos_token, a.bos_token) if tok != "bpe" else None
            if getattr(tok, "kind", None) != "hf":
                raise ValueError(f"--eos-token / --bos-token apply to a Hugging Face tokenizer, not --tokenizer "
                                 f"{a.tokenizer}")
        if _is_records(a):
            out = encode_records(a.inputs, a.out, tokenizer=tok, text_field=a.text_field,
                                 domain_field=a.domain_field or "meta.pile_set_name", workers=a.workers,
                                 errors=a.errors, heldout_fraction=a.heldout_fraction, seed=a.seed,
                                 shard_tokens=a.shard_tokens, bpe_vocab_size=a.bpe_vocab_size,
                                 input_root=a.input_root, progress=not a.no_progress)
        else:
            out = encode_dir(a.inputs[0], a.out, tokenizer=tok, pattern=a.pattern, errors=a.errors,
                             heldout_fraction=a.heldout_fraction, seed=a.seed, bpe_vocab_size=a.bpe_vocab_size,
                             max_mb=a.max_mb)
    except _ERRORS as e:
        print(f"ado-jax corpus encode: {e}", file=sys.stderr)
        return 2
    print(Path(out))
    return 0


def corpus_merge_main(args=None) -> int:
    """Runs ``ado-jax corpus merge``; ``args`` is a parsed namespace or an argv list."""
    from ado_jax.data.corpus_merge import merge_corpora

    a = _parse(args, add_merge_args)
    try:
        out = merge_corpora(a.dirs, a.out)
    except _ERRORS as e:
        print(f"ado-jax corpus merge: {e}", file=sys.stderr)
        return 2
    print(Path(out))
    return 0


def corpus_upload_main(args=None) -> int:
    """Runs ``ado-jax corpus upload``: every file checked against the corpus's hashes, then uploaded,
    the manifest last; ``args`` is a parsed namespace or an argv list."""
    from ado_jax.data.corpus_upload import upload_corpus

    a = _parse(args, add_upload_args)
    try:
        upload_corpus(a.local, a.dest, workers=max(1, a.workers))
    except (*_ERRORS, OSError) as e:
        print(f"ado-jax corpus upload: {e}", file=sys.stderr)
        return 2
    print(a.dest)
    return 0


def add_known_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the flags of ``ado-jax corpus known`` to ``p``; returns ``p``."""
    p.add_argument("--suite", required=True, choices=["noise", "memorize", "scarce"],
                   help="noise: + random printable characters; memorize: + one document repeated; scarce: + a small "
                        "target domain (docs/results.md, Known answers)")
    p.add_argument("--out", required=True, help="corpus directory to write (must not exist)")
    p.add_argument("--from", dest="source", default=None,
                   help="the built corpus to take the real domains from (default: the built-in one, built when "
                        "missing); needs computing, dictionary, scripture and legal")
    p.add_argument("--real-mb", type=float, default=1.0, help="MB of each real domain's train split")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise domain")
    return p


def corpus_known_main(args=None) -> int:
    """Runs ``ado-jax corpus known``; ``args`` is a parsed namespace or an argv list."""
    from ado_jax.data.known_suites import build_known_suite

    a = _parse(args, add_known_args)
    try:
        out = build_known_suite(a.suite, a.out, a.source, a.real_mb, a.seed)
    except (*_ERRORS, OSError) as e:
        print(f"ado-jax corpus known: {e}", file=sys.stderr)
        return 2
    print(Path(out))
    return 0
