"""Storage faults on ``gs://``: the GCS emulator (tests/gcs_server.py) behind the faulty proxy of
tests/gcs_proxy.py, which answers 503 or 429, or drops the connection, on a seeded share of the
requests of gcsfs (metrics, config, lock, orbax's metadata) and tensorstore (orbax's arrays).

A run whose requests fail 10 % of the time completes and logs exactly the metrics of a fault-free
run, and ends with one ``storage: N requests retried ...`` line (``ado_jax.storage_retries``); a
missing bucket and a 403 are one line naming the bucket and what to do, exit code 2, no traceback.
"""

import io
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from ado_jax import storage
from ado_jax.run_log import read_metrics
from ado_jax.storage_retries import count_retries

SMALL = ["--set", "train.progress=false", "--set", "data.max_bytes_per_domain=100000"]
EMULATOR_NOTE = "Using GOOGLE_AUTH_TOKEN_FOR_TESTING"  # tensorstore's INFO line: the emulator's test token


@pytest.fixture
def proxy_for(gcs_server, monkeypatch):
    """``proxy_for(**options)``: a FaultyProxy in front of the session's emulator, with this
    process's gcsfs pointed at it (gcsfs reads ``STORAGE_EMULATOR_HOST`` for every request);
    stopped at the end of the test."""
    from gcs_proxy import FaultyProxy

    proxies = []

    def make(**options):
        proxy = FaultyProxy(gcs_server.url, upstream_env=gcs_server.env, **options)
        proxies.append(proxy)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


def _ado_jax(*args, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """``ado-jax ARGS`` in a fresh process with ``env`` over this one's."""
    exe = shutil.which("ado-jax", path=os.path.dirname(sys.executable))
    cmd = [exe] if exe else [sys.executable, "-m", "ado_jax.cli"]
    return subprocess.run([*cmd, *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=timeout)


def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip() and EMULATOR_NOTE not in ln]


# ------------------------------------------------------------------------- the proxy itself

def test_proxy_faults_are_seeded_shared_as_asked_and_bounded(gcs_server):
    from gcs_proxy import FaultyProxy

    def decisions(seed, rate=0.1, max_consecutive=3):
        with FaultyProxy(gcs_server.url, fault_rate=rate, seed=seed, max_consecutive=max_consecutive) as p:
            return [p._decide("GET", f"/storage/v1/b/b/o/obj{i % 500}") for i in range(5000)]

    a, b, c = decisions(0), decisions(0), decisions(1)
    assert a == b and a != c  # the same seed, the same faults; another seed, others
    share = sum(d is not None for d in a) / len(a)
    assert 0.08 < share < 0.12, share
    assert {d for d in a if d} == {"503", "429", "drop"}
    # At most max_consecutive faults in a row on one request (gcsfs gives up after 6 tries).
    every = decisions(0, rate=1.0, max_consecutive=2)
    for i in range(500):
        assert [every[i + 500 * k] is not None for k in range(6)] == [True, True, False, True, True, False]


def test_proxy_forwards_chunked_uploads_and_expect_100(gcs_server, proxy_for):
    import http.client

    proxy, bucket = proxy_for(), gcs_server.bucket()
    data = os.urandom(300_000)
    conn = http.client.HTTPConnection("127.0.0.1", int(proxy.url.rsplit(":", 1)[1]), timeout=30)
    conn.putrequest("POST", f"/upload/storage/v1/b/{bucket}/o?uploadType=media&name=blob")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Expect", "100-continue")
    conn.endheaders()
    for i in range(0, len(data), 70_000):  # chunks of a body of unknown length, as aiohttp sends them
        block = data[i:i + 70_000]
        conn.send(b"%x\r\n%s\r\n" % (len(block), block))
    conn.send(b"0\r\n\r\n")
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    resp.read()
    conn.close()
    assert storage.filesystem(f"gs://{bucket}/blob")[0].cat_file(f"{bucket}/blob") == data
    stats = proxy.snapshot()
    assert stats["chunked_requests"] == 1 and stats["expect_100"] == 1 and stats["bytes_in"] == len(data)
    assert stats["bytes_out"] >= len(data) and not proxy.errors


# ------------------------------------------------------------ storage helpers through faults

def test_small_writes_survive_faults_and_each_retry_is_counted(gcs_server, proxy_for):
    """Every request fails once (503 or 429; then a dropped connection), then goes through:
    the text is exact (an append is not composed twice) and every retry is counted."""
    path = f"gs://{gcs_server.bucket()}/run/metrics.jsonl"
    t0 = time.perf_counter()
    proxy, out = proxy_for(fault_rate=1.0, max_consecutive=1, faults=("503", "429")), io.StringIO()
    with count_retries(path, out=out) as counts:
        storage.write_text(path, "a\n")
        assert storage.read_text(path) == "a\n"
    injected = proxy.snapshot()["faults"]
    assert sum(injected.values()) == 2 == counts["total"] and counts["gcsfs"] == injected  # a write, a read
    assert out.getvalue() == ("storage: 2 requests retried (gcsfs: " +
                              ", ".join(f"{n} x {k}" for k, n in sorted(injected.items())) + "): the object store "
                              "answered 429/5xx or dropped the connection, and the retry went through unless an "
                              "error follows\n")

    proxy, out = proxy_for(fault_rate=1.0, max_consecutive=1, faults=("drop",)), io.StringIO()
    with count_retries(path, out=out) as counts:
        storage.append_text(path, "b\n")
    assert storage.read_text(path) == "a\nb\n"
    drops = proxy.snapshot()["faults"]["drop"]
    # The part upload and the compose (POSTs) are retried by gcsfs after a backoff; aiohttp resends
    # an idempotent GET or DELETE at once, without a word, when a reused connection was closed.
    assert 2 <= counts["gcsfs"]["connection"] <= drops and counts["tensorstore"] == 0
    assert f"storage: {counts['total']} requests retried (gcsfs: {counts['total']} x connection)" in out.getvalue()
    print(f"\n{sum(injected.values()) + drops} faults injected, {2 + counts['total']} retries counted, "
          f"{time.perf_counter() - t0:.1f} s")


def test_nothing_is_printed_without_retries_or_for_local_paths(gcs_server, proxy_for, tmp_path):
    proxy_for()
    out = io.StringIO()
    path = f"gs://{gcs_server.bucket()}/x"
    with count_retries(path, out=out) as counts:
        storage.write_text(path, "x")
    with count_retries(str(tmp_path / "x"), out=out) as local:
        storage.write_text(str(tmp_path / "x"), "x")
    assert counts["total"] == local["total"] == 0 and out.getvalue() == ""


# ------------------------------------------------------------------------ training through faults

def _train_args(run_dir: str) -> list[str]:
    return ["train", "--config", "tiny", "--steps", "8", "--run-dir", run_dir, "--set", "train.ckpt_every=4", *SMALL]


def _metrics(run_dir: str) -> list[dict]:
    """Every line of the run's ``metrics.jsonl``, ``tokens_per_s`` (a timing) left out."""
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in read_metrics(f"{run_dir}/metrics.jsonl")]


@pytest.mark.slow  # two real trainings (JAX import + compile each), one with ~30 retries of 1-5 s: ~90 s
def test_training_through_storage_faults_matches_a_fault_free_run(gcs_server):
    """gcsfs and tensorstore both go through the proxy; 10 % of gcsfs's requests and 20 % of
    tensorstore's (~45 of the ~270: at 10 % none would fail in 1 % of the runs) fail with 503, 429
    or a dropped connection. The run completes, logs exactly the fault-free run's metrics and says
    how many requests were retried."""
    from gcs_proxy import FaultyProxy

    results = {}
    for name, rate in (("fault-free", 0.0), ("faulty", 0.1)):
        run_dir = f"gs://{gcs_server.bucket()}/runs/t"
        with FaultyProxy(gcs_server.url, fault_rate=rate, client_rates={"tensorstore": 2 * rate}, seed=0,
                         upstream_env=gcs_server.env) as proxy:
            t0 = time.perf_counter()
            proc = _ado_jax(*_train_args(run_dir), env=proxy.env)
            wall = time.perf_counter() - t0
            stats = proxy.snapshot()
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr and "DEBUG" not in proc.stderr, proc.stderr[-3000:]
        assert json.loads(proc.stdout.splitlines()[-1])["step"] == 8
        fs, ckpts = storage.filesystem(f"{run_dir}/checkpoints")
        assert sorted(p.rstrip("/").rsplit("/", 1)[1] for p in fs.ls(ckpts)) == ["4", "8"]
        results[name] = {"metrics": _metrics(run_dir), "wall": wall, "stats": stats,
                         "retried": [ln for ln in _lines(proc.stderr) if ln.startswith("storage: ")]}
    clean, faulty = results["fault-free"], results["faulty"]
    assert faulty["metrics"] == clean["metrics"] and len(clean["metrics"]) >= 9  # 8 steps + evaluations
    assert clean["retried"] == [] and not clean["stats"]["faults"]
    injected = sum(faulty["stats"]["faults"].values())
    assert injected >= 0.05 * faulty["stats"]["requests"]
    assert set(faulty["stats"]["faults_by_client"]) == {"python-gcsfs", "tensorstore"}, faulty["stats"]
    assert len(faulty["retried"]) == 1, faulty["retried"]
    retried = int(faulty["retried"][0].split()[1])
    # Each counted retry answers one injected fault; aiohttp's silent resends are not counted.
    assert 0.3 * injected <= retried <= injected, (retried, faulty["stats"])
    print(f"\nfault-free: {clean['stats']['requests']} requests, {clean['wall']:.1f} s; faulty: "
          f"{faulty['stats']['requests']} requests, {faulty['stats']['faults']} injected "
          f"({faulty['stats']['faults_by_client']}), {faulty['wall']:.1f} s; "
          f"{faulty['retried'][0]}")


# --------------------------------------------------------------------- a missing or forbidden bucket

def _one_error_line(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    err = _lines(proc.stderr)
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_missing_bucket_is_one_line_from_a_real_process(gcs_server):
    bucket = f"no-such-bucket-{uuid.uuid4().hex[:8]}"
    proc = _ado_jax(*_train_args(f"gs://{bucket}/runs/t"), env=gcs_server.env)
    line = _one_error_line(proc)
    assert f"gs://{bucket} does not exist" in line and f"gcloud storage buckets create gs://{bucket}" in line
    assert not storage.filesystem("gs://x")[0].exists(bucket)  # nothing created it


def test_forbidden_bucket_is_one_line_from_a_real_process(gcs_server, proxy_for):
    bucket = gcs_server.bucket()
    proxy = proxy_for()
    proxy.forbid_bucket(bucket)
    proc = _ado_jax(*_train_args(f"gs://{bucket}/runs/t"), env=proxy.env)
    line = _one_error_line(proc)
    assert f"by gs://{bucket}" in line and "HTTP 403" in line and "roles/storage.objectAdmin" in line, line
    assert proxy.snapshot()["forbidden"] >= 1
