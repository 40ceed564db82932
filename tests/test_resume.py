"""Exact resume, restore onto another mesh, SIGTERM checkpoints, partial checkpoints ignored."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ado_jax import cli
from ado_jax.checkpoint import Checkpointer

SMALL = ["--set", "train.progress=false", "--set", "data.max_bytes_per_domain=100000"]


def _train(run_dir, steps, *extra):
    assert cli.main(["train", "--config", "tiny", "--steps", str(steps), "--run-dir", str(run_dir), *SMALL,
                     *extra]) == 0


def _records(run_dir):
    rows = [json.loads(ln) for ln in open(run_dir / "metrics.jsonl")]
    return {r["step"]: {k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows if "loss" in r}


@pytest.fixture(scope="module")
def full_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("full")
    _train(run, 16)
    return run


@pytest.fixture(scope="module")
def full_run(full_dir):
    return _records(full_dir)


def test_resumed_run_is_bit_identical(tmp_path, full_run):
    _train(tmp_path, 8)
    assert Checkpointer(str(tmp_path / "checkpoints")).latest_step() == 8
    _train(tmp_path, 16)
    resumed = _records(tmp_path)
    assert sorted(resumed) == list(range(1, 17))
    for step in range(9, 17):
        assert resumed[step] == full_run[step], f"step {step} differs after resume"


@pytest.mark.slow  # ~20-35 s on 2 loaded cores; CI runs it (pytest -m slow)
def test_restore_onto_a_different_mesh(tmp_path, full_run):
    _train(tmp_path, 8, "--set", "mesh.data=8")
    _train(tmp_path, 12, "--set", "mesh.data=1", "--set", "mesh.fsdp=4", "--set", "mesh.tensor=2")
    resumed = _records(tmp_path)
    for step in range(9, 13):  # same math, different reduction order: equal to float tolerance
        assert resumed[step]["loss"] == pytest.approx(full_run[step]["loss"], rel=1e-4)


def test_eval_command_reproduces_the_final_evaluation(full_dir, capsys):
    capsys.readouterr()
    assert cli.main(["eval", "--config", "tiny", "--run-dir", str(full_dir), "--batches", "2", *SMALL]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    logged = [json.loads(ln) for ln in open(full_dir / "metrics.jsonl") if '"eval_loss"' in ln][-1]
    assert printed["step"] == logged["step"] == 16
    assert printed["eval_loss"] == pytest.approx(logged["eval_loss"], rel=1e-6)


@pytest.mark.slow  # 16-26 s in a quiet default run; CI runs it (pytest -m slow)
def test_partial_checkpoint_is_never_latest(tmp_path, full_run):
    _train(tmp_path, 8)
    # A save killed midway leaves orbax's temporary directory behind, never a finalized step.
    (tmp_path / "checkpoints" / "12.orbax-checkpoint-tmp-1234567").mkdir()
    assert Checkpointer(str(tmp_path / "checkpoints")).latest_step() == 8
    _train(tmp_path, 10)
    assert _records(tmp_path)[10] == full_run[10]


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")
    cmd = [sys.executable, "-m", "ado_jax.cli", "train", "--config", "tiny", "--steps", "100000", "--run-dir",
           str(tmp_path), *SMALL, "--set", "train.ckpt_every=100000"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "SIGTERM: saved checkpoint" in out
    last_logged = max(_records(tmp_path))
    assert Checkpointer(str(tmp_path / "checkpoints")).latest_step() == last_logged >= 3


@pytest.mark.slow  # 16-26 s in a quiet default run; CI runs it (pytest -m slow)
def test_host_loader_resume_is_exact(tmp_path):
    """A corpus of token files read on the host: the loader's position is checkpointed too."""
    from ado_jax.data.encode import encode_dir

    rng = __import__("numpy").random.default_rng(0)
    for name, alphabet in {"digits": "0123456789 ", "vowels": "aeiou \n", "punct": ".,;:!? -"}.items():
        (tmp_path / "text" / name).mkdir(parents=True)
        for i in range(4):
            (tmp_path / "text" / name / f"{i}.txt").write_text("".join(rng.choice(list(alphabet), 3000)))
    encode_dir(tmp_path / "text", tmp_path / "corpus", "byte")
    extra = ["--set", "data.source=corpus", "--set", f"data.corpus_dir={tmp_path / 'corpus'}",
             "--set", "data.loader=host", "--set", "data.prefetch=2", "--set", "model.vocab_size=0"]
    _train(tmp_path / "full", 8, *extra)
    _train(tmp_path / "split", 4, *extra)
    _train(tmp_path / "split", 8, *extra)
    full, split = _records(tmp_path / "full"), _records(tmp_path / "split")
    for step in range(5, 9):
        assert split[step] == full[step], f"step {step} differs after resuming the host loader"
