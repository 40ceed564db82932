"""Two processes on localhost (jax.distributed, 4 fake CPU devices each) train like one process."""

import json
import os
import socket
import subprocess
import sys

import pytest

ARGS = ["train", "--config", "tiny", "--steps", "4", "--set", "train.progress=false",
        "--set", "data.max_bytes_per_domain=100000"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _records(run_dir):
    rows = [json.loads(ln) for ln in open(os.path.join(run_dir, "metrics.jsonl"))]
    return {r["step"]: r for r in rows if "loss" in r}


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    base = dict(os.environ, JAX_PLATFORMS="cpu")
    single = dict(base, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    subprocess.run([sys.executable, "-m", "ado_jax.cli", *ARGS, "--run-dir", str(tmp_path / "one")], env=single,
                   check=True, capture_output=True, timeout=600)
    port = _free_port()
    procs = []
    for pid in range(2):
        env = dict(base, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_NUM_PROCESSES="2",
                   JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_PROCESS_ID=str(pid))
        procs.append(subprocess.Popen([sys.executable, "-m", "ado_jax.cli", *ARGS, "--run-dir", str(tmp_path / "two")],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    one, two = _records(tmp_path / "one"), _records(tmp_path / "two")
    assert sorted(two) == [1, 2, 3, 4]  # only process 0 wrote metrics: no duplicate lines
    for step in one:
        assert two[step]["loss"] == pytest.approx(one[step]["loss"], rel=1e-5)
        assert two[step]["domain_count"] == one[step]["domain_count"]
    # Both processes took part in the checkpoint; it restores as one.
    assert (tmp_path / "two" / "checkpoints" / "4").is_dir()
