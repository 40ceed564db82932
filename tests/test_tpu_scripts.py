"""tpu/*.sh against a fake `gcloud` (tests/fake_gcloud/gcloud) that records every call.

Dry runs and fake runs must produce exactly the expected gcloud commands; launch/status/logs/stop
run their remote shell code on a local "worker" directory with a fake `ado-jax`.
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TPU = REPO / "tpu"
FAKE_DIR = REPO / "tests" / "fake_gcloud"
SCRIPTS = ["create", "setup", "launch", "logs", "status", "stop", "teardown", "watch"]
# Every setting the scripts read, so the test environment can drop the developer's own values.
SETTINGS = re.search(r'SETTINGS="([^"]*)"', (TPU / "_common.sh").read_text()).group(1).split() + ["TPU_CONFIG"]
LOC = ["--project=proj", "--zone=us-central2-b"]


@pytest.fixture
def fx(tmp_path):
    """Environment with the fake gcloud first on PATH and a config file; helpers to run scripts."""
    config = tmp_path / "config.env"
    config.write_text("PROJECT=proj\nZONE=us-central2-b\nTPU_NAME=tpu\nACCELERATOR_TYPE=v4-8\n"
                      "BUCKET=gs://bkt\nTRAIN_CONFIG=tiny\nPOLL_INTERVAL=0.01\n")
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS and not k.startswith("FAKE_GCLOUD")}
    env.update(PATH=f"{FAKE_DIR}:{env['PATH']}", FAKE_GCLOUD_LOG=str(tmp_path / "gcloud.log"),
               TPU_CONFIG=str(config), TMPDIR=str(tmp_path))

    class Fx:
        path = tmp_path

        def run(self, script, *args, ok=True, **extra_env):
            res = subprocess.run([str(TPU / f"{script}.sh"), *args], env={**env, **extra_env}, text=True,
                                 capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
            if ok:
                assert res.returncode == 0, res.stderr
            return res

        def calls(self):
            log = tmp_path / "gcloud.log"
            calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
            log.unlink(missing_ok=True)
            return calls

        def lines(self, name, *lines):
            (tmp_path / name).write_text("\n".join(lines) + "\n")
            return str(tmp_path / name)

    return Fx()


def dry(stdout):
    """The gcloud commands of a --dry-run, as argv lists without the leading 'gcloud'."""
    cmds = [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]
    return [c[1:] for c in cmds if c[0] == "gcloud"]


def describe(name="tpu"):
    return ["compute", "tpus", "tpu-vm", "describe", name, *LOC, "--format=value(state)"]


def verbs(calls):
    return [" ".join(w for w in c[2:4] if not w.startswith("-")) + (f" {c[7]}" if c[3] == "ssh" else "")
            for c in calls]


@pytest.mark.parametrize("tpu_type, flags, create", [
    ("v4-8", [], ["tpu-vm", "create", "tpu", *LOC, "--accelerator-type=v4-8", "--version=tpu-ubuntu2204-base"]),
    ("v3-8", ["--preemptible", "--runtime-version", "tpu-vm-base"],
     ["tpu-vm", "create", "tpu", *LOC, "--accelerator-type=v3-8", "--version=tpu-vm-base", "--preemptible"]),
    ("v4-32", ["--spot", "--", "--network=net"],
     ["tpu-vm", "create", "tpu", *LOC, "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot",
      "--labels=a=b", "--tags=x", "--network=net"]),
    ("v4-32", ["--queued", "--spot"],
     ["queued-resources", "create", "tpu-qr", *LOC, "--node-id=tpu", "--accelerator-type=v4-32",
      "--runtime-version=tpu-ubuntu2204-base", "--spot"]),
    ("v3-8", ["--queued", "--reserved"],
     ["queued-resources", "create", "tpu-qr", *LOC, "--node-id=tpu", "--accelerator-type=v3-8",
      "--runtime-version=tpu-ubuntu2204-base", "--reserved"]),
])
def test_create_commands_dry_run_and_fake(fx, tpu_type, flags, create):
    expected = [["compute", "tpus", *create], describe()]
    extra = {"CREATE_FLAGS": "--labels=a=b --tags=x"} if "--network=net" in create else {}
    out = fx.run("create", "--dry-run", "--type", tpu_type, *flags, **extra).stdout
    assert dry(out) == expected and fx.calls() == []
    fx.run("create", "--type", tpu_type, *flags, **extra)
    assert fx.calls() == expected


def test_create_waits_for_queued_resource(fx):
    fx.run("create", "--queued", FAKE_GCLOUD_STATES=fx.lines("s", "MISSING", "CREATING", "READY"),
           FAKE_GCLOUD_QR_STATES=fx.lines("q", "WAITING_FOR_RESOURCES"))
    qr = ["compute", "tpus", "queued-resources", "describe", "tpu-qr", *LOC, "--format=value(state.state)"]
    assert fx.calls()[1:] == [describe(), qr, describe(), describe()]
    res = fx.run("create", "--queued", ok=False, FAKE_GCLOUD_STATES=fx.lines("s", "MISSING"),
                 FAKE_GCLOUD_QR_STATES=fx.lines("q", "FAILED"))
    assert res.returncode == 1 and "queued resource tpu-qr is FAILED" in res.stderr


@pytest.mark.parametrize("bad", ["v5e-8", "v4-12", "v3-16", "v4-8192", "v4", "tpu"])
def test_invalid_accelerator_type(fx, bad):
    res = fx.run("create", "--type", bad, ok=False)
    assert res.returncode == 1 and f"invalid accelerator type '{bad}'" in res.stderr
    assert fx.calls() == []


def test_settings_errors_and_precedence(fx):
    empty = fx.lines("empty.env", "")
    res = fx.run("create", ok=False, TPU_CONFIG=empty)
    assert res.returncode == 1 and "missing setting PROJECT" in res.stderr and "tpu/config.env" in res.stderr
    res = fx.run("status", "--env-file", str(fx.path / "nope.env"), ok=False)
    assert res.returncode == 1 and "nope.env' not found" in res.stderr
    res = fx.run("create", "--bogus", ok=False)
    assert res.returncode == 1 and "unknown option '--bogus'" in res.stderr
    res = fx.run("create", "--spot", "--preemptible", ok=False)
    assert res.returncode == 1 and "not both" in res.stderr
    res = fx.run("create", "--queued", "--preemptible", ok=False)
    assert res.returncode == 1 and "use SPOT=1" in res.stderr
    assert fx.calls() == []
    # flag > environment > config file
    out = fx.run("teardown", "--dry-run", "--name=flagname", ZONE="envzone", TPU_NAME="envname").stdout
    assert dry(out) == [["compute", "tpus", "tpu-vm", "delete", "flagname", "--project=proj", "--zone=envzone",
                         "--quiet"]]


def test_help_on_every_script(fx):
    for name in SCRIPTS:
        res = fx.run(name, "--help")
        assert res.stdout.startswith(f"Usage: tpu/{name}.sh") and "--dry-run" in res.stdout
    assert fx.calls() == []


def test_teardown_confirmation(fx):
    res = fx.run("teardown", ok=False)
    assert res.returncode == 1 and "refusing to delete TPU tpu without --yes" in res.stderr
    assert fx.calls() == []
    fx.run("teardown", "--yes")
    fx.run("teardown", "-y", "--queued")
    assert fx.calls() == [["compute", "tpus", "tpu-vm", "delete", "tpu", *LOC, "--quiet"],
                          ["compute", "tpus", "queued-resources", "delete", "tpu-qr", *LOC, "--force", "--quiet"]]


@pytest.fixture
def git_repo(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    repo = tmp_path / "repo"
    (repo / "ado_jax").mkdir(parents=True)
    (repo / "ado_jax" / "__init__.py").write_text("VERSION = 1\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "init"]):
        subprocess.run(git + args, check=True)
    return repo, subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def test_setup_archive_and_pip(fx, git_repo):
    repo, sha = git_repo
    tarball = fx.path / f"ado_jax-{sha[:12]}.tar.gz"
    out = fx.run("setup", "--repo", str(repo), "--type", "v4-32", "--dry-run").stdout
    fx.run("setup", "--repo", str(repo), "--type", "v4-32")
    calls = fx.calls()
    assert dry(out) == calls and [c[:4] for c in calls] == [["compute", "tpus", "tpu-vm", "scp"],
                                                            ["compute", "tpus", "tpu-vm", "ssh"]]
    assert calls[0][4:] == [str(tarball), f"tpu:ado_jax-{sha[:12]}.tar.gz", *LOC, "--worker=all"]
    assert calls[1][4:7] == ["tpu", *LOC] and calls[1][7] == "--worker=all"
    remote = calls[1][8].removeprefix("--command=")
    assert f"tar -xzf ado_jax-{sha[:12]}.tar.gz" in remote and f"echo {sha} > ado_jax_commit" in remote
    assert "-e './ado_jax[tpu]'" in remote
    with tarfile.open(tarball) as tar:  # the archive holds exactly the commit
        assert tar.extractfile("ado_jax/ado_jax/__init__.py").read() == b"VERSION = 1\n"
    fx.run("setup", "--repo", str(repo), "--method", "pip", "--repo-url", "https://example.com/ado_jax.git")
    (call,) = fx.calls()
    assert f"'ado-jax[tpu] @ git+https://example.com/ado_jax.git@{sha}'" in call[-1]
    res = fx.run("setup", "--repo", str(repo), "--commit", "nosuchref", ok=False)
    assert res.returncode == 1 and "cannot resolve commit 'nosuchref'" in res.stderr


FAKE_TRAINER = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$HOME/trainer_args"
trap 'echo "checkpoint saved"; exit 0' TERM
echo "step 1"
while :; do sleep 0.05; done  # until stop.sh's TERM (or the test's SIGKILL)
"""


def test_launch_status_logs_stop_on_local_worker(fx):
    home = fx.path / "worker"
    (home / ".local" / "bin").mkdir(parents=True)
    trainer = home / ".local" / "bin" / "ado-jax"
    trainer.write_text(FAKE_TRAINER)
    trainer.chmod(0o755)
    w = {"FAKE_GCLOUD_WORKER_HOME": str(home)}
    pid_file = home / "ado_jax_logs" / "train.pid"
    try:
        fx.run("launch", "--steps", "5", "--set", "mixer.name=ado", "--", "--mixer", "it's $HOME", **w)
        deadline = time.time() + 60
        while not (pid_file.exists() and (home / "trainer_args").exists()) and time.time() < deadline:
            time.sleep(0.05)
        assert pid_file.exists() and (home / "trainer_args").exists(), "the trainer did not start within 60 s"
        assert (home / "trainer_args").read_text().splitlines() == [
            "train", "--config", "tiny", "--run-dir", "gs://bkt/runs/tpu", "--steps", "5", "--set",
            "mixer.name=ado", "--mixer", "it's $HOME"]
        assert "training running" in fx.run("status", **w).stdout
        res = fx.run("launch", ok=False, **w)
        assert res.returncode != 0 and "already running" in res.stdout
        assert "step 1" in fx.run("logs", "-n", "5", **w).stdout
        assert "stopped (exit code 0)" in fx.run("stop", "--timeout", "10", **w).stdout
        assert "checkpoint saved" in (home / "ado_jax_logs" / "train.log").read_text()
        assert "stopped by tpu/stop.sh (exit code 0)" in fx.run("status", **w).stdout
        assert "not running" in fx.run("stop", **w).stdout
    finally:
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert verbs(fx.calls()) == ["tpu-vm ssh --worker=all", "tpu-vm describe", "tpu-vm ssh --worker=all",
                                 "tpu-vm ssh --worker=all", "tpu-vm ssh --worker=0", "tpu-vm ssh --worker=all",
                                 "tpu-vm describe", "tpu-vm ssh --worker=all", "tpu-vm ssh --worker=all"]


def test_launch_copies_json_config_and_logs_command(fx):
    cfg = fx.lines("my.json", "{}")
    out = fx.run("launch", "--train-config", cfg, "--run-dir", "gs://other/run", "--dry-run").stdout
    scp, ssh = dry(out)
    assert scp == ["compute", "tpus", "tpu-vm", "scp", cfg, "tpu:ado_jax_train_config.json", *LOC, "--worker=all"]
    assert "ado-jax train --config ado_jax_train_config.json --run-dir gs://other/run" in ssh[-1]
    out = fx.run("logs", "--worker", "2", "-n", "7", "-f", "--dry-run").stdout
    assert dry(out) == [["compute", "tpus", "tpu-vm", "ssh", "tpu", *LOC, "--worker=2",
                         "--command=tail -n 7 -F ado_jax_logs/train.log"]]
    out = fx.run("status", FAKE_GCLOUD_STATES=fx.lines("s", "PREEMPTED")).stdout
    assert out == "TPU tpu (v4-8, us-central2-b): PREEMPTED\n" and verbs(fx.calls()) == ["tpu-vm describe"]


RECOVER = ["tpu-vm create", "tpu-vm describe", "tpu-vm scp", "tpu-vm ssh --worker=all", "tpu-vm ssh --worker=all"]


def test_watch_recovers_then_finishes(fx, git_repo):
    repo, sha = git_repo
    res = fx.run("watch", "--type", "v4-32", "--", "--run-name", "r1",
                 FAKE_GCLOUD_STATES=fx.lines("s", "READY", "PREEMPTED", "READY"),
                 FAKE_GCLOUD_SSH_OUTPUTS=fx.lines("o", "RUNNING", "installed", "started", "EXITED 0"),
                 REPO_DIR=str(repo))
    calls = fx.calls()
    assert verbs(calls) == ["tpu-vm describe", "tpu-vm ssh --worker=0", "tpu-vm describe", "tpu-vm delete",
                            *RECOVER, "tpu-vm describe", "tpu-vm ssh --worker=0"]
    assert "--accelerator-type=v4-32" in calls[4] and sha in calls[7][-1]
    assert "--run-dir gs://bkt/runs/r1" in calls[8][-1] and "training finished" in res.stderr
    # The preempted trainer could not release its gs:// lock object: the relaunch takes it over.
    assert "--run-dir gs://bkt/runs/r1 --break-lock" in calls[8][-1]


def test_watch_gives_up_after_max_retries(fx, git_repo):
    repo, _ = git_repo
    res = fx.run("watch", "--max-retries", "2", ok=False, REPO_DIR=str(repo),
                 FAKE_GCLOUD_STATES=fx.lines("s", "PREEMPTED", "READY", "MISSING", "READY", "TERMINATED"),
                 FAKE_GCLOUD_SSH_OUTPUTS=fx.lines("o", "RUNNING"))
    assert res.returncode == 1 and "giving up: tpu is TERMINATED and 2 recoveries are used up" in res.stderr
    assert verbs(fx.calls()) == ["tpu-vm describe", "tpu-vm delete", *RECOVER, "tpu-vm describe", *RECOVER,
                                 "tpu-vm describe"]


def test_watch_queued_resource_and_crash(fx, git_repo):
    repo, _ = git_repo
    res = fx.run("watch", "--queued", REPO_DIR=str(repo),
                 FAKE_GCLOUD_STATES=fx.lines("s", "MISSING", "MISSING", "READY"),
                 FAKE_GCLOUD_QR_STATES=fx.lines("q", "SUSPENDED", "PROVISIONING"),
                 FAKE_GCLOUD_SSH_OUTPUTS=fx.lines("o", "installed", "started", "EXITED 0"))
    assert verbs(fx.calls()) == ["tpu-vm describe", "queued-resources describe", "queued-resources delete",
                                 "queued-resources create", "tpu-vm describe", "queued-resources describe",
                                 "tpu-vm describe", *RECOVER[2:], "tpu-vm describe", "tpu-vm ssh --worker=0"]
    assert res.returncode == 0
    res = fx.run("watch", ok=False, REPO_DIR=str(repo), FAKE_GCLOUD_SSH_OUTPUTS=fx.lines("o", "EXITED 3"))
    assert res.returncode == 1 and "exited with code 3" in res.stderr
    assert verbs(fx.calls()) == ["tpu-vm describe", "tpu-vm ssh --worker=0"]
    res = fx.run("watch", REPO_DIR=str(repo), FAKE_GCLOUD_STATES=fx.lines("s", "ERROR", "READY"),
                 FAKE_GCLOUD_SSH_OUTPUTS=fx.lines("o", "STOPPED"))
    assert "not restarting" in res.stderr and verbs(fx.calls()) == ["tpu-vm describe"] * 2 + ["tpu-vm ssh --worker=0"]


def test_watch_dry_run_prints_poll_and_recovery(fx, git_repo):
    repo, _ = git_repo
    out = fx.run("watch", "--dry-run", "--spot", REPO_DIR=str(repo)).stdout
    assert [" ".join(c[2:4]) for c in dry(out)] == ["tpu-vm describe", "tpu-vm ssh", "tpu-vm delete", "tpu-vm create",
                                                    "tpu-vm describe", "tpu-vm scp", "tpu-vm ssh", "tpu-vm ssh"]
    assert "--spot" in dry(out)[3] and fx.calls() == []


def test_scripts_are_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck); .ci/run installs it")
    res = subprocess.run(["shellcheck", "-x", *[f"{n}.sh" for n in SCRIPTS], "_common.sh"], cwd=TPU,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


@pytest.mark.slow
def test_real_gcloud_accepts_every_generated_command(fx, git_repo, tmp_path):
    """Replays each generated command through the real gcloud, which must get past argument parsing.

    Safe: an empty gcloud config (no account), GCE metadata credentials off, and the TPU API pointed
    at a closed local port, so nothing reaches Google Cloud even on a machine with credentials.
    """
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        pytest.skip("the real gcloud CLI is not installed")
    repo, _ = git_repo
    runs = [("create", "--type", "v4-32", "--spot"), ("create", "--type", "v3-8", "--preemptible"),
            ("create", "--queued", "--spot", "--type", "v4-32"), ("create", "--queued", "--reserved"),
            ("setup", "--repo", str(repo)), ("launch",), ("logs", "-f"), ("status", "--queued"), ("stop",),
            ("teardown",), ("teardown", "--queued")]
    commands = []
    for args in runs:
        for cmd in dry(fx.run(args[0], "--dry-run", *args[1:]).stdout):
            if cmd not in commands:
                commands.append(cmd)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDSDK_", "GOOGLE_"))}
    env.update(CLOUDSDK_CONFIG=str(tmp_path / "gcloud_config"), CLOUDSDK_CORE_DISABLE_PROMPTS="1",
               CLOUDSDK_CORE_CHECK_GCE_METADATA="false", CLOUDSDK_API_ENDPOINT_OVERRIDES_TPU="http://127.0.0.1:9/")
    assert len(commands) >= 12
    for cmd in commands:
        res = subprocess.run([gcloud, *cmd], env=env, capture_output=True, text=True, timeout=120)
        out = res.stdout + res.stderr
        assert res.returncode != 0 and f"(gcloud.{'.'.join(cmd[:4])})" in out, (cmd, out)
        assert not any(s in out for s in ("unrecognized arguments", "argument --", "Invalid choice")), (cmd, out)
