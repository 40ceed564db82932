"""The built-in corpus's domains: where each one's text lives in Debian packages, and how to read it.

Every domain is a ``DomainSpec``: the packages that ship it, its license, ``find(root)`` (the
source files under a filesystem root; empty when not installed) and ``extract(files)`` (the
documents). ``root`` is "/" for the real build; tests pass a small fake tree with the same paths.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path
from typing import Callable, NamedTuple


class DomainSpec(NamedTuple):
    name: str
    description: str
    packages: tuple[str, ...]  # Debian packages to install; () = always present
    license: str
    license_files: tuple[str, ...]  # relative to the root
    find: Callable[[Path], list[Path]]
    extract: Callable[[list[Path]], list[str]]


def _read(path: Path) -> str:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip, including dictzip's .dz
        raw = gzip.decompress(raw)
    return raw.decode("utf-8", errors="replace")


def _existing(*paths: Path) -> list[Path]:
    return list(paths) if all(p.exists() for p in paths) else []


# --- dictd dictionaries (dict-gcide, dict-foldoc): entries located by the .index file ----------
_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _b64num(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64[c]
    return n


def _dictd_find(db: str) -> Callable[[Path], list[Path]]:
    return lambda root: _existing(root / f"usr/share/dictd/{db}.index", root / f"usr/share/dictd/{db}.dict.dz")


def _dictd_extract(files: list[Path]) -> list[str]:
    index, body = files
    data = gzip.decompress(body.read_bytes())
    spans = set()
    for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and not parts[0].startswith("00-database") and not parts[0].startswith("00database"):
            spans.add((_b64num(parts[1]), _b64num(parts[2])))
    return [data[o:o + n].decode("utf-8", errors="replace") for o, n in sorted(spans)]


# --- King James Bible: decoded by the `bible` program (bible-kjv), one document per chapter -------
_VERSE = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):\d+\s")


def kjv_chapters(text: str) -> list[str]:
    """Groups ``bible -f`` output lines ("Ge1:1 In the beginning...") into chapter documents."""
    chapters, current, key = [], [], None
    for line in text.splitlines():
        m = _VERSE.match(line)
        if m and (m.group(1), m.group(2)) != key:
            if current:
                chapters.append("\n".join(current))
            current, key = [], (m.group(1), m.group(2))
        if line.strip():
            current.append(line.rstrip())
    if current:
        chapters.append("\n".join(current))
    return chapters


def _kjv_find(root: Path) -> list[Path]:
    return _existing(root / "usr/lib/bible.data") if shutil.which("bible") else []


def _kjv_extract(files: list[Path]) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # no wrapping: one verse a line
    out = subprocess.run(["bible", "-p", str(files[0].parent), "-f", "Genesis 1:1-Revelation 22:21"],
                         capture_output=True, check=True, env=env, stdin=subprocess.DEVNULL)
    return kjv_chapters(out.stdout.decode("utf-8", errors="replace"))


# --- fortunes: "%"-separated quotes ------------------------------------------------------------
def _fortunes_find(root: Path) -> list[Path]:
    d = root / "usr/share/games/fortunes"
    if not (d / "computers").is_file():  # shipped by `fortunes`; `fortunes-min` alone is ~0.1 MB
        return []
    return sorted(p for p in d.iterdir() if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8"))


def _fortunes_extract(files: list[Path]) -> list[str]:
    return [q for f in files for q in re.split(r"\n%\n", _read(f)) if q.strip()]


# --- man pages of the `manpages` package, roff markup stripped ----------------------------------
_ESCAPES = [(re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""), (re.compile(r"\\s[+-]?\d+"), ""),
            (re.compile(r"\\\*(\(..|\[[^\]]*\]|.)"), ""), (re.compile(r"\\\((em|en|hy)"), "-"),
            (re.compile(r"\\\((aq|cq|oq)"), "'"), (re.compile(r"\\\((dq|lq|rq)"), '"'),
            (re.compile(r"\\\(bu"), "*"), (re.compile(r"\\\(..|\\\[[^\]]*\]"), ""),
            (re.compile(r"\\[-]"), "-"), (re.compile(r"\\[~ 0]"), " "), (re.compile(r"\\[e\\]"), "\\\\"),
            (re.compile(r"\\[&|^%:c]"), "")]
_ARGS = re.compile(r'"([^"]*)"|(\S+)')


def strip_roff(src: str) -> str:
    """Plain text of a man page's roff source (a light renderer: macros to text, escapes dropped)."""
    out = []
    for line in src.splitlines():
        if line.startswith(('.\\"', "'\\\"", '.\\}')):
            continue
        if line.startswith((".", "'")):
            macro, _, rest = line[1:].strip().partition(" ")
            args = [a or b for a, b in _ARGS.findall(rest)]
            if macro == "TH" and args:
                line = f"{args[0]}({args[1] if len(args) > 1 else ''})"
            elif macro in ("SH", "SS"):
                line = "\n" + " ".join(args)
            elif macro in ("B", "I", "SM", "SB"):
                line = " ".join(args)
            elif macro in ("BR", "RB", "BI", "IB", "IR", "RI"):
                line = "".join(args)
            elif macro in ("PP", "LP", "P", "sp", "TP", "HP"):
                line = ""
            elif macro == "IP":
                line = "\n" + (args[0] if args else "")
            else:
                continue  # layout requests (.nf, .in, .RS, .TS, .de, ...)
        for pattern, repl in _ESCAPES:
            line = pattern.sub(repl, line)
        out.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"


def _manpages_find(root: Path) -> list[Path]:
    listing = root / "var/lib/dpkg/info/manpages.list"
    if not listing.exists():
        return []
    files = [root / ln.strip().lstrip("/") for ln in listing.read_text().splitlines()
             if re.match(r"/usr/share/man/man\d/.*\.gz$", ln.strip())]
    return sorted(p for p in files if p.is_file() and not p.is_symlink())


def _manpages_extract(files: list[Path]) -> list[str]:
    pages = (_read(f) for f in files)
    return [strip_roff(p) for p in pages if not p.lstrip().startswith(".so ")]


# --- Python documentation (python3-doc's Info manual), one document per node ---------------------
def _pydoc_find(root: Path) -> list[Path]:
    found = sorted((root / "usr/share/info").glob("python3*.info.gz"))
    return found[-1:]


def _pydoc_extract(files: list[Path]) -> list[str]:
    docs = []
    for node in _read(files[0]).split("\x1f\n"):
        head, _, body = node.partition("\n")
        if head.startswith("File:") and body.strip():
            docs.append(body.strip("\n") + "\n")
    return docs


# --- Python standard library source ----------------------------------------------------------------
_SKIP_CODE = re.compile(r"/(test|tests|site-packages|dist-packages|idle_test)/")


def _code_find(root: Path) -> list[Path]:
    if root == Path("/"):
        base = Path(sysconfig.get_paths()["stdlib"])
    else:
        cands = sorted((root / "usr/lib").glob("python3.*"))
        if not cands:
            return []
        base = cands[-1]
    return sorted(p for p in base.rglob("*.py") if not _SKIP_CODE.search(str(p.relative_to(base.parent))))


def _files_extract(files: list[Path]) -> list[str]:
    docs, seen = [], set()
    for f in files:
        text = _read(f)
        digest = hashlib.sha1(text.encode("utf-8", errors="replace")).digest()
        if text.strip() and digest not in seen:  # symlinked licenses and shared copyright files
            seen.add(digest)
            docs.append(text)
    return docs


# --- legal: license texts and a fixed list of packages' copyright notices --------------------------------
# Debian's required packages (on every Debian / Ubuntu system, so this domain never needs apt):
# not whatever copyright files happen to be on a machine, so installing an unrelated package no
# longer changes this domain (the listed packages' versions still can; ``corpus build --check``
# tells).
LEGAL_PACKAGES = ("apt", "base-files", "base-passwd", "bash", "coreutils", "dash", "debianutils", "diffutils",
                  "dpkg", "findutils", "gpgv", "grep", "gzip", "hostname", "init-system-helpers", "libc-bin",
                  "login", "mawk", "ncurses-base", "ncurses-bin", "perl-base", "sed", "sysvinit-utils", "tar",
                  "util-linux", "zlib1g")


# And the SPDX license texts of the PyPI package ``spdx`` (2.5.1, a dependency of ado_jax; the same
# bytes on every machine), without the deprecated ids and without the licenses whose Debian
# copy is already in common-licenses (the two copies differ in layout, so the digest check in
# ``_files_extract`` would not catch them, and a held-out copy of a trained text is no test).
_SPDX_DUPLICATES = re.compile(r"^(Apache-2\.0|Artistic-1\.0|BSD-4-Clause-UC|CC0-1\.0|GFDL-1\.[23].*|GPL-[123]\.0.*|"
                              r"LGPL-(2\.0|2\.1|3\.0).*|MPL-(1\.1|2\.0).*)\.txt$")


def _spdx_dir(root: Path) -> Path | None:
    if root != Path("/"):  # a test's fake tree
        return root / "spdx/data"
    import importlib.util

    spec = importlib.util.find_spec("spdx")  # its data files only: the package is not imported
    return Path(next(iter(spec.submodule_search_locations))) / "data" if spec else None


def _legal_find(root: Path) -> list[Path]:
    lic = sorted(p for p in (root / "usr/share/common-licenses").glob("*") if p.is_file())
    notices = [root / "usr/share/doc" / pkg / "copyright" for pkg in LEGAL_PACKAGES]
    spdx = _spdx_dir(root)
    texts = sorted(p for p in spdx.glob("*.txt") if not p.name.startswith("deprecated_")
                   and not _SPDX_DUPLICATES.match(p.name)) if spdx and spdx.is_dir() else []
    return lic + notices + texts if lic and all(p.is_file() for p in notices) else []


DOMAINS: dict[str, DomainSpec] = {s.name: s for s in [
    DomainSpec("code", "Python standard library source", (), "PSF-2.0", (), _code_find, _files_extract),
    DomainSpec("computing", "FOLDOC, the Free On-line Dictionary of Computing", ("dict-foldoc",),
               "GFDL-1.2+", ("usr/share/doc/dict-foldoc/copyright",), _dictd_find("foldoc"), _dictd_extract),
    DomainSpec("dictionary", "GCIDE, the Collaborative International Dictionary of English (Webster 1913 + "
               "WordNet)", ("dict-gcide",), "GPL-2+ (per the package's copyright file)",
               ("usr/share/doc/dict-gcide/copyright",), _dictd_find("gcide"), _dictd_extract),
    DomainSpec("fortunes", "fortune-mod quotations", ("fortunes",), "BSD-3-Clause collection; quotes by "
               "many authors", ("usr/share/doc/fortunes/copyright",), _fortunes_find, _fortunes_extract),
    DomainSpec("legal", "license texts (Debian's common-licenses and the SPDX list of the PyPI package spdx "
               "2.5.1) and the copyright notices of a fixed list of Debian packages",
               LEGAL_PACKAGES, "license texts may be copied verbatim; notices under their packages' terms", (),
               _legal_find, _files_extract),
    DomainSpec("manpages", "Linux man-pages (sections 1-8 of the `manpages` package), roff stripped",
               ("manpages",), "GPL-2+, BSD and other free licenses, per page",
               ("usr/share/doc/manpages/copyright",), _manpages_find, _manpages_extract),
    DomainSpec("python_docs", "the Python documentation (Info manual of python3-doc)", ("python3-doc",),
               "PSF-2.0", ("usr/share/doc/python3-doc/copyright",), _pydoc_find, _pydoc_extract),
    DomainSpec("scripture", "the King James Bible, one document per chapter", ("bible-kjv", "bible-kjv-text"),
               "public-domain text (Crown patent in the UK); packaging GPL-2+",
               ("usr/share/doc/bible-kjv-text/copyright",), _kjv_find, _kjv_extract),
]}
