"""The built-in corpus is reproducible: per-domain content hashes, `corpus build --check`, the
fixed `legal` package list; and text folders' non-UTF-8 files under --errors."""

import json

import pytest
from test_corpus import _w, fake_root  # noqa: F401  (the fixture)

from ado_jax.data import corpus
from ado_jax.data.corpus_check import check_corpus_hashes
from ado_jax.data.corpus_cli import corpus_build_main, corpus_encode_main
from ado_jax.data.encode import encode_dir

QUIET = dict(log=lambda s: None)


def test_manifest_hashes_and_check(fake_root, tmp_path, capsys):  # noqa: F811
    kw = dict(domains=["fortunes", "legal"], root=fake_root, **QUIET)
    out = corpus.build_corpus(tmp_path / "c", **kw)
    manifest = corpus.load_manifest(out)
    hashes = {d["name"]: d["sha256"] for d in manifest["domains"]}
    assert all(len(h) == 64 for h in hashes.values())
    assert corpus.build_corpus(tmp_path / "c2", **kw) and {
        d["name"]: d["sha256"] for d in corpus.load_manifest(tmp_path / "c2")["domains"]} == hashes
    rows = check_corpus_hashes(out, **QUIET)
    assert all(r["ok"] and r["files"] == r["packages"] == r["expected"] for r in rows)
    args = ["--check", "--out", str(out)]
    assert corpus_build_main(args) == 0 and "matches the manifest's hashes" in capsys.readouterr().out
    # an unrelated package installed later does not change legal; a listed package's notice does
    _w(fake_root / "usr/share/doc/newpkg/copyright", "Copyright new.\n")
    assert all(r["ok"] for r in check_corpus_hashes(out, **QUIET))
    _w(fake_root / "usr/share/doc/bash/copyright", "Copyright bash, a newer version.\n")
    assert corpus_build_main(args) == 1
    text = capsys.readouterr().out
    assert "legal        MISMATCH" in text and "fortunes     ok" in text and "NOT match" in text
    # an edited text file is caught too, and a reference manifest can be given
    (out / "text/fortunes.train.jsonl").write_text('"edited"\n')
    row = {r["name"]: r for r in check_corpus_hashes(out, packages=False)}["fortunes"]
    assert not row["ok"] and row["files"] != row["expected"] and row["packages"] is None
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"domains": [{"name": "fortunes", "sha256": "0" * 64}]}))
    assert [r["ok"] for r in check_corpus_hashes(tmp_path / "c2", ref, **QUIET)] == [False]
    assert corpus_build_main(["--check", "--out", str(tmp_path / "none")]) == 2
    assert "no corpus at" in capsys.readouterr().err


def test_legal_needs_its_listed_packages(fake_root, tmp_path):  # noqa: F811
    (fake_root / "usr/share/doc/tar/copyright").unlink()
    with pytest.raises(RuntimeError, match=r"\['legal'\] are not installed(?s:.)*apt-get install -y .*tar"):
        corpus.build_corpus(tmp_path / "c", domains=["legal"], root=fake_root, install=False, **QUIET)


def test_text_folder_errors(tmp_path, capsys):
    src = tmp_path / "texts"
    _w(src / "a" / "0.txt", "fine text\n")
    (src / "a" / "1.txt").write_bytes(b"caf\xe9 and \xff\xfe\n")
    _w(src / "b" / "0.txt", "other domain\n")
    logs = []
    out = encode_dir(src, tmp_path / "rep", heldout_fraction=0, log=logs.append)
    info = {d["name"]: d for d in corpus.load_manifest(out)["domains"]}["a"]
    assert info["invalid_utf8_files"] == 1 and info["replaced_chars"] == 3
    assert any("a: 1 files not valid UTF-8 (3 characters replaced by U+FFFD)" in s for s in logs)
    out = encode_dir(src, tmp_path / "skip", heldout_fraction=0, errors="skip", **QUIET)
    assert {d["name"]: d for d in corpus.load_manifest(out)["domains"]}["a"]["n_docs"] == 1
    assert [r["ok"] and r["packages"] is None for r in check_corpus_hashes(out)] == [True, True]
    assert corpus_encode_main([str(src), "--out", str(tmp_path / "strict"), "--errors", "strict"]) == 2
    assert "1.txt: not valid UTF-8 at byte 3" in capsys.readouterr().err
    assert not (tmp_path / "strict").exists()


def test_mistyped_corpus_dir_is_announced(tmp_path, monkeypatch, capsys):
    from ado_jax.data import setup

    monkeypatch.setattr(corpus, "build_corpus", lambda d: d)
    setup.ensure_corpus(str(tmp_path / "corpsu"))
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and f"building the built-in corpus at {tmp_path / 'corpsu'}" in out
