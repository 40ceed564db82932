"""What users do by hand: Ctrl-C, a second process, a changed config, a full disk, a stuck run.

Each test is one case of docs/reliability.md's second table, tried as a user would (the CLI on the
``tiny`` preset, in-process so it stays fast); the real-process variants are marked slow. The
machine's user may be root, which ignores file permissions, so permission and full-disk errors
are injected by raising the OSError the file system would.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from etils import epath

from ado_jax import cli, loop, run_dir
from ado_jax.optimizer import make_optimizer, lr_schedule
from ado_jax.checkpoint import Checkpointer
from ado_jax.config import load_config

SMALL = ["--set", "train.progress=false", "--set", "data.max_bytes_per_domain=100000", "--set", "train.eval_every=4"]
ENV = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")


def _train(run, steps, *extra) -> int:
    return cli.main(["train", "--config", "tiny", "--steps", str(steps), "--run-dir", str(run), *SMALL, *extra])


def _lines(run) -> list[dict]:
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]


def _steps(run) -> dict:
    return {r["step"]: {k: v for k, v in r.items() if k != "tokens_per_s"} for r in _lines(run) if "loss" in r}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished 8-step run with checkpoints at 4 and 8."""
    run = tmp_path_factory.mktemp("base") / "run"
    assert _train(run, 8, "--set", "train.ckpt_every=4") == 0
    return run


@pytest.fixture
def copy(base, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base, run)
    return run


# ------------------------------------------------------------------------ Ctrl-C and signals

@pytest.mark.slow  # 16-26 s in a quiet default run; CI runs it (pytest -m slow)
def test_ctrl_c_saves_a_checkpoint_between_steps_and_resumes_exactly(base, tmp_path, capsys):
    run = tmp_path / "run"

    def ctrl_c_after_3_steps():
        path, deadline = run / "metrics.jsonl", time.time() + 240
        while time.time() < deadline and (not path.exists() or len(path.read_text().splitlines()) < 3):
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c_after_3_steps, daemon=True).start()
    assert _train(run, 100000, "--set", "train.ckpt_every=100000") == 130
    err = capsys.readouterr().err
    stopped = Checkpointer(str(run / "checkpoints")).latest_step()
    assert "interrupted (Ctrl-C): saved checkpoint at step" in err and "Traceback" not in err
    assert 3 <= stopped < 100000 and stopped == max(_steps(run))
    assert _train(run, max(stopped + 1, 8)) == 0  # resumes from `stopped`, not from 0
    assert "resuming from step" in capsys.readouterr().out
    ref = _steps(base)
    assert all(_steps(run)[s] == ref[s] for s in range(1, 9) if "eval_loss" not in ref[s])


def test_second_ctrl_c_aborts_at_once():
    handlers = loop.StopSignals()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert handlers.received == "SIGINT"  # the first only asks the loop to stop
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
    finally:
        handlers.restore()


@pytest.mark.slow  # two real processes (JAX import + compile each)
def test_ctrl_c_on_a_real_process(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "ado_jax.cli", "train", "--config", "tiny", "--steps", "100000", "--run-dir",
           str(run), *SMALL, "--set", "train.ckpt_every=100000"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.1)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "saved checkpoint at step" in err
    stopped = Checkpointer(str(run / "checkpoints")).latest_step()
    assert stopped and stopped == max(_steps(run))


# ------------------------------------------------------------------------ one process per run dir

def test_a_second_process_refuses_naming_the_holder(copy, capsys):
    lock = run_dir.RunLock(epath.Path(copy))  # as if another `ado-jax train` held it
    try:
        assert _train(copy, 12) == 2
    finally:
        lock.release()
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: run dir {copy} is in use by pid {os.getpid()} on ") and "\n" not in err
    assert Checkpointer(str(copy / "checkpoints")).latest_step() == 8  # nothing touched


def test_object_store_lock_names_its_holder_and_can_be_broken(tmp_path):
    path = epath.Path(tmp_path)
    first = run_dir.RunLock(path, object_store=True)
    with pytest.raises(run_dir.RunDirBusy, match=r"locked by pid \d+ on .* since .*--break-lock"):
        run_dir.RunLock(path, object_store=True)
    second = run_dir.RunLock(path, break_lock=True, object_store=True)  # the holder is gone
    second.release()
    assert not (path / run_dir.LOCK).exists()
    del first


@pytest.mark.slow  # two real processes at once
def test_two_real_processes_on_one_run_dir(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "ado_jax.cli", "train", "--config", "tiny", "--steps", "40", "--run-dir", str(run),
           *SMALL, "--set", "train.ckpt_every=5"]
    first = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while first.poll() is None and not (run / run_dir.LOCK).exists():
        time.sleep(0.05)
    second = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert first.wait(timeout=300) == 0
    assert second.returncode == 2 and "is in use by pid" in second.stderr, second.stderr
    steps = [r["step"] for r in _lines(run) if "loss" in r]
    assert steps == list(range(1, 41))  # one writer: no duplicated or reordered lines


# ------------------------------------------------------------------------ a changed config

def test_changed_mixer_is_refused_listing_the_fields(copy, capsys):
    assert _train(copy, 12, "--mixer", "static", "--set", "mixer.weights=[0.7,0.1,0.1,0.1]") == 2
    err = capsys.readouterr().err.strip()
    assert "mixer.name: 'balanced' -> 'static'" in err and "--reset-mixer" in err
    assert "\n" not in err and "orbax" not in err.lower()
    assert json.loads((copy / "config.json").read_text())["mixer"]["name"] == "balanced"  # not rewritten


def test_reset_mixer_starts_the_new_mixer_and_records_it(copy, capsys):
    assert _train(copy, 12, "--mixer", "static", "--set", "mixer.weights=[0.7,0.1,0.1,0.1]", "--reset-mixer") == 0
    steps = _steps(copy)
    np.testing.assert_allclose(list(steps[9]["weights"].values()), [0.7, 0.1, 0.1, 0.1], rtol=1e-6)
    events = [r for r in _lines(copy) if "event" in r]
    assert len(events) == 1 and events[0]["step"] == 8 and events[0]["reset_mixer"] is True
    assert events[0]["changed"]["mixer.name"] == ["balanced", "static"]
    history = [json.loads(ln) for ln in (copy / run_dir.HISTORY).read_text().splitlines()]
    assert history[-1]["step"] == 8 and history[-1]["changed"]["mixer.name"] == ["balanced", "static"]
    assert json.loads((copy / "config.json").read_text())["mixer"]["name"] == "static"


def test_changed_model_is_refused_without_a_traceback(copy, capsys):
    assert _train(copy, 12, "--set", "model.d_model=128") == 2
    err = capsys.readouterr().err.strip()
    assert "model.d_model: 64 -> 128" in err and "new --run-dir" in err and "delete" not in err
    assert "\n" not in err


@pytest.mark.slow  # ~20-35 s on 2 loaded cores; CI runs it (pytest -m slow)
def test_loop_cadence_may_change_and_optimizer_needs_allow_change(copy, capsys):
    assert _train(copy, 10, "--set", "train.ckpt_every=2", "--set", "train.log_every=2") == 0
    assert "config changes accepted at step 8" in capsys.readouterr().out
    assert _train(copy, 12, "--set", "train.ckpt_every=2", "--set", "train.log_every=2",
                  "--set", "train.lr=1e-3") == 2
    assert "train.lr: 0.003 -> 0.001" in capsys.readouterr().err
    assert _train(copy, 12, "--set", "train.ckpt_every=2", "--set", "train.log_every=2",
                  "--set", "train.lr=1e-3", "--allow-change") == 0
    expected = float(lr_schedule(load_config("tiny", ["train.lr=1e-3"]).train)(10))
    assert _steps(copy)[11]["lr"] == pytest.approx(expected, rel=1e-6)


# ------------------------------------------------------------------------ metrics.jsonl

def test_partial_last_metrics_line_is_dropped_with_a_warning(copy, capsys):
    with open(copy / "metrics.jsonl", "a") as f:
        f.write('{"step": 9, "loss": 4.1, "weigh')  # a write cut short by a crash or a full disk
    assert _train(copy, 10) == 0
    err = capsys.readouterr().err
    assert f"{copy / 'metrics.jsonl'}:" in err and "dropping a partial last line" in err
    assert sorted(_steps(copy)) == list(range(1, 11))


def test_damaged_middle_line_names_file_and_line(copy, capsys):
    lines = (copy / "metrics.jsonl").read_text().splitlines()
    lines[2] = lines[2][:40]
    (copy / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert _train(copy, 10) == 2
    assert f"error: {copy / 'metrics.jsonl'}:3: not a metrics record" in capsys.readouterr().err


def test_metrics_are_moved_aside_when_the_checkpoints_are_gone(copy, capsys):
    before = (copy / "metrics.jsonl").read_text()
    shutil.rmtree(copy / "checkpoints")
    assert _train(copy, 2) == 0
    assert "moved the" in capsys.readouterr().err
    (aside,) = [p for p in copy.iterdir() if p.name.startswith("metrics.jsonl.")]
    assert aside.read_text() == before and sorted(_steps(copy)) == [1, 2]


# ------------------------------------------------------------------------ non-finite and stuck runs

def test_non_finite_update_is_skipped_even_when_the_gradient_is_finite():
    cfg = load_config("tiny").train
    cfg.lr = float("inf")  # bypasses validation, as a schedule overflow would
    opt = make_optimizer(cfg)
    params = {"w": np.ones(3, np.float32)}
    updates, state = opt.update({"w": np.full(3, 0.5, np.float32)}, opt.init(params), params)
    assert np.all(np.asarray(updates["w"]) == 0) and not bool(state.last_finite)
    assert int(state.notfinite_count) == 1 and int(state.total_notfinite) == 1


def test_a_stuck_run_stops_with_exit_3_and_a_checkpoint(tmp_path, monkeypatch, capsys):
    make = make_optimizer

    def diverging(t):  # every update overflows: what lr=1e6 did before validation refused it
        t = type(t)(**{**t.__dict__, "lr": float("inf")})
        return make(t)

    monkeypatch.setattr(loop, "make_optimizer", diverging)
    run = tmp_path / "run"
    assert _train(run, 50, "--set", "train.max_skipped_in_row=3") == 3
    err = capsys.readouterr().err
    assert "the last 3 steps were all skipped" in err and "max_skipped_in_row=3" in err
    assert Checkpointer(str(run / "checkpoints")).latest_step() == 3
    assert all(r["skipped"] == 1 for r in _steps(run).values())


# ------------------------------------------------------------------------ OS errors

def test_run_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert _train(tmp_path / "afile", 2) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'afile'}") and "\n" not in err


def test_config_that_is_a_directory_is_one_line(tmp_path, capsys):
    (tmp_path / "c.json").mkdir()
    assert cli.main(["train", "--config", str(tmp_path / "c.json"), "--run-dir", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'c.json'}: Is a directory; a directory was " \
                                              "given where a file is expected"


def test_unwritable_checkpoints_fail_before_training(copy, monkeypatch, capsys):
    real = epath.Path.write_text

    def denied(self, *a, **k):
        if self.name == ".write_probe":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(epath.Path, "write_text", denied)
    assert _train(copy, 12) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {copy / 'checkpoints' / '.write_probe'}: Permission denied; make it writable or "
                   "choose another --run-dir")
    assert max(_steps(copy)) == 8  # no step trained and lost


@pytest.mark.slow  # ~20-35 s on 2 loaded cores; CI runs it (pytest -m slow)
def test_full_disk_during_a_save_keeps_the_previous_checkpoint_and_resumes(copy, monkeypatch, capsys):
    real = Checkpointer.save

    def full(self, step, state, config):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.directory / str(step)))

    monkeypatch.setattr(Checkpointer, "save", full)
    assert _train(copy, 12, "--set", "train.ckpt_every=2") == 2
    err = capsys.readouterr().err
    assert "No space left on device; free space on that disk and rerun" in err and "Traceback" not in err
    assert Checkpointer(str(copy / "checkpoints")).latest_step() == 8
    monkeypatch.setattr(Checkpointer, "save", real)  # space freed
    assert _train(copy, 12) == 0 and sorted(_steps(copy)) == list(range(1, 13))


def test_orbax_wrapped_disk_errors_become_the_os_error(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    def tensorstore_like(*a, **k):  # what tensorstore raises for a full disk: not an OSError
        raise ValueError(f'Error writing local file "{tmp_path}/1/state/d/abc": No space left on device')

    ckpt = Checkpointer(str(tmp_path))
    monkeypatch.setattr(ocp.CheckpointManager, "save", tensorstore_like)
    with pytest.raises(OSError) as info:
        ckpt.save(1, {"w": np.ones(2)}, {})
    assert info.value.errno == errno.ENOSPC and info.value.filename == f"{tmp_path}/1/state/d/abc"
    assert run_dir.os_error_message(info.value).startswith(f"{tmp_path}/1/state/d/abc: No space left on device;")


@pytest.mark.slow  # ~20-35 s on 2 loaded cores; CI runs it (pytest -m slow)
def test_full_disk_during_a_metrics_write_resumes_after_space_is_freed(copy, monkeypatch, capsys):
    from ado_jax import run_log

    real = run_log.MetricsLog.write

    def full(self, records):
        with open(self.path, "a") as f:
            f.write(json.dumps(records[0])[:30])  # the disk filled up mid-line
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(run_log.MetricsLog, "write", full)
    assert _train(copy, 12) == 2
    assert "No space left on device" in capsys.readouterr().err
    monkeypatch.setattr(run_log.MetricsLog, "write", real)
    assert _train(copy, 12) == 0
    assert "dropping a partial last line" in capsys.readouterr().err
    assert sorted(_steps(copy)) == list(range(1, 13))


# ------------------------------------------------------------------------ memory

def test_a_model_too_big_for_this_host_is_refused_before_allocating(tmp_path, capsys, monkeypatch):
    def allocates(*args, **kwargs):
        raise AssertionError("the data or the train state was built before the memory check refused")

    # It used to allocate for 23 s before failing: the check now runs before the loader and the state.
    monkeypatch.setattr(loop.data_setup, "train_loader", allocates)
    monkeypatch.setattr(loop.train, "create_state", allocates)
    assert _train(tmp_path / "r", 2, "--set", "model.d_model=65536", "--set", "model.n_heads=64") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: this run needs about") and "host RAM available" in err and "--force" in err


def test_memory_estimate_counts_the_parameters_exactly():
    import equinox as eqx
    import jax

    from ado_jax import memory
    from ado_jax.models.llama import Llama

    cfg = load_config("tiny", ["model.tie_embeddings=false", "model.n_kv_heads=2"])
    model = Llama(cfg.model, jax.random.PRNGKey(0))
    assert memory.param_count(cfg) == sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_array)))
    e1, e8 = memory.estimate(cfg, (1, 1, 1)), memory.estimate(cfg, (1, 8, 1))
    assert e8["state"] == pytest.approx(e1["state"] / 8) and e8["activations"] == pytest.approx(e1["activations"] / 8)


# ------------------------------------------------------------------------ smaller ones

def test_nothing_to_do_says_so(copy, capsys):
    assert _train(copy, 8) == 0
    out = capsys.readouterr().out
    assert "already at step 8 (train.steps=8); nothing to train" in out
    assert json.loads(out.strip().splitlines()[-1])["step"] == 8


@pytest.mark.slow  # ~20-35 s on 2 loaded cores; CI runs it (pytest -m slow)
def test_start_up_line_and_final_summary(copy, capsys):
    assert _train(copy, 10) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith(f"{copy}: resuming from step 8 to step 10 | 0.12M parameters | 8 cpu device(s)")
    summary = json.loads(out[-1])
    assert summary["step"] == 10 and summary["steps_this_run"] == 2 and summary["tokens_per_s"] > 0
    assert set(summary["eval_loss"]) == {"python", "docs", "c_headers", "legal"}


def test_eval_with_zero_batches_is_refused(copy, capsys):
    assert cli.main(["eval", "--config", "tiny", "--run-dir", str(copy), "--batches", "0", *SMALL[2:4]]) == 2
    assert "--batches 0: must be at least 1" in capsys.readouterr().err


def test_plot_without_matplotlib_is_one_line(copy, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli.main(["plot", str(copy)]) == 2
    assert "pip install 'ado_jax[plot]'" in capsys.readouterr().err


def test_a_missing_corpus_dir_is_announced_before_building(tmp_path, monkeypatch, capsys):
    from ado_jax.data import corpus
    from ado_jax.data import setup as data_setup

    built = []
    monkeypatch.setattr(corpus, "build_corpus", lambda d: built.append(d) or d)
    data_setup.ensure_corpus(str(tmp_path / "corpsu"))  # a typo for "corpus"
    assert built == [str(tmp_path / "corpsu")]
    assert capsys.readouterr().out.startswith(f"data.corpus_dir={tmp_path / 'corpsu'} does not exist: building "
                                              "the built-in corpus at")


@pytest.mark.slow  # real processes on a real full disk: a 3 MiB tmpfs (needs root and mount; skips otherwise)
def test_a_real_full_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        cmd = [sys.executable, "-m", "ado_jax.cli", "train", "--config", "tiny", "--steps", "12", "--run-dir",
               str(mnt / "run"), *SMALL, "--set", "train.ckpt_every=2"]
        full = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
        assert full.returncode == 2, full.stderr[-2000:]
        last = full.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: {mnt / 'run' / 'checkpoints'}")
        assert "No space left on device; free space" in last
        saved = Checkpointer(str(mnt / "run" / "checkpoints")).latest_step()
        assert saved and saved < 12
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)  # space freed
        done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"resuming from step {saved}" in done.stdout and sorted(_steps(mnt / "run")) == list(range(1, 13))
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
