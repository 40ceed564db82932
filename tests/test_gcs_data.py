"""Token data from an object store: upload with hash checks, chunked reads, exact resume, memory cap.

The source's sampling is checked on ``file://`` token files (fsspec's local filesystem: the same
range-read code path, no server); uploads, training and resume use the GCS emulator
(``gcs_server`` fixture), request counts a counting proxy in front of it (tests/gcs_proxy.py).
"""

import json
import shutil

import fsspec
import numpy as np
import pytest
from scipy import stats

from ado_jax import cli, sharding
from ado_jax.config import MeshConfig, load_config
from ado_jax.data import corpus
from ado_jax.data.chunked_loader import ChunkedLoader
from ado_jax.data.chunked_source import ChunkedPrefetcher, ChunkedSource, ChunkedState
from ado_jax.data.corpus_upload import upload_corpus
from ado_jax.data.host_source import HostSource
from ado_jax.data.remote_tokens import RemoteTokens, open_remote_domains
from ado_jax.data.token_files import open_domains

NAMES = ("alpha", "beta", "delta", "gamma")
QUIET = dict(log=lambda *a: None)


def _file_tokens(tmp_path, name, ids) -> RemoteTokens:
    path = tmp_path / f"{name}.bin"
    np.asarray(ids, np.uint16).tofile(path)
    return RemoteTokens(fsspec.filesystem("file"), [(str(path), len(ids), None)], "uint16")


def _weights(t, D):
    w = np.abs(np.sin(np.arange(D) + 0.7 * t)) + 0.05
    return (w / w.sum()).astype(np.float32)


def _state(lag, D, P=1, seed=3):
    return ChunkedState(np.int64(seed), np.int64(0), np.tile(np.full(D, 1 / D, np.float32), (lag, 1)),
                        np.zeros((P, D), np.int64))


@pytest.fixture(scope="module")
def local_corpus(tmp_path_factory):
    """A 4-domain byte-token corpus (~40 KB of text per domain), written like `corpus build` does."""
    rng = np.random.default_rng(0)
    splits = {}
    for i, name in enumerate(NAMES):
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"[i * 5:i * 5 + 8] + " "))
        docs = ["".join(rng.choice(letters, 2000)) for _ in range(21)]
        splits[name] = {"train": docs[:20], "heldout": docs[20:]}
    return corpus.write_corpus(tmp_path_factory.mktemp("c") / "corpus", splits, "byte", **QUIET)


@pytest.fixture(scope="module")
def remote_corpus(gcs_server, local_corpus):
    url = f"gs://{gcs_server.bucket()}/corpus"
    upload_corpus(local_corpus, url, **QUIET)
    return url


# --- sampling (file://, no server) -------------------------------------------------------------


def test_domains_follow_the_host_source_and_windows_cover_each_domain_uniformly(tmp_path):
    N, T, B = 20000, 16, 32
    doms = {f"d{d}": _file_tokens(tmp_path, f"d{d}", (np.arange(N) + d * 20000) % 65536) for d in range(3)}
    src = ChunkedSource(doms, B, T, chunk_bytes=2048, readahead_bytes=1 << 20, threads=2)
    assert src.n_chunks.tolist() == [20] * 3 and src.windows.tolist() == [59] * 3
    host = HostSource({n: np.zeros(N, np.uint16) for n in doms}, B, T)
    it = ChunkedPrefetcher(src, _state(1, 3))
    starts = {d: [] for d in range(3)}  # in each domain's stream order
    for t in range(160):  # more than one pass over every domain's 20 chunks
        batch = it.next(_weights(t, 3))
        want = host.sample(3, t, _weights(t - 1, 3) if t else np.full(3, 1 / 3))["domain"]
        np.testing.assert_array_equal(batch["domain"], want)  # the same draw as the memmap path, lag 1
        seq = np.concatenate([batch["inputs"], batch["targets"][:, -1:]], axis=1)
        assert np.all(np.diff(seq, axis=1) == 1)  # contiguous windows of the drawn domain
        for d, s in zip(batch["domain"], seq[:, 0]):
            starts[int(d)].append(int(s) - int(d) * 20000)
    it.close()
    src.close()
    one_pass = int(src.n_chunks[0] * src.windows[0])  # every chunk visited once, W windows each
    for d in range(3):
        assert len(starts[d]) >= one_pass
        s = np.array(starts[d][:one_pass])
        assert s.min() >= 0 and s.max() <= N - T - 1
        counts = np.histogram(s, bins=100, range=(0, N - T))[0]
        assert stats.chisquare(counts).pvalue > 1e-3, (d, counts)
    assert src.reader.stats["requests"] < 0.02 * 160 * B  # chunks, not sequences


def test_each_process_fills_its_rows_from_chunks_no_other_process_reads(tmp_path):
    N, T, B, P = 20000, 16, 32, 2
    doms = {f"d{d}": _file_tokens(tmp_path, f"d{d}", np.arange(N) % 65536) for d in range(3)}
    host = HostSource({n: np.zeros(N, np.uint16) for n in doms}, B, T)
    fetched = []
    for p in range(P):  # two processes, each with its own source, one loader state
        src = ChunkedSource(doms, B, T, chunk_bytes=2048, readahead_bytes=4 * 2048 + 1024, threads=1,
                            process_index=p, process_count=P)
        it = ChunkedPrefetcher(src, _state(0, 3, P))
        for t in range(4):
            batch = it.next(np.full(3, 1 / 3))
            assert batch["inputs"].shape == (B // P, T)
            want = host.sample(3, t, np.full(3, 1 / 3))["domain"][p * B // P:(p + 1) * B // P]
            np.testing.assert_array_equal(batch["domain"], want)
        assert it.state.consumed.sum() == 4 * B  # every process tracks every process's streams
        src.close()
        fetched.append({key for key in src.reader.fetched})
    assert fetched[0] and fetched[1] and not fetched[0] & fetched[1]


def test_remote_tokens_read_ranges_across_objects(tmp_path):
    a, b = _file_tokens(tmp_path, "a", np.arange(100)), _file_tokens(tmp_path, "b", np.arange(100, 250))
    joined = RemoteTokens.concat([a, b])  # a data.groups group, or a sharded domain
    assert joined.size == 250 and len(joined.pieces(90, 120)) == 2 and len(joined.pieces(0, 100)) == 1
    np.testing.assert_array_equal(joined[90:120], np.arange(90, 120))
    np.testing.assert_array_equal(np.asarray(joined), np.arange(250))
    with pytest.raises(IndexError):
        joined.read(200, 251)


def test_readahead_below_one_chunk_per_domain_is_refused(tmp_path):
    doms = {f"d{d}": _file_tokens(tmp_path, f"d{d}", np.arange(20000)) for d in range(3)}
    with pytest.raises(ValueError, match="data.readahead_mb"):
        ChunkedSource(doms, 8, 16, chunk_bytes=4096, readahead_bytes=3 * 4096)


def test_reader_settings_are_validated():
    with pytest.raises(ValueError, match="data.chunk_mb"):
        load_config("tiny", ["data.chunk_mb=0"])
    with pytest.raises(ValueError, match="data.reader_threads"):
        load_config("tiny", ["data.reader_threads=0"])


# --- upload ------------------------------------------------------------------------------------


def test_uploaded_corpus_reads_back_like_the_local_one(remote_corpus, local_corpus):
    for split in ("train", "heldout"):
        remote, local = open_remote_domains(remote_corpus, split), open_domains(local_corpus, split)
        assert list(remote) == list(local) == list(NAMES)
        for name in NAMES:
            np.testing.assert_array_equal(np.asarray(remote[name]), np.asarray(local[name]))
            np.testing.assert_array_equal(remote[name][17:4000], local[name][17:4000])


@pytest.mark.parametrize("damage", ["tokens", "text"])
def test_upload_refuses_a_file_that_does_not_match_the_corpus_hashes(gcs_server, local_corpus, tmp_path, damage,
                                                                     capsys):
    bad = tmp_path / "bad"
    shutil.copytree(local_corpus, bad)
    rel = "tokens/beta.train.bin" if damage == "tokens" else "text/beta.train.jsonl"
    raw = bytearray((bad / rel).read_bytes())
    raw[100] = raw[100] + 1 if damage == "tokens" else ord("z")  # same size, other content
    (bad / rel).write_bytes(bytes(raw))
    url = f"gs://{gcs_server.bucket()}/c"
    assert cli.main(["corpus", "upload", str(bad), url]) == 2
    err = capsys.readouterr().err
    assert "not uploading" in err and (f"{bad}/{rel}" in err if damage == "tokens" else "text/beta." in err), err
    fs = fsspec.filesystem("gs")
    assert fs.find(url.removeprefix("gs://")) == []  # nothing went up


def test_interrupted_upload_leaves_no_manifest_and_a_rerun_finishes_it(gcs_server, local_corpus, monkeypatch):
    from ado_jax import storage

    url = f"gs://{gcs_server.bucket()}/c"
    gcs = storage.filesystem(url)[0]  # the (cached) filesystem instance the upload uses
    real, calls = gcs.put_file, []

    def flaky(lpath, rpath, *a, **kw):
        calls.append(rpath)
        if len(calls) == 4:
            raise OSError("connection reset (injected)")
        return real(lpath, rpath, *a, **kw)

    monkeypatch.setattr(gcs, "put_file", flaky)
    with pytest.raises(OSError, match="injected"):
        upload_corpus(local_corpus, url, workers=1, **QUIET)
    fs = fsspec.filesystem("gs")
    assert not fs.exists(url.removeprefix("gs://") + "/manifest.json")
    with pytest.raises(FileNotFoundError, match="corpus upload"):
        open_remote_domains(url)
    monkeypatch.setattr(gcs, "put_file", real)
    there = len(fs.find(url.removeprefix("gs://")))
    assert there >= 3
    out = upload_corpus(local_corpus, url, **QUIET)
    assert out["skipped"] == there and out["uploaded"] == out["files"] - there
    assert upload_corpus(local_corpus, url, **QUIET)["uploaded"] == 0  # all there: nothing to do
    other = json.loads((local_corpus / "manifest.json").read_text())
    fs.pipe_file(url.removeprefix("gs://") + "/manifest.json", json.dumps({**other, "created": "x"}).encode())
    with pytest.raises(FileExistsError, match="another corpus"):
        upload_corpus(local_corpus, url, **QUIET)


# --- the loader on the emulator ----------------------------------------------------------------


def _cfg(url, *extra):
    return load_config("tiny", ["data.source=corpus", f"data.corpus_dir={url}", "data.loader=host",
                                "model.vocab_size=257", "data.chunk_mb=0.01", *extra])


def test_loader_resumes_exactly_after_a_kill(remote_corpus, tmp_path):
    mesh = sharding.make_mesh(MeshConfig(data=-1))
    cfg = _cfg(remote_corpus, "data.prefetch=2")
    domains = open_remote_domains(remote_corpus)
    loader = ChunkedLoader(cfg, mesh, domains)
    loader.start(loader.init_state(None, np.full(4, 0.25)))
    batches, saved = [], None
    for t in range(12):
        if t == 5:
            saved = loader.state(None)
        batches.append({k: np.asarray(v) for k, v in loader.step_input(_weights(t, 4)).batch.items()})
    loader.close()  # killed with two batches in flight
    assert int(saved.step) == 5 and int(saved.consumed.sum()) == 5 * cfg.train.batch_size
    # Restarted with other reader settings and a cache: reading differently, same batches.
    other = _cfg(remote_corpus, "data.prefetch=2", "data.reader_threads=1", "data.readahead_mb=4",
                 f"data.cache_dir={tmp_path / 'cache'}")
    for attempt in range(2):  # the second restart reads its chunks from the cache
        again = ChunkedLoader(other, mesh, open_remote_domains(remote_corpus))
        again.start(saved)
        for t in range(5, 12):
            got = again.step_input(_weights(t, 4)).batch
            for k in ("inputs", "targets", "domain"):
                np.testing.assert_array_equal(np.asarray(got[k]), batches[t][k], err_msg=f"step {t} {k}")
        stats_ = dict(again.source.reader.stats)
        again.close()
        assert (stats_["cache_hits"] > 0) == (attempt == 1), stats_


def test_readahead_cap_is_respected(remote_corpus):
    domains = open_remote_domains(remote_corpus)
    chunk = 8192
    cap = 7 * chunk  # one chunk per domain + one (the minimum), + 2 to read ahead
    src = ChunkedSource(domains, 16, 64, chunk_bytes=chunk, readahead_bytes=cap, threads=2)
    it = ChunkedPrefetcher(src, _state(1, 4))
    for t in range(60):
        it.next(_weights(t, 4))
        assert src.reader.held_bytes <= cap
    it.close()
    src.close()
    s = src.reader.stats
    assert 0 < s["peak_bytes"] <= cap, s
    assert s["chunks_fetched"] > 2 * 4 and s["evicted"] >= 0  # it moved through several chunks per domain


def _count_requests(gcs_server, monkeypatch):
    from gcs_proxy import FaultyProxy

    proxy = FaultyProxy(gcs_server.url)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)  # gcsfs reads it at every request
    return proxy


def test_train_tiny_from_gs_reads_chunks_not_sequences(gcs_server, remote_corpus, tmp_path, monkeypatch):
    steps, B = 12, 16
    reads, real_read = [], RemoteTokens.read

    def counted(self, lo, hi):
        reads.append((self.segments[0][0], lo, hi))
        return real_read(self, lo, hi)

    monkeypatch.setattr(RemoteTokens, "read", counted)
    with _count_requests(gcs_server, monkeypatch) as proxy:
        sets = ["data.source=corpus", f"data.corpus_dir={remote_corpus}", "data.loader=host", "model.vocab_size=0",
                "data.chunk_mb=0.05", "train.progress=false", "train.eval_every=0"]
        assert cli.main(["train", "--config", "tiny", "--steps", str(steps), "--run-dir", str(tmp_path / "run"),
                         *[a for s in sets for a in ("--set", s)]]) == 0
        requests = proxy.snapshot()["requests"]
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == steps and np.isfinite(losses).all()
    train_reads = [r for r in reads if r[0].endswith(".train.bin")]
    # 2 chunks of ~26k tokens per domain (the whole corpus, read ahead), against 192 sequences.
    assert 0 < len(train_reads) <= 2 * len(NAMES) and all(hi - lo > 20000 for _, lo, hi in train_reads), reads
    # Every request of the run (metadata, held-out splits, chunks) together: far below one per sequence.
    assert requests < steps * B / 6, requests


@pytest.mark.slow  # ~40 s: three short training runs
def test_training_from_gs_resumes_bit_identically(remote_corpus, tmp_path):
    sets = ["data.source=corpus", f"data.corpus_dir={remote_corpus}", "data.loader=host", "model.vocab_size=0",
            "data.chunk_mb=0.01", "train.progress=false", "train.eval_every=0", "train.ckpt_every=4"]
    flags = [a for s in sets for a in ("--set", s)]

    def train(run, steps):
        assert cli.main(["train", "--config", "tiny", "--steps", str(steps), "--run-dir", str(run), *flags]) == 0
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in rows if "loss" in r}

    full = train(tmp_path / "full", 8)
    train(tmp_path / "part", 4)
    resumed = train(tmp_path / "part", 8)
    assert [resumed[s] for s in range(5, 9)] == [full[s] for s in range(5, 9)]


@pytest.mark.slow  # three two-process runs (JAX import + compile each): ~2-3 min on 2 cores
def test_two_processes_train_from_gs_data_into_a_gs_run_dir_and_resume_exactly(remote_corpus, gcs_server):
    """Two JAX processes (jax.distributed on localhost, 4 fake CPU devices each), data and run dir
    both on the emulator: each process fills its own rows from its own chunks; 4 steps then a
    resume to 8 log the same losses as 8 steps straight. (The batches differ from a one-process
    run's: each process has its own per-domain chunk streams, see docs/data.md.)"""
    import os
    import socket
    import subprocess
    import sys

    from ado_jax.run_log import read_metrics

    def port():
        with socket.socket() as s:
            s.bind(("localhost", 0))
            return s.getsockname()[1]

    sets = ["data.source=corpus", f"data.corpus_dir={remote_corpus}", "data.loader=host", "model.vocab_size=0",
            "data.chunk_mb=0.01", "train.progress=false", "train.eval_every=0", "train.ckpt_every=4"]

    def train(run, steps):
        p, procs = port(), []
        for pid in range(2):
            env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4",
                       JAX_NUM_PROCESSES="2", JAX_COORDINATOR_ADDRESS=f"localhost:{p}", JAX_PROCESS_ID=str(pid))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "ado_jax.cli", "train", "--config", "tiny", "--steps", str(steps),
                 "--run-dir", run, *[a for s in sets for a in ("--set", s)]],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outs = [proc.communicate(timeout=600)[0] for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0], outs
        return {r["step"]: r["loss"] for r in read_metrics(f"{run}/metrics.jsonl") if "loss" in r}

    bucket = f"gs://{gcs_server.bucket()}"
    full = train(f"{bucket}/full", 8)
    assert sorted(full) == list(range(1, 9)) and np.isfinite(list(full.values())).all()
    train(f"{bucket}/part", 4)
    resumed = train(f"{bucket}/part", 8)
    assert [resumed[s] for s in range(5, 9)] == [full[s] for s in range(5, 9)]
