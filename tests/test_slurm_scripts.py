"""slurm/train.sbatch and slurm/submit.sh against fake `sbatch`, `srun`, `scancel` and `scontrol`
(tests/fake_slurm/) that record every call.

The batch script runs as Slurm would run it (bash with SLURM_* set), its `srun` starts a stub
`ado-jax` (one local process per task), and the tests send it Slurm's signals: the time-limit
warning (SIGUSR1) and SIGTERM. The slow test runs the real `ado-jax train --config tiny`.
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SLURM = REPO / "slurm"
FAKE_DIR = REPO / "tests" / "fake_slurm"
# Every setting submit.sh reads, so the test environment can drop the developer's own values.
SETTINGS = re.search(r'SETTINGS="([^"]*)"', (SLURM / "submit.sh").read_text()).group(1).split()
JOB = "4242"

STUB_TRAINER = """#!/usr/bin/env bash
# Stub `ado-jax`: records its arguments and environment per task, saves a "checkpoint" on SIGTERM.
out=$STUB_DIR/task$SLURM_PROCID
printf '%s\\n' "$@" > "$out.args"
env | grep -E '^(JAX|SLURM)_' | sort > "$out.env"
if [[ -n ${STUB_RC:-} ]]; then echo "error: unknown preset 'tnyi'" >&2; exit "$STUB_RC"; fi
trap 'echo "SIGTERM: saved checkpoint at step 7"; exit "${STUB_TERM_RC:-0}"' TERM
touch "$out.started"
for ((i = 0; i < ${STUB_LOOPS:-0}; i++)); do sleep 0.05; done
echo '{"step": 10}'
"""


@pytest.fixture
def fx(tmp_path):
    """Environment of a batch job (fake Slurm and a stub ado-jax first on PATH); helpers."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "ado-jax"
    stub.write_text(STUB_TRAINER)
    stub.chmod(0o755)
    drop = set(SETTINGS) | {"ADO_SLURM_CONFIG", "JAX_LOCAL_DEVICE_IDS"}
    env = {k: v for k, v in os.environ.items()
           if k not in drop and not k.startswith(("SLURM_", "SBATCH_", "FAKE_", "STUB_"))}
    env.update(PATH=f"{FAKE_DIR}:{bin_dir}:{env['PATH']}", FAKE_SLURM_LOG=str(tmp_path / "slurm.log"),
               FAKE_SLURM_TASKS=str(tmp_path / "tasks"), STUB_DIR=str(tmp_path), TMPDIR=str(tmp_path),
               SLURM_JOB_ID=JOB, SLURM_JOB_NUM_NODES="1", PREEMPT_WAIT="0")

    class Fx:
        path = tmp_path
        run_dir = str(tmp_path / "run")
        base_env = env

        def job(self, *args, **extra_env):
            """Starts train.sbatch as Slurm starts a batch job; returns the Popen."""
            return subprocess.Popen(["bash", str(SLURM / "train.sbatch"), *args], env={**env, **extra_env},
                                    text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL)

        def run_job(self, *args, signal_after_start=None, **extra_env):
            """Runs one job to its end; with ``signal_after_start``, sends that signal to the batch
            shell once the trainer of task 0 runs. Returns (returncode, stdout, stderr)."""
            args = args or ("--config", "tiny", "--run-dir", self.run_dir, "--steps", "10")
            proc = self.job(*args, **extra_env)
            if signal_after_start is not None:
                self.wait_until_running(proc)
                proc.send_signal(signal_after_start)
            out, err = proc.communicate(timeout=60)
            return proc.returncode, out, err

        def wait_until_running(self, proc):
            """Waits (up to 60 s) until the trainer of task 0 runs and srun has listed its tasks
            for scancel; then removes task 0's marker for the next job."""
            started, tasks = tmp_path / "task0.started", tmp_path / "tasks"
            deadline = time.time() + 60
            while not (started.exists() and tasks.exists()) and proc.poll() is None and time.time() < deadline:
                time.sleep(0.02)
            assert started.exists() and tasks.exists(), proc.communicate(timeout=5)
            started.unlink()

        def calls(self):
            log = tmp_path / "slurm.log"
            calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
            log.unlink(missing_ok=True)
            return calls

        def trainer_args(self, task=0):
            return (tmp_path / f"task{task}.args").read_text().splitlines()

        def trainer_env(self, task=0):
            lines = (tmp_path / f"task{task}.env").read_text().splitlines()
            return dict(line.split("=", 1) for line in lines)

        def submit(self, *args, ok=True, **extra_env):
            e = {k: v for k, v in env.items() if not k.startswith("SLURM_") and k not in SETTINGS}
            res = subprocess.run([str(SLURM / "submit.sh"), *args], env={**e, **extra_env}, text=True,
                                 capture_output=True, stdin=subprocess.DEVNULL, timeout=60, cwd=tmp_path)
            if ok:
                assert res.returncode == 0, res.stderr
            return res

    return Fx()


def srun_call(nodes=1, *extra):
    return ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1", *extra]


def test_batch_directives_requeue_and_warn_before_the_time_limit():
    lines = [ln.split(None, 1)[1] for ln in (SLURM / "train.sbatch").read_text().splitlines()
             if ln.startswith("#SBATCH")]
    assert {"--requeue", "--signal=B:USR1@300", "--ntasks-per-node=1", "--open-mode=append"} <= set(lines)


def test_finished_run_is_not_requeued(fx):
    rc, out, err = fx.run_job(SLURM_CPUS_PER_TASK="16", GPUS_PER_NODE="4")
    assert rc == 0 and "trainers exited with code 0" in err and '{"step": 10}' in out
    train = ["ado-jax", "train", "--config", "tiny", "--run-dir", fx.run_dir, "--steps", "10"]
    assert fx.calls() == [srun_call(1, "--cpus-per-task=16") + train]
    assert fx.trainer_args() == train[1:]  # a first start takes no lock over
    env = fx.trainer_env()
    assert env["JAX_LOCAL_DEVICE_IDS"] == "0,1,2,3" and env["SLURM_NTASKS"] == "1"


def test_warning_saves_a_checkpoint_requeues_and_the_restart_resumes_with_break_lock(fx):
    rc, out, err = fx.run_job(signal_after_start=signal.SIGUSR1, STUB_LOOPS="400")
    assert rc == 0, err
    assert "SIGTERM: saved checkpoint at step 7" in out  # the trainer got SIGTERM and saved
    calls = fx.calls()
    assert [c[0] for c in calls] == ["srun", "scancel", "scontrol"]
    assert calls[1:] == [["scancel", "--signal=TERM", JOB], ["scontrol", "requeue", JOB]]
    assert "requeueing job 4242 (restart 1 of at most 20)" in err
    # Slurm starts the requeued job with SLURM_RESTART_COUNT=1: same arguments, plus --break-lock.
    rc, out, err = fx.run_job(SLURM_RESTART_COUNT="1")
    assert rc == 0 and "trainers exited with code 0" in err
    assert fx.trainer_args()[-3:] == ["--steps", "10", "--break-lock"]
    assert [c[0] for c in fx.calls()] == ["srun"]
    # --break-lock given by the user is not repeated.
    fx.run_job("--run-dir", fx.run_dir, "--break-lock", SLURM_RESTART_COUNT="2")
    assert fx.trainer_args().count("--break-lock") == 1


def test_config_error_is_not_requeued(fx):
    rc, _, err = fx.run_job(STUB_RC="2")
    assert rc == 2 and "unknown preset" in err and "trainers exited with code 2: not requeueing" in err
    assert [c[0] for c in fx.calls()] == ["srun"]
    # A trainer that fails while stopping after the warning (3: a stuck run) is not requeued either.
    rc, _, err = fx.run_job(signal_after_start=signal.SIGUSR1, STUB_LOOPS="400", STUB_TERM_RC="3")
    assert rc == 3 and "exited with code 3 after the warning: not requeueing" in err
    assert [c[0] for c in fx.calls()] == ["srun", "scancel"]


@pytest.mark.parametrize("restarts, cap", [("2", "2"), ("0", "0")])
def test_requeues_are_capped(fx, restarts, cap):
    rc, out, err = fx.run_job(signal_after_start=signal.SIGUSR1, STUB_LOOPS="400", SLURM_RESTART_COUNT=restarts,
                              MAX_REQUEUES=cap)
    assert rc == 1 and "SIGTERM: saved checkpoint" in out
    assert f"not requeueing: job 4242 has restarted {restarts} times (MAX_REQUEUES={cap})" in err
    assert [c[0] for c in fx.calls()] == ["srun", "scancel"]


def test_sigterm_is_forwarded_and_left_to_slurm(fx):
    """Preemption or scancel: the trainers save; Slurm, not the script, decides about a requeue."""
    rc, out, err = fx.run_job(signal_after_start=signal.SIGTERM, STUB_LOOPS="400")
    assert rc == 143 and "SIGTERM: saved checkpoint" in out and "waiting up to 0s for Slurm" in err
    assert [c[0] for c in fx.calls()] == ["srun", "scancel"]


def test_scancel_signal_term_stops_without_a_requeue(fx):
    """`scancel --signal=TERM JOB` (the documented way to stop) reaches only the trainers."""
    proc = fx.job("--config", "tiny", "--run-dir", fx.run_dir, STUB_LOOPS="400")
    fx.wait_until_running(proc)
    subprocess.run(["scancel", "--signal=TERM", JOB], env=fx.base_env, check=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "SIGTERM: saved checkpoint" in out and "exited with code 0" in err
    assert [c[0] for c in fx.calls()] == ["srun", "scancel"]


def test_multi_node_tasks_use_every_gpu_of_their_node(fx):
    rc, _, err = fx.run_job(SLURM_JOB_NUM_NODES="2", SLURM_GPUS_ON_NODE="2")
    assert rc == 0, err
    assert fx.calls()[0][:5] == srun_call(2)
    envs = [fx.trainer_env(t) for t in (0, 1)]
    assert [e["SLURM_PROCID"] for e in envs] == ["0", "1"] and {e["SLURM_NTASKS"] for e in envs} == {"2"}
    assert {e["JAX_LOCAL_DEVICE_IDS"] for e in envs} == {"0,1"}
    fx.run_job(SLURM_GPUS_ON_NODE="2", JAX_LOCAL_DEVICE_IDS="1")  # the user's own choice stays
    assert fx.trainer_env()["JAX_LOCAL_DEVICE_IDS"] == "1"
    rc, _, err = fx.run_job()
    assert rc == 0 and "warning: no GPUs allocated" in err and "JAX_LOCAL_DEVICE_IDS" not in fx.trainer_env()


def test_batch_script_input_errors_are_one_line(fx):
    cases = [
        (("--config", "tiny"), {}, "missing --run-dir"),
        ((), {"SLURM_JOB_ID": ""}, "SLURM_JOB_ID is not set: submit this script with sbatch"),
        ((), {"MAX_REQUEUES": "many"}, "invalid MAX_REQUEUES 'many': expected a whole number"),
        ((), {"GPUS_PER_NODE": "h100:8"}, "invalid GPUS_PER_NODE 'h100:8'"),
        ((), {"JOB_SETUP": "false"}, "JOB_SETUP failed (exit 1): false"),
        ((), {"PATH": f"{FAKE_DIR}:/usr/bin:/bin"}, "ado-jax not found on PATH"),
    ]
    for args, extra, message in cases:
        rc, _, err = fx.run_job(*args, **extra)
        assert rc == 1 and err.strip().splitlines()[-1].startswith("train.sbatch: error: ") and message in err, err
    assert fx.calls() == []
    rc, _, err = fx.run_job(JOB_SETUP="export JAX_FROM_SETUP=$SLURM_JOB_ID")  # setup runs first, in the job
    assert rc == 0 and fx.trainer_env()["JAX_FROM_SETUP"] == JOB and "setup: export" in err
    res = subprocess.run(["bash", str(SLURM / "train.sbatch"), "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("Usage: sbatch [sbatch options] slurm/train.sbatch")


def dry(stdout):
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


def test_submit_builds_the_sbatch_command(fx):
    config = fx.path / "config.env"
    config.write_text("PARTITION=gpu\nACCOUNT=proj\nNODES=2\nGPUS_PER_NODE=4\nCPUS_PER_TASK=32\n"
                      "TIME_LIMIT=12:00:00\nTRAIN_CONFIG=gpt2-124m\nRUNS_DIR=runs\nMAX_REQUEUES=5\n"
                      "JOB_SETUP='module load cuda; source ~/venv/bin/activate'\nSBATCH_FLAGS='--exclusive --mem=0'\n")
    run_dir = str(fx.path / "runs" / "ado-jax")
    expected = [
        ["mkdir", "-p", run_dir],
        ["env", "MAX_REQUEUES=5", "GPUS_PER_NODE=4", "JOB_SETUP=module load cuda; source ~/venv/bin/activate",
         "sbatch", "--job-name=ado-jax", "--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=4", "--cpus-per-task=32",
         "--time=12:00:00", "--partition=gpu", "--account=proj", "--requeue", "--signal=B:USR1@300",
         "--open-mode=append", f"--output={run_dir}/%x-%j.out", "--export=ALL", "--exclusive", "--mem=0",
         str(SLURM / "train.sbatch"), "--config", "gpt2-124m", "--run-dir", run_dir, "--steps", "100",
         "--set", "mixer.name=ado", "--mixer", "it's"],
    ]
    args = ["--steps", "100", "--set", "mixer.name=ado", "--", "--mixer", "it's"]
    res = fx.submit("--dry-run", *args, ADO_SLURM_CONFIG=str(config))
    assert dry(res.stdout) == expected and fx.calls() == []
    res = fx.submit(*args, ADO_SLURM_CONFIG=str(config))
    assert fx.calls() == [expected[1][4:]] and (fx.path / "runs" / "ado-jax").is_dir()
    assert "Submitted batch job 4242" in res.stdout
    # flag > environment > config file; gs:// run dirs log to ./slurm_logs; a JSON config becomes absolute.
    (fx.path / "my.json").write_text("{}")
    res = fx.submit("--dry-run", "--nodes=3", "--train-config", "my.json", "--run-dir", "gs://b/r", "--time", "1:00:00",
                    ADO_SLURM_CONFIG=str(config), NODES="9", GPUS_PER_NODE="", TIME_LIMIT="9:00:00")
    mkdir, sbatch = dry(res.stdout)
    assert mkdir == ["mkdir", "-p", str(fx.path / "slurm_logs")]
    assert "--nodes=3" in sbatch and "--time=1:00:00" in sbatch and not any("--gpus" in a for a in sbatch)
    assert sbatch[-4:] == ["--config", str(fx.path / "my.json"), "--run-dir", "gs://b/r"]
    assert "GPUS_PER_NODE=4" not in sbatch  # the empty environment value beats the file's


def test_submit_errors_are_one_line(fx):
    cases = [
        ([], {}, "missing setting TRAIN_CONFIG: set it in slurm/config.env"),
        (["--env-file", "nope.env"], {}, "settings file 'nope.env' not found"),
        (["--train-config", "tiny", "--nodes", "0"], {}, "invalid NODES '0': expected at least 1"),
        (["--train-config", "tiny", "--gpus-per-node", "a100:8"], {}, "invalid GPUS_PER_NODE 'a100:8'"),
        (["--train-config", "tiny", "--steps", "1e3"], {}, "invalid --steps '1e3'"),
        (["--train-config", "tiny", "--set", "train.lr"], {}, "invalid --set 'train.lr': expected KEY=VALUE"),
        (["--train-config", "missing.json"], {}, "config file 'missing.json' not found"),
        (["--bogus"], {}, "unknown option '--bogus'"),
        (["--train-config"], {}, "option --train-config needs a value"),
    ]
    for args, extra, message in cases:
        res = fx.submit(*args, ok=False, **extra)
        assert res.returncode == 1 and res.stderr.startswith("submit.sh: error: ") and message in res.stderr, res.stderr
    res = fx.submit("--train-config", "tiny", ok=False, FAKE_SBATCH_FAIL="1")
    assert res.returncode == 1 and "Invalid account" in res.stderr
    assert [c[0] for c in fx.calls()] == ["sbatch"]
    res = fx.submit("--help")
    assert res.stdout.startswith("Usage: slurm/submit.sh") and "--dry-run" in res.stdout


def test_config_example_is_complete(fx):
    """Every setting of submit.sh is described in slurm/config.env.example, which submits as it is."""
    text = (SLURM / "config.env.example").read_text()
    missing = [s for s in SETTINGS if s != "DRY_RUN" and not re.search(rf"^#? ?{s}=", text, re.M)]
    assert missing == []
    res = fx.submit("--dry-run", ADO_SLURM_CONFIG=str(SLURM / "config.env.example"), HOME=str(fx.path))
    assert "--partition=gpu" in dry(res.stdout)[1]


def test_scripts_are_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck); .ci/run installs it")
    res = subprocess.run(["shellcheck", "-x", "submit.sh", "train.sbatch"], cwd=SLURM, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


@pytest.mark.slow
def test_real_trainer_is_warned_requeued_and_resumes(fx):
    """`ado-jax train --config tiny` under the fake srun: Slurm's warning mid-run saves a checkpoint
    and requeues; the restart (SLURM_RESTART_COUNT=1, --break-lock) resumes from it and finishes."""
    venv_bin = Path(shutil.which("ado-jax") or "").parent
    if not (venv_bin / "ado-jax").exists():
        pytest.skip("ado-jax is not installed")
    env = {"PATH": f"{FAKE_DIR}:{venv_bin}:{os.environ['PATH']}", "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    args = ("--config", "tiny", "--run-dir", fx.run_dir, "--steps", "200", "--set", "train.eval_every=0",
            "--set", "train.ckpt_every=1000")
    proc = fx.job(*args, **env)
    metrics = Path(fx.run_dir) / "metrics.jsonl"
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    saved = re.search(r"SIGTERM: saved checkpoint at step (\d+)", out)
    assert saved and 0 < int(saved.group(1)) < 200, out
    assert [c[:3] for c in fx.calls()[1:]] == [["scancel", "--signal=TERM", JOB], ["scontrol", "requeue", JOB]]
    rc, out, err = fx.run_job(*args, SLURM_RESTART_COUNT="1", **env)
    assert rc == 0, err
    assert f"resuming from step {saved.group(1)} to step 200" in out and '"step": 200' in out
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(1, 201))  # each step once: the resume redid none and skipped none
