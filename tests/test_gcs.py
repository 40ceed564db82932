"""Every ``gs://`` path of the library, against the GCS emulator of tests/gcs_server.py.

A run and its resume on ``gs://`` log exactly the metrics of the same run on local disk, in at most
twice its wall time and with nothing more on stderr; the run-directory lock (a create-if-absent
object) lets exactly one of two trainers started together in, and a stale one is refused until
``--break-lock``; ``metrics.jsonl`` is appended in O(new lines) (the request bodies gcsfs sends,
counted); a killed run resumes bit for bit and a half-written checkpoint is skipped; ``export
--out gs://``, ``train.init_from=gs://``, ``plot``, ``compare``, ``eval`` and the TensorBoard and
W&B sinks read and write ``gs://``; a missing bucket, or one that answers 403 (through the proxy of
tests/gcs_proxy.py), is one line naming it. The trained runs are shared by the module (``runs``).
"""

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from ado_jax import cli, storage
from ado_jax.checkpoint import Checkpointer
from ado_jax.run_dir import RunDirBusy, RunLock
from ado_jax.run_log import MetricsLog, read_metrics

SMALL = ["--set", "train.progress=false", "--set", "data.max_bytes_per_domain=100000"]
EMULATOR_NOTE = "Using GOOGLE_AUTH_TOKEN_FOR_TESTING"  # tensorstore's INFO line: the emulator's test token


def _train(run_dir, steps, *extra) -> int:
    return cli.main(["train", "--config", "tiny", "--steps", str(steps), "--run-dir", str(run_dir), *SMALL, *extra])


def _records(run_dir) -> dict:
    """``{step: training record}`` of a run (``tokens_per_s``, a timing, left out)."""
    return {r["step"]: {k: v for k, v in r.items() if k != "tokens_per_s"}
            for r in read_metrics(f"{run_dir}/metrics.jsonl") if "loss" in r}


def _objects(folder) -> dict:
    """``{path under folder: size}`` of the objects under the ``gs://`` folder."""
    assert str(folder).startswith("gs://")
    fs, inner = storage.filesystem(folder)
    return {p[len(inner) + 1:]: fs.info(p)["size"] for p in fs.find(inner)}


@contextlib.contextmanager
def _stderr_into(path):
    """Everything the block writes to stderr, Python's ``sys.stderr`` and file descriptor 2 (where
    tensorstore's and XLA's C++ logs go), appended to the file ``path``."""
    with open(path, "a") as f, contextlib.redirect_stderr(f):
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            f.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _lines(text: str, *drop) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip() and not any(d in ln for d in drop)]


@pytest.fixture(scope="module")
def runs(gcs_server, tmp_path_factory):
    """The same run (tiny, 8 steps, then resumed to 12; checkpoints every 4) on ``gs://`` and on
    local disk, in this process, after an untimed uninterrupted 12-step run on local disk (the
    reference, and the warm-up that fills the compilation cache, so the timed runs measure the
    run, not XLA). ``{"gs", "local", "full": run dir; "time": {kind: [new, resume] seconds};
    "stderr": {kind: text}}``."""
    tmp = tmp_path_factory.mktemp("runs")
    assert _train(tmp / "full", 12, "--set", "train.ckpt_every=4") == 0
    dirs = {"gs": f"gs://{gcs_server.bucket()}/runs/r", "local": str(tmp / "local")}
    times, rcs = {"gs": [], "local": []}, []
    for steps in (8, 12):
        for kind, run_dir in dirs.items():
            with _stderr_into(tmp / f"{kind}.err"):
                t0 = time.perf_counter()
                rcs.append(_train(run_dir, steps, "--set", "train.ckpt_every=4"))
                times[kind].append(time.perf_counter() - t0)
    assert rcs == [0, 0, 0, 0]
    return {**dirs, "full": str(tmp / "full"), "time": times,
            "stderr": {k: (tmp / f"{k}.err").read_text() for k in dirs}}


# ------------------------------------------------------------------------------ (a) run + resume

def test_gs_run_and_resume_match_the_local_run_bit_for_bit(runs):
    gs, local = _records(runs["gs"]), _records(runs["local"])
    assert sorted(gs) == list(range(1, 13))
    assert gs == local == _records(runs["full"])  # every metric of every step, resumed steps 9-12 included
    evals = [r for r in read_metrics(f"{runs['gs']}/metrics.jsonl") if "eval_loss" in r]
    assert evals == [r for r in read_metrics(f"{runs['local']}/metrics.jsonl") if "eval_loss" in r]
    assert [r["step"] for r in evals] == [8, 12]
    # config.json is the config in force (12 steps); the change is in config_history.jsonl, as locally.
    remote_cfg = json.loads(storage.read_text(f"{runs['gs']}/config.json"))
    assert remote_cfg == json.loads(storage.read_text(f"{runs['local']}/config.json"))
    assert remote_cfg["train"]["steps"] == 12
    history = {k: [{**json.loads(ln), "time": None} for ln in storage.read_text(f"{runs[k]}/config_history.jsonl")
                   .splitlines()] for k in ("gs", "local")}
    assert history["gs"] == history["local"] == [{"step": 8, "time": None, "changed": {"train.steps": [8, 12]}}]
    assert Checkpointer(f"{runs['gs']}/checkpoints").all_steps() == [4, 8, 12]
    names = _objects(runs["gs"])
    assert "run.lock" not in names and not any(".part-" in n for n in names), sorted(names)
    # Nothing on stderr beyond what the local run prints (the emulator's token note aside).
    err = runs["stderr"]
    assert "Traceback" not in err["gs"] and "WARNING" not in err["gs"].upper(), err["gs"]
    assert _lines(err["gs"], EMULATOR_NOTE) == _lines(err["local"].replace(runs["local"], runs["gs"])), err["gs"]
    t = {k: sum(v) for k, v in runs["time"].items()}
    print(f"\nwall time (compiled steps cached), 8 steps + resume to 12: gs:// {runs['time']['gs'][0]:.1f} + "
          f"{runs['time']['gs'][1]:.1f} s, local {runs['time']['local'][0]:.1f} + {runs['time']['local'][1]:.1f} s "
          f"({t['gs'] / t['local']:.2f}x)")
    # A loose guard against a gross slowdown (an object rewritten whole per append, say): ~1.15x
    # here on a quiet machine; the slack is for the other xdist worker sharing the 2 cores.
    assert t["gs"] <= 2 * t["local"] + 20, runs["time"]


def test_config_change_on_resume_is_recorded_on_gs(gcs_server):
    """``record_config`` on ``gs://``: ``config.json`` replaced, the change appended to the history."""
    from ado_jax import run_dir as run_dirs
    from etils import epath

    run = epath.Path(f"gs://{gcs_server.bucket()}/run")
    run_dirs.record_config(run, {"train": {"lr": 1e-3}}, 0, {})
    for step, lr in ((5, 2e-3), (9, 3e-3)):
        old = json.loads(storage.read_text(run / "config.json"))
        changes = run_dirs.check_resume(old, {"train": {"lr": lr}}, step, allow_change=True)
        run_dirs.record_config(run, {"train": {"lr": lr}}, step, changes)
    assert json.loads(storage.read_text(run / "config.json")) == {"train": {"lr": 3e-3}}
    history = [json.loads(ln) for ln in storage.read_text(run / run_dirs.HISTORY).splitlines()]
    assert [(h["step"], h["changed"]) for h in history] == [(5, {"train.lr": [1e-3, 2e-3]}),
                                                           (9, {"train.lr": [2e-3, 3e-3]})]


# --------------------------------------------------------------------------------------- (b) lock

RACER = """
import os, sys, time
from ado_jax import cli, loop  # JAX and the rest imported before the start line
open(f"{sys.argv[1]}.ready-{os.getpid()}", "w").close()
while not os.path.exists(sys.argv[1] + ".go"):
    time.sleep(0.002)
sys.exit(cli.main(sys.argv[2:]))
"""


def test_two_trainers_started_together_exactly_one_trains(gcs_server, tmp_path):
    run = f"gs://{gcs_server.bucket()}/run"
    flag = str(tmp_path / "start")
    # The winner holds the lock for its whole run (data, the step, 4 steps, a save): seconds, while
    # the two reach the lock within milliseconds of each other.
    args = ["train", "--config", "tiny", "--steps", "4", "--run-dir", run, *SMALL, "--set", "train.eval_every=0"]
    env = dict(os.environ)  # the emulator's variables and the session's XLA cache (conftest.py)
    procs = [subprocess.Popen([sys.executable, "-c", RACER, flag, *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    try:
        deadline = time.time() + 120
        while len([f for f in os.listdir(tmp_path) if f.startswith("start.ready-")]) < 2:
            assert time.time() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.01)
        open(flag + ".go", "w").close()  # both go at once
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            p.kill()
    rcs = [p.returncode for p in procs]
    assert sorted(rcs) == [0, 2], (rcs, outs)
    winner, loser = (0, 1) if rcs[0] == 0 else (1, 0)
    err = _lines(outs[loser][1], EMULATOR_NOTE)
    assert len(err) == 1, err  # one line, no traceback
    assert err[0].startswith(f"error: run dir {run} is locked by pid {procs[winner].pid} on {socket.gethostname()}")
    assert "--break-lock" in err[0]
    assert [r["step"] for r in read_metrics(f"{run}/metrics.jsonl")] == [1, 2, 3, 4]  # trained once
    assert storage.read_text(f"{run}/run.lock") is None  # released


def test_lock_race_in_threads_has_one_winner(gcs_server):
    """Eight ``RunLock``s at the same instant (a barrier): exactly one acquires the object."""
    import threading

    from etils import epath

    run = epath.Path(f"gs://{gcs_server.bucket()}/run")
    barrier, results = threading.Barrier(8), []

    def race():
        barrier.wait()
        try:
            results.append(RunLock(run))
        except RunDirBusy as e:
            results.append(e)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if isinstance(r, RunLock)]
    assert len(winners) == 1 and len(results) == 8
    assert all(f"pid {os.getpid()} on {socket.gethostname()}" in str(r) for r in results if r not in winners)
    winners[0].release()
    assert storage.read_text(run / "run.lock") is None


def test_stale_lock_refuses_a_start_and_break_lock_takes_it_over(runs, capfd):
    run = runs["gs"]
    stale = json.dumps({"host": "gone-host", "pid": 4242, "started": "2024-01-01T00:00:00+00:00"})
    storage.create_exclusive(f"{run}/run.lock", stale)
    capfd.readouterr()
    assert _train(run, 12) == 2  # refused before anything else is read
    err = _lines(capfd.readouterr().err, EMULATOR_NOTE)
    assert len(err) == 1 and "is locked by pid 4242 on gone-host since 2024-01-01" in err[0], err
    assert _train(run, 12, "--break-lock") == 0  # at step 12 already: nothing to train
    out, err = capfd.readouterr()
    assert "already at step 12" in out
    assert f"--break-lock: took over {run}/run.lock from pid 4242 on gone-host" in err
    assert storage.read_text(f"{run}/run.lock") is None  # the new holder released its own lock


def test_release_by_a_non_holder_deletes_nothing(gcs_server, capsys):
    from etils import epath

    run = epath.Path(f"gs://{gcs_server.bucket()}/run")
    first = RunLock(run)
    second = RunLock(run, break_lock=True)  # takes over (as after a crash)
    assert second.generation != first.generation
    first.release()  # the old holder ends: it must not delete the new holder's lock
    assert "was taken over by another process" in capsys.readouterr().err
    assert storage.generation(run / "run.lock") == second.generation
    assert not storage.delete_if_generation(run / "run.lock", first.generation)
    assert storage.generation(run / "run.lock") == second.generation
    with pytest.raises(RunDirBusy):
        RunLock(run)
    second.release()
    assert storage.generation(run / "run.lock") is None


# ----------------------------------------------------------------------------- (c) metrics.jsonl

def _record(step: int) -> dict:
    """A training record the size of a tiny run's (about 700 bytes)."""
    domains = ("python", "docs", "c_headers", "legal")
    per = lambda x: {d: x + i / 7 for i, d in enumerate(domains)}
    return {"step": step, "loss": 4.0 + 1 / step, "grad_norm": 0.5 + 1 / step, "lr": 1e-3, "skipped": 0,
            "skipped_in_row": 0, "domain_loss": per(4.1), "domain_count": per(4.0), "weights": per(0.25),
            "domain_loss_ema": per(4.2), "heldout_eval": 0, "tokens_per_s": 1234.5}


@contextlib.contextmanager
def _counted_requests(path):
    """Yields a list that gets ``(method, request body bytes)`` for every HTTP request gcsfs sends
    for ``path``'s file system in the block (uploads: the multipart body; compose: its JSON)."""
    fs = storage.filesystem(path)[0]
    calls, send = [], fs._request

    async def counting(method, url, *args, **kwargs):
        data, body = kwargs.get("data"), kwargs.get("json")
        size = len(data) if isinstance(data, (bytes, bytearray)) else 0
        calls.append((method, size + (len(json.dumps(body)) if body is not None else 0)))
        return await send(method, url, *args, **kwargs)

    fs._request = counting
    try:
        yield calls
    finally:
        del fs._request  # the class's method again


def test_metrics_appends_upload_only_the_new_lines(gcs_server):
    """2,000 lines in 100 appends: the bytes sent grow with the lines, not with the file."""
    from etils import epath

    run = epath.Path(f"gs://{gcs_server.bucket()}/run")
    log, per_append = MetricsLog(run, 0), []
    with _counted_requests(run) as calls:
        for flush in range(100):
            n = len(calls)
            log.write([_record(flush * 20 + i + 1) for i in range(20)])
            per_append.append((sum(b for _, b in calls[n:]), len(calls) - n))
    size = len(storage.read_text(run / "metrics.jsonl").encode())
    sent = sum(b for b, _ in per_append)
    print(f"\nmetrics.jsonl, 2,000 lines in 100 appends: {sent:,} bytes sent for a {size:,}-byte file "
          f"({sent / size:.2f}x); {per_append[-1][1]} requests per append")
    assert sent <= 1.2 * size  # a rewrite per append would send ~100x the file
    first, last = sum(b for b, _ in per_append[:10]), sum(b for b, _ in per_append[-10:])
    assert last <= 1.05 * first  # an append costs the same at the end of the file as at its start
    assert [n for _, n in per_append[1:]] == [3] * 99  # part upload, compose, part delete
    assert read_metrics(run / "metrics.jsonl") == [_record(s) for s in range(1, 2001)]
    assert list(_objects(run)) == ["metrics.jsonl"]  # no part left


def test_part_left_by_a_crash_is_removed_without_duplicating_lines(gcs_server, capsys):
    from etils import epath

    run = epath.Path(f"gs://{gcs_server.bucket()}/run")
    log = MetricsLog(run, 0)
    log.write([_record(s) for s in range(1, 6)])
    log.write([_record(s) for s in range(6, 9)])
    # A crash between an append's compose and its delete: the part (already in the file) is left.
    part = f"{run}/metrics.jsonl.part-0123456789ab"
    storage.write_text(part, "".join(json.dumps(_record(s)) + "\n" for s in range(6, 9)))
    resumed = MetricsLog(run, 8)  # the run resumes from its step-8 checkpoint
    assert storage.read_text(part) is None
    resumed.write([_record(9)])
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == list(range(1, 10))
    # Resuming from step 4 drops the later lines (those steps are redone) and says so.
    MetricsLog(run, 4)
    assert "dropping the 5 records" in capsys.readouterr().err
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1, 2, 3, 4]


# ------------------------------------------------------------------------ (d) faults and resume

def _copy_run(src: str, dst: str) -> None:
    """Copies the ``gs://`` run ``src`` to ``dst`` (server-side copies)."""
    fs = storage.filesystem(src)[0]
    fs.copy(src[len("gs://"):], dst[len("gs://"):], recursive=True)


def test_half_written_checkpoint_on_gs_is_skipped(runs, gcs_server):
    """A save killed midway on ``gs://`` leaves the step's objects without orbax's commit marker
    (``commit_success.txt``, written last) and possibly a truncated object: never the latest."""
    run = f"gs://{gcs_server.bucket()}/run"
    _copy_run(runs["gs"], run)
    fs, inner = storage.filesystem(f"{run}/checkpoints/12")
    for marker in fs.find(inner):
        if marker.endswith("commit_success.txt"):
            fs.rm_file(marker)
    arrays = [p for p in fs.find(inner) if "/d/" in p]
    biggest = max(arrays, key=lambda p: fs.info(p)["size"])
    fs.pipe_file(biggest, fs.cat_file(biggest)[:100])
    assert Checkpointer(f"{run}/checkpoints").latest_step() == 8
    assert _train(run, 12, "--set", "train.ckpt_every=4") == 0
    assert _records(run) == _records(runs["full"])  # steps 9-12 redone, identically
    assert Checkpointer(f"{run}/checkpoints").all_steps() == [4, 8, 12]


@pytest.mark.slow  # a subprocess (JAX import + compile) killed mid-run, then a resume: ~40 s on 2 busy cores
def test_sigkill_of_a_gs_run_resumes_bit_for_bit(runs, gcs_server):
    run = f"gs://{gcs_server.bucket()}/run"
    cmd = [sys.executable, "-m", "ado_jax.cli", "train", "--config", "tiny", "--steps", "100000", "--run-dir", run,
           *SMALL, "--set", "train.ckpt_every=2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ))
    fs, inner = storage.filesystem(f"{run}/checkpoints")
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if fs.exists(f"{inner}/4/commit_success.txt"):
                break
            time.sleep(0.05)
    finally:
        proc.kill()
        out = proc.communicate(timeout=60)[0]
    assert proc.returncode == -signal.SIGKILL, out
    latest = Checkpointer(f"{run}/checkpoints").latest_step()
    assert latest is not None and 4 <= latest < 12
    assert storage.read_text(f"{run}/run.lock") is not None  # the killed process could not release it
    assert _train(run, 12) == 2  # the stale lock refuses a start ...
    assert _train(run, 12, "--break-lock") == 0  # ... until it is broken
    assert _records(run) == _records(runs["local"])


# ------------------------------------------------------ (e) export, init_from, plot, compare, eval

def test_export_to_gs_writes_config_json_last_and_refuses_a_non_empty_out(runs, tmp_path, monkeypatch, capfd):
    from ado_jax import hf_checkpoint as hfc

    out = f"{runs['gs'].rsplit('/', 2)[0]}/hf"
    uploads = []
    upload = storage.upload_file
    monkeypatch.setattr(storage, "upload_file", lambda local, path: (uploads.append(path), upload(local, path)))
    args = ["export", runs["gs"], "--format", "hf", "--out", out]
    assert cli.main(args) == 0
    assert uploads[-1] == f"{out}/config.json" and f"{out}/model.safetensors" in uploads
    assert sorted(_objects(out)) == ["config.json", "model.safetensors"]
    capfd.readouterr()
    assert cli.main(args) == 2
    assert f"error: {out} exists and is not empty; pass --force" in capfd.readouterr().err
    storage.write_text(f"{out}/stale.txt", "from an older export")
    assert cli.main(args + ["--force"]) == 0
    assert sorted(_objects(out)) == ["config.json", "model.safetensors"]
    assert not os.path.exists("gs:")  # nothing written to a local folder named after the URL
    # The same weights as the local run's export, read back from gs:// by read_hf_dir.
    hfc.export_run(runs["local"], str(tmp_path / "hf"))
    hf_gs, tensors_gs = hfc.read_hf_dir(out)
    hf_local, tensors_local = hfc.read_hf_dir(str(tmp_path / "hf"))
    assert hf_gs == hf_local and sorted(tensors_gs) == sorted(tensors_local)
    for name, a in tensors_local.items():
        np.testing.assert_array_equal(tensors_gs[name], a, err_msg=name)


def test_init_from_gs_starts_a_run_from_the_exported_weights(runs, gcs_server, tmp_path, capfd):
    from ado_jax import hf_checkpoint as hfc

    hf = f"gs://{gcs_server.bucket()}/hf"
    hfc.export_run(runs["gs"], hf)
    capfd.readouterr()
    assert _train(tmp_path / "bad", 1, "--set", f"train.init_from={hf}", "--set", "model.d_model=32") == 2
    err = _lines(capfd.readouterr().err, EMULATOR_NOTE)
    assert len(err) == 1 and f"train.init_from={hf}" in err[0] and "model.d_model=32" in err[0], err
    assert _train(tmp_path / "missing", 1, "--set", f"train.init_from={hf}-absent") == 2
    assert f"train.init_from={hf}-absent: no such directory" in capfd.readouterr().err
    run = f"gs://{gcs_server.bucket()}/run"
    assert _train(run, 1, "--set", f"train.init_from={hf}", "--set", "train.eval_every=0") == 0
    assert "weights loaded from that Hugging Face checkpoint" in capfd.readouterr().out
    hfc.export_run(run, str(tmp_path / "back"), step=1)  # step 1's learning rate is 0 (warmup): unchanged
    _, want = hfc.read_hf_dir(hf)
    _, got = hfc.read_hf_dir(str(tmp_path / "back"))
    for name, a in want.items():
        np.testing.assert_array_equal(got[name], a, err_msg=name)


def test_plot_compare_and_eval_of_a_gs_run(runs, tmp_path, capfd):
    pytest.importorskip("matplotlib", reason="the plot extra's matplotlib is not installed")
    capfd.readouterr()
    assert cli.main(["plot", runs["gs"]]) == 0
    paths = capfd.readouterr().out.split()
    assert paths == [f"{runs['gs']}/plots/weights.png", f"{runs['gs']}/plots/domain_loss.png"]
    for path in paths:
        assert storage.filesystem(path)[0].cat_file(storage.filesystem(path)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(["plot", runs["gs"], "--out", str(tmp_path / "figs")]) == 0
    assert sorted(os.listdir(tmp_path / "figs")) == ["domain_loss.png", "weights.png"]
    capfd.readouterr()
    assert cli.main(["compare", runs["gs"], runs["local"], "--json"]) == 0
    rows = json.loads(capfd.readouterr().out)
    assert [r.pop("run") for r in rows] == [runs["gs"], runs["local"]]
    assert rows[0] == rows[1] and rows[0]["steps"] == 12
    assert cli.main(["eval", "--config", "tiny", "--run-dir", runs["gs"], "--batches", "2", *SMALL]) == 0
    out, err = capfd.readouterr()
    printed = json.loads(out.strip().splitlines()[-1])
    logged = [r for r in read_metrics(f"{runs['gs']}/metrics.jsonl") if "eval_loss" in r][-1]
    assert printed["step"] == logged["step"] == 12
    assert printed["eval_loss"] == pytest.approx(logged["eval_loss"], rel=1e-6)
    assert "Traceback" not in err


def test_tensorboard_sink_appends_event_files_to_gs(gcs_server):
    pytest.importorskip("tensorboardX", reason="the tensorboard extra (tensorboardX) is not installed")
    from tensorboardX.proto import event_pb2

    from ado_jax.config import load_config
    from ado_jax.metric_sinks import Tee, flatten

    run = f"gs://{gcs_server.bucket()}/run"
    from etils import epath

    log = Tee(MetricsLog(epath.Path(run), 0), load_config("tiny", ["log.tensorboard=true"]), run)
    records = [_record(s) for s in range(1, 7)]
    for i in range(0, 6, 2):
        log.write(records[i:i + 2])
    log.close()
    (name,) = _objects(f"{run}/tensorboard")
    data, pos, got = storage.filesystem(run)[0].cat_file(f"{run[len('gs://'):]}/tensorboard/{name}"), 0, {}
    while pos < len(data):  # TFRecord framing: length [8], its crc [4], the event, its crc [4]
        (n,) = struct.unpack("<Q", data[pos:pos + 8])
        event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
        pos += 12 + n + 4
        got.update({(event.step, v.tag): v.simple_value for v in event.summary.value})
    want = {(s, k): v for rec in records for s, sc in [flatten(rec)] for k, v in sc.items()}
    assert set(got) == set(want) and all(got[k] == pytest.approx(v, rel=1e-6) for k, v in want.items())
    assert not os.path.exists("gs:")


@pytest.mark.slow  # W&B's service process starts: ~8 s
def test_wandb_sink_keeps_its_run_id_in_a_gs_run_dir(gcs_server, tmp_path, monkeypatch):
    """W&B writes local files only: they go to ./wandb, the run id to the gs:// run dir (a resume
    on another machine continues the same W&B run)."""
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    from etils import epath

    from ado_jax.config import load_config
    from ado_jax.metric_sinks import Tee

    monkeypatch.chdir(tmp_path)
    run = f"gs://{gcs_server.bucket()}/run"
    cfg = load_config("tiny", ["log.wandb_project=ado-test", "log.wandb_mode=offline"])
    log = Tee(MetricsLog(epath.Path(run), 0), cfg, run)
    log.write([_record(1), _record(2)])
    log.close()
    run_id = storage.read_text(f"{run}/wandb_id")
    assert run_id and len(list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))) == 1
    assert sorted(os.listdir(tmp_path)) == ["wandb"]  # no local folder named after the URL


# --------------------------------------------------------------------------- (f) bucket errors

def test_missing_bucket_is_one_line_naming_it(gcs_server, tmp_path, capfd):
    bucket = f"gs://no-such-bucket-{uuid.uuid4().hex[:8]}"
    capfd.readouterr()
    assert _train(f"{bucket}/run", 2) == 2
    err = _lines(capfd.readouterr().err, EMULATOR_NOTE)
    assert err == [f"error: {bucket} does not exist (writing {bucket}/run/run.lock): create it "
                   f"(gcloud storage buckets create {bucket}) or fix the path"], err
    assert cli.main(["compare", f"{bucket}/run"]) == 2
    err = _lines(capfd.readouterr().err)
    assert len(err) == 1 and f"{bucket}/run/metrics.jsonl does not exist" in err[0], err
    assert cli.main(["plot", f"{bucket}/run"]) == 2
    assert len(_lines(capfd.readouterr().err)) == 1


def test_forbidden_bucket_is_one_line_naming_it(gcs_server, monkeypatch, capfd):
    from gcs_proxy import FaultyProxy

    bucket = gcs_server.bucket()
    with FaultyProxy(gcs_server.url) as proxy, monkeypatch.context() as env:
        proxy.forbid_bucket(bucket)
        env.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        capfd.readouterr()
        assert _train(f"gs://{bucket}/run", 2) == 2
    err = _lines(capfd.readouterr().err, EMULATOR_NOTE)
    assert len(err) == 1 and err[0].startswith(f"error: gs://{bucket}/run/run.lock: permission denied (HTTP 403) "
                                               f"by gs://{bucket}"), err
