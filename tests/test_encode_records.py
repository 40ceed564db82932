"""Record files (Pile-shaped JSONL / .gz / .zst / Parquet) to sharded token files: encode, resume,
errors, merge, reading the shards back, and a Hugging Face tokenizer.json."""

import gzip
import json

import numpy as np
import pytest

from ado_jax.data import corpus, token_files
from ado_jax.data.corpus_cli import corpus_encode_main, corpus_merge_main
from ado_jax.data.corpus_merge import merge_corpora
from ado_jax.data.encode_records import encode_records, list_inputs
from ado_jax.data.records import RecordError
from ado_jax.data.shards import ShardedTokens
from ado_jax.data.tokenizer import ByteTokenizer, load_tokenizer, resolve_tokenizer

DOMAINS = ["Github", "Pile-CC", "Wikipedia (en)"]
QUIET = dict(progress=False, log=lambda s: None)


def _records(n, offset=0):
    return [{"text": f"{DOMAINS[i % 3]} document {i + offset} " + "x" * (i % 17),
             "meta": {"pile_set_name": DOMAINS[i % 3]}} for i in range(n)]


def _write(path, records, extra_lines=()):
    raw = "".join(json.dumps(r) + "\n" for r in records) + "".join(extra_lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".zst"):
        zstd = pytest.importorskip("zstandard")
        path.write_bytes(zstd.ZstdCompressor().compress(raw.encode()))
    elif path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(raw.encode()))
    else:
        path.write_text(raw)
    return path


def _expected(records, tok=ByteTokenizer()):
    """{domain: all its documents' ids (train + held-out)} in input order."""
    out = {}
    for r in records:
        out.setdefault(r["meta"]["pile_set_name"], []).append(r["text"])
    return {k: tok.encode_docs(v) for k, v in out.items()}


def test_encode_two_workers_shards_and_reads_back(tmp_path):
    recs = [_records(60), _records(45, 100)]
    inputs = [_write(tmp_path / "pile/00.jsonl.zst", recs[0]), _write(tmp_path / "pile/01.jsonl.gz", recs[1])]
    out = encode_records(inputs, tmp_path / "enc", workers=2, shard_tokens=300, heldout_fraction=0.2, **QUIET)
    manifest = corpus.load_manifest(out)
    assert manifest["names"] == sorted(DOMAINS) and manifest["inputs"] == ["00", "01"]
    assert sum(d["n_docs"] for d in manifest["domains"]) == 105
    train = token_files.open_domains(out, "train", min_tokens=10)
    assert all(isinstance(v, ShardedTokens) for v in train.values())
    gh = next(d for d in manifest["domains"] if d["name"] == "Github")
    assert gh["splits"]["train"]["shards"] >= 3 and gh["splits"]["heldout"]["n_docs"] > 0
    # every document is in exactly one split, each once, and a window across shards reads like one file
    want = _expected(recs[0] + recs[1])
    for name in DOMAINS:
        both = np.concatenate([np.asarray(train[name]), np.asarray(token_files.open_domains(out, "heldout")[name])])
        decoded = (ByteTokenizer().decode(x).split("\n") for x in (both, want[name]))
        assert sorted(next(decoded)) == sorted(next(decoded))
        flat = np.asarray(train[name])
        assert np.array_equal(train[name][250:350], flat[250:350]) and train[name][5] == flat[5]
    assert corpus.check_corpus(out)["names"] == sorted(DOMAINS)
    # the same inputs with one worker give the same shards (the split does not depend on workers)
    one = encode_records(inputs, tmp_path / "enc1", workers=1, shard_tokens=300, heldout_fraction=0.2, **QUIET)
    for split in ("train", "heldout"):
        for name, arr in token_files.open_domains(one, split, min_tokens=0).items():
            assert np.array_equal(np.asarray(arr), np.asarray(token_files.open_domains(out, split, min_tokens=0)[name]))


def test_resume_skips_finished_files_and_other_settings_refused(tmp_path, monkeypatch):
    _write(tmp_path / "in/a.jsonl", _records(30))
    b = _write(tmp_path / "in/b.jsonl", _records(30, 50), extra_lines=["{not json\n"])
    import ado_jax.data.encode_records as er

    original, calls = er.encode_file, []

    def crash_on_b(input_id, *args, **kw):
        calls.append(input_id)
        if input_id == "b":
            raise KeyboardInterrupt  # a crash half-way through the run
        return original(input_id, *args, **kw)

    monkeypatch.setattr(er, "encode_file", crash_on_b)
    with pytest.raises(KeyboardInterrupt):
        encode_records([tmp_path / "in"], tmp_path / "enc", **QUIET)
    assert (tmp_path / "enc/parts/a.json").exists() and not (tmp_path / "enc/manifest.json").exists()
    assert not list((tmp_path / "enc").rglob("*.tmp-*"))
    monkeypatch.setattr(er, "encode_file", original)
    stamp = (tmp_path / "enc/parts/a.json").stat().st_mtime_ns
    logs = []
    encode_records([tmp_path / "in"], tmp_path / "enc", progress=False, log=logs.append)
    assert (tmp_path / "enc/parts/a.json").stat().st_mtime_ns == stamp  # a was not redone
    assert any("1 of 2 input files already encoded" in s for s in logs)
    manifest = corpus.load_manifest(tmp_path / "enc")
    assert manifest["errors"] == {str(b.resolve()): {"bad_json": 1}} and any("1 bad_json" in s for s in logs)
    with pytest.raises(FileExistsError, match=r"other settings \{'seed': \(0, 1\)\}"):
        encode_records([tmp_path / "in"], tmp_path / "enc", seed=1, **QUIET)


def test_malformed_records_counted_or_strict(tmp_path, capsys):
    bad = ['{"text": "ok one", "meta": {"pile_set_name": "A"}}\n', "{broken\n",
           '{"text": 5, "meta": {"pile_set_name": "A"}}\n', '{"body": "x", "meta": {"pile_set_name": "A"}}\n',
           '{"text": "lone \\udc80 surrogate", "meta": {"pile_set_name": "A"}}\n']
    path = tmp_path / "in/x.jsonl"
    path.parent.mkdir()
    path.write_bytes("".join(bad).encode() + b'{"text": "bad \xff byte", "meta": {"pile_set_name": "A"}}\n')
    out = encode_records([path], tmp_path / "rep", heldout_fraction=0, **QUIET)
    errs = corpus.load_manifest(out)["errors"][str(path.resolve())]
    assert errs == {"bad_json": 1, "invalid_utf8": 2, "missing_field": 1, "not_string": 1, "replaced_chars": 2}
    text = ByteTokenizer().decode(np.asarray(token_files.open_domains(out, "train")["A"]))
    assert text == "ok one\nlone \ufffd surrogate\nbad \ufffd byte\n"
    out = encode_records([path], tmp_path / "skip", heldout_fraction=0, errors="skip", **QUIET)
    assert ByteTokenizer().decode(np.asarray(token_files.open_domains(out, "train")["A"])) == "ok one\n"
    with pytest.raises(RecordError, match=r"x.jsonl:2: not valid JSON"):
        encode_records([path], tmp_path / "strict", errors="strict", **QUIET)
    args = [str(path), "--out", str(tmp_path / "cli"), "--errors", "strict", "--no-progress"]
    assert corpus_encode_main(args) == 2
    assert "x.jsonl:2: not valid JSON" in capsys.readouterr().err
    assert not list((tmp_path / "cli").rglob("*.bin"))
    import ado_jax.data.encode_worker as ew

    path.write_text("".join(json.dumps({"text": "t", "meta": {"pile_set_name": f"d{i}"}}) + "\n" for i in range(5)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ew, "MAX_DOMAINS", 3)
        with pytest.raises(ValueError, match=r"x.jsonl:4: more than 3 distinct values of --domain-field"):
            encode_records([path], tmp_path / "many", **QUIET)
    path.write_text(bad[0] + '{"text": "t", "meta": {"pile_set_name": "../up"}}\n')
    with pytest.raises(ValueError, match=r"x.jsonl:2: domain name '../up' cannot name a file"):
        encode_records([path], tmp_path / "slash", **QUIET)


def test_parquet_and_dotted_fields(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [{"content": f"doc {i}", "meta": {"redpajama_set_name": ["Book", "Arxiv"][i % 2]}} for i in range(40)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "sp.parquet", row_group_size=7)
    out = encode_records([tmp_path / "sp.parquet"], tmp_path / "enc", text_field="content",
                         domain_field="meta.redpajama_set_name", heldout_fraction=0, **QUIET)
    doms = token_files.open_domains(out, "train")
    assert list(doms) == ["Arxiv", "Book"]
    assert ByteTokenizer().decode(np.asarray(doms["Book"])).split("\n")[:2] == ["doc 0", "doc 2"]
    with pytest.raises(RecordError, match=r"sp.parquet:1: no column 'text'"):
        encode_records([tmp_path / "sp.parquet"], tmp_path / "e2", errors="strict", **QUIET)


def test_merge_disjoint_encodes(tmp_path, capsys):
    a = _write(tmp_path / "pile/a.jsonl", _records(30))
    b = _write(tmp_path / "pile/b.jsonl", _records(30, 30))
    root = dict(input_root=tmp_path / "pile", shard_tokens=200, **QUIET)
    encode_records([a], tmp_path / "m1", **root)
    encode_records([b], tmp_path / "m2", **root)
    whole = encode_records([a, b], tmp_path / "whole", **root)
    assert corpus_merge_main([str(tmp_path / "m1"), str(tmp_path / "m2"), "--out", str(tmp_path / "m")]) == 0
    for split in ("train", "heldout"):
        merged, ref = (token_files.open_domains(d, split, min_tokens=0) for d in (tmp_path / "m", whole))
        as_lists = [{k: np.asarray(v).tolist() for k, v in d.items()} for d in (merged, ref)]
        assert as_lists[0] == as_lists[1]
    with pytest.raises(ValueError, match=r"input 'a' was encoded in both"):
        merge_corpora([tmp_path / "m1", tmp_path / "whole"], tmp_path / "x", log=lambda s: None)
    encode_records([b], tmp_path / "m3", seed=5, **root)
    with pytest.raises(ValueError, match=r"other settings .*'seed': 5"):
        merge_corpora([tmp_path / "m1", tmp_path / "m3"], tmp_path / "x", log=lambda s: None)
    assert not (tmp_path / "x").exists()


def test_bpe_trained_on_the_records(tmp_path):
    pytest.importorskip("tokenizers")
    recs = _records(60)
    out = encode_records([_write(tmp_path / "a.jsonl", recs)], tmp_path / "c", tokenizer="bpe", bpe_vocab_size=300,
                         heldout_fraction=0, **QUIET)
    tok = load_tokenizer(out)
    assert tok.kind == "bpe" and tok.vocab_size <= 300
    ids = np.asarray(token_files.open_domains(out, "train")["Pile-CC"])
    assert tok.decode(ids[:list(ids).index(tok.eos_id)]) == recs[1]["text"]
    from ado_jax.data.corpus_check import check_corpus_hashes

    with pytest.raises(ValueError, match="an encode of record files, which --check does not cover"):
        check_corpus_hashes(out)


def test_inputs_and_bad_arguments(tmp_path):
    _write(tmp_path / "sp/chunk1/ex_0.jsonl", _records(3))
    _write(tmp_path / "sp/chunk2/ex_0.jsonl", _records(3))
    assert list(list_inputs([tmp_path / "sp"])) == ["chunk1__ex_0", "chunk2__ex_0"]
    with pytest.raises(FileNotFoundError, match="input .*nope does not exist"):
        list_inputs([tmp_path / "nope"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="notes.txt: not a record file"):
        list_inputs([tmp_path / "notes.txt"])
    with pytest.raises(ValueError, match=r"errors='loose': expected one of strict\|replace\|skip"):
        encode_records([tmp_path / "sp"], tmp_path / "o", errors="loose", **QUIET)
    with pytest.raises(ValueError, match=r"no documents in 2 input files: check --text-field 'body'"):
        encode_records([tmp_path / "sp"], tmp_path / "o", text_field="body", **QUIET)
    # a rerun must name its inputs as the first run did, and use the same tokenizer
    encode_records([tmp_path / "sp/chunk1"], tmp_path / "c1", **QUIET)
    with pytest.raises(ValueError, match=r"other ids \{'.*ex_0.jsonl': \('ex_0', 'chunk1__ex_0'\)\}"):
        encode_records([tmp_path / "sp"], tmp_path / "c1", **QUIET)
    with pytest.raises(FileExistsError, match=r"other settings \{'tokenizer'"):
        encode_records([tmp_path / "sp/chunk1"], tmp_path / "c1", tokenizer=ByteTokenizer(add_eos=False), **QUIET)


def test_hf_tokenizer_json(tmp_path):
    tk = pytest.importorskip("tokenizers")
    tok = tk.Tokenizer(tk.models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([r["text"] for r in _records(50)], trainer=trainer)
    tok.post_processor = tk.processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.save(str(tmp_path / "tokenizer.json"))
    recs = _records(20)
    src = _write(tmp_path / "in/a.jsonl", recs)
    args = [str(src), "--out", str(tmp_path / "enc"), "--tokenizer", str(tmp_path / "tokenizer.json"),
            "--heldout-fraction", "0", "--no-progress"]
    assert corpus_encode_main(args) == 0
    loaded = load_tokenizer(tmp_path / "enc")
    assert (loaded.kind, loaded.eos_id, loaded.bos_id, loaded.vocab_size) == ("hf", 2, None, tok.get_vocab_size())
    ids = np.asarray(token_files.open_domains(tmp_path / "enc", "train")["Github"])
    docs = [r["text"] for r in recs if r["meta"]["pile_set_name"] == "Github"]
    want = np.concatenate([tok.encode(d, add_special_tokens=False).ids + [2] for d in docs])  # no template <s>
    assert ids.tolist() == want.tolist() and loaded.decode(ids[:ids.tolist().index(2)]) == docs[0]
    assert corpus_encode_main(args[:1] + ["--out", str(tmp_path / "bos"), "--tokenizer",
                                          str(tmp_path / "tokenizer.json"), "--bos-token", "<s>", "--no-progress"]) == 0
    assert np.asarray(token_files.open_domains(tmp_path / "bos", "train")["Github"])[0] == 1
    assert corpus_encode_main(args[:1] + ["--out", str(tmp_path / "x"), "--eos-token", "</s>"]) == 2
    from ado_jax.config import load_config
    from ado_jax.data.setup import resolve_vocab_size

    cfg = resolve_vocab_size(load_config("tiny", ["data.source=corpus", f"data.corpus_dir={tmp_path / 'enc'}",
                                                  "model.vocab_size=0"]))
    assert cfg.model.vocab_size == tok.get_vocab_size()
    with pytest.raises(ValueError, match=r"eos token '<end>' is not in the tokenizer's vocabulary"):
        resolve_tokenizer(tmp_path / "tokenizer.json", eos_token="<end>")


@pytest.mark.slow  # ~20-35 s on 2 loaded cores; CI runs it (pytest -m slow)
def test_train_on_a_sharded_encode(tmp_path, capsys):
    """The issue's path: Pile-shaped .jsonl.zst, 2 workers, sharded files, `ado-jax train` on them."""
    from ado_jax import cli

    inputs = [_write(tmp_path / f"pile/{i:02d}.jsonl.zst", _records(150, 150 * i)) for i in range(2)]
    assert corpus_encode_main([*map(str, inputs), "--out", str(tmp_path / "c"), "--workers", "2",
                               "--shard-tokens", "2000", "--heldout-fraction", "0.2", "--no-progress"]) == 0
    assert max(d["splits"]["train"]["shards"] for d in corpus.load_manifest(tmp_path / "c")["domains"]) >= 2
    for loader in ("host", "device"):
        sets = ["data.source=corpus", f"data.corpus_dir={tmp_path / 'c'}", f"data.loader={loader}",
                "model.vocab_size=0", "train.steps=2", "train.batch_size=8", "train.seq_len=32",
                "train.eval_every=2", "train.eval_batches=1", "train.progress=false"]
        argv = ["train", "--run-dir", str(tmp_path / f"run-{loader}")] + [a for s in sets for a in ("--set", s)]
        assert cli.main(argv) == 0
        recs = [json.loads(ln) for ln in (tmp_path / f"run-{loader}" / "metrics.jsonl").read_text().splitlines()]
        assert list(recs[0]["weights"]) == sorted(DOMAINS) and np.isfinite(recs[-1]["eval_loss"]["Github"])


def test_array_record_source_reads_an_encode(tmp_path):
    from ado_jax.data.host_source import Prefetcher
    from ado_jax.data.shards import ChunkRecords
    from ado_jax.data.tfds_source import ArrayRecordSource

    out = encode_records([_write(tmp_path / "a.jsonl", _records(90))], tmp_path / "c", shard_tokens=300, **QUIET)
    doms = token_files.open_domains(out, "train")
    src = ArrayRecordSource({n: ChunkRecords(a, 257, chunk=64) for n, a in doms.items()}, 8, 32)
    batch = Prefetcher(src, seed=0, lag=0).next(np.array([0.5, 0.5, 0.0], np.float32))
    assert batch["inputs"].shape == (8, 32) and set(batch["domain"].tolist()) <= {0, 1}
    flat = {n: ByteTokenizer().decode(np.asarray(a)) for n, a in doms.items()}
    for row, d in zip(batch["inputs"], batch["domain"]):
        assert ByteTokenizer().decode(row[:8]).replace("\n", "") in flat[src.names[d]].replace("\n", "")


def test_damaged_shards_are_a_clear_error(tmp_path):
    out = encode_records([_write(tmp_path / "a.jsonl", _records(90))], tmp_path / "c", shard_tokens=300, **QUIET)
    shard = sorted((out / "tokens" / "Github").glob("train-*.bin"))[1]
    shard.write_bytes(shard.read_bytes()[:-4])
    with pytest.raises(ValueError, match=rf"{shard.name}: file has \d+ bytes but the sidecar says"):
        token_files.open_domains(out, "train")
    shard.unlink()
    shard.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{shard.name}: sidecar {shard.stem}.json is missing"):
        token_files.open_domains(out, "train")
    (out / "tokens" / "Github.train.shards.json").write_text("{}")
    with pytest.raises(ValueError, match=r"Github.train.shards.json: not a shard index"):
        token_files.open_domains(out, "train")


def test_crash_inside_a_file_resumes_from_the_last_resume_point(tmp_path, monkeypatch):
    """Killed inside a file: the rerun keeps the finished shards and the .partial ones up to the
    resume point, and writes exactly the shards of an uninterrupted run."""
    import ado_jax.data.encode_worker as ew

    src = _write(tmp_path / "in/a.jsonl", _records(300))
    kw = dict(shard_tokens=700, heldout_fraction=0.2, **QUIET)
    monkeypatch.setattr(ew, "RESUME_BYTES", 900)
    whole = encode_records([src], tmp_path / "whole", **kw)
    original, seen = ew.read_records, []

    def dies_after_200(*args, **kw_):
        for rec in original(*args, **kw_):
            if rec.line > 200:
                raise KeyboardInterrupt  # killed between two resume points
            seen.append(rec.line)
            yield rec

    monkeypatch.setattr(ew, "read_records", dies_after_200)
    with pytest.raises(KeyboardInterrupt):
        encode_records([src], tmp_path / "c", **kw)
    point = json.loads((tmp_path / "c/resume/a.json").read_text())
    assert 150 < point["line"] < 200 and list((tmp_path / "c/tokens/Github").glob("*.partial"))
    finished = {p: p.stat().st_mtime_ns for p in (tmp_path / "c/tokens").rglob("*.bin")}
    assert finished
    monkeypatch.setattr(ew, "read_records", original)
    seen.clear()
    encode_records([src], tmp_path / "c", **kw)
    assert not (tmp_path / "c/resume/a.json").exists() and not list((tmp_path / "c").rglob("*.partial"))
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # kept, not rewritten
    files = {d: sorted(p.relative_to(d) for p in d.rglob("*") if p.is_file()) for d in (whole / "tokens",
                                                                                       tmp_path / "c/tokens")}
    assert files[whole / "tokens"] == files[tmp_path / "c/tokens"]
    for rel in files[whole / "tokens"]:
        assert (whole / "tokens" / rel).read_bytes() == (tmp_path / "c/tokens" / rel).read_bytes(), rel
    assert corpus.load_manifest(tmp_path / "c")["domains"] == corpus.load_manifest(whole)["domains"]
    (tmp_path / "c/tokens/Github/train-a-0099.bin.partial").write_bytes(b"x")  # an abandoned attempt's
    (tmp_path / "c/tokens/Github/train-a-b-0000.bin.partial").write_bytes(b"x")  # another input's
    (tmp_path / "c/parts/a.json").unlink()
    encode_records([src], tmp_path / "c", **kw)
    assert [p.name for p in (tmp_path / "c").rglob("*.partial")] == ["train-a-b-0000.bin.partial"]


def test_shard_writer_resumes_a_shard_finished_after_the_resume_point(tmp_path):
    from ado_jax.data.shard_writer import ShardWriter

    chunks = [np.arange(i * 10, i * 10 + 10) % 257 for i in range(7)]
    ref = ShardWriter(tmp_path / "ref" / "d", "train-x", 257, 25)
    for c in chunks:
        ref.write(c, 1, 10)
    ref_shards = ref.close()
    w = ShardWriter(tmp_path / "c" / "d", "train-x", 257, 25)
    for c in chunks[:4]:
        w.write(c, 1, 10)  # shard 0 finished (30 tokens), shard 1 open with 10
    w.sync()
    state = w.state()
    assert state["open"] == {"count": 10, "docs": 1, "bytes": 10} and len(state["shards"]) == 1
    for c in chunks[4:6]:
        w.write(c, 1, 10)  # shard 1 finished after the resume point, then the process dies
    w.abort()
    resumed = ShardWriter.resume(tmp_path / "c" / "d", "train-x", 257, 25, state)
    for c in chunks[4:]:
        resumed.write(c, 1, 10)
    assert resumed.close() == ref_shards
    for s in ref_shards:
        assert (tmp_path / "c" / s["file"]).read_bytes() == (tmp_path / "ref" / s["file"]).read_bytes()
