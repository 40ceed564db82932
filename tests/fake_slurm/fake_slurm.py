"""Fake Slurm commands for tests/test_slurm_scripts.py: `sbatch`, `srun`, `scontrol`, `scancel`.

Each executable beside this file calls ``main(its name)``. Every call appends
``[name, *argv]`` as one JSON line to $FAKE_SLURM_LOG.
- `sbatch`: prints "Submitted batch job $FAKE_SLURM_JOB_ID" (default 4242); exits 1 with a
  message when $FAKE_SBATCH_FAIL is set.
- `srun OPTIONS... COMMAND...`: options are `--name=value` words (or a bare flag) up to the
  first word without a leading `-`. Runs COMMAND as `--ntasks=N` local tasks (default 1), each
  with SLURM_PROCID / SLURM_NODEID = its index, SLURM_LOCALID=0, SLURM_NTASKS=N,
  SLURM_STEP_ID=0 and SLURM_STEP_NODELIST, like the tasks of a real step. Their pids go to
  $FAKE_SLURM_TASKS (one a line) for `scancel`, written once all tasks have started (the file of
  an earlier step is removed first, so a test that waits for it signals only this step's tasks).
  Exits with the first non-zero task exit code (128 + N for a task killed by signal N), else 0.
- `scancel --signal=SIG JOBID`: sends SIG to every task pid in $FAKE_SLURM_TASKS (real
  `scancel --signal` signals the tasks of the job's steps, not the batch shell).
- `scontrol ...`: records the call and exits with $FAKE_SCONTROL_RC (default 0).
"""

import json
import os
import signal
import subprocess
import sys


def _srun(argv: list[str]) -> int:
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 1
    opts = dict(a.split("=", 1) if "=" in a else (a, "") for a in argv[:i])
    command = argv[i:]
    ntasks = int(opts.get("--ntasks", "1"))
    tasks = os.environ.get("FAKE_SLURM_TASKS")
    if tasks and os.path.exists(tasks):
        os.unlink(tasks)  # an earlier step's pids: scancel must not signal those
    procs = []
    for rank in range(ntasks):
        env = dict(os.environ, SLURM_PROCID=str(rank), SLURM_NODEID=str(rank), SLURM_LOCALID="0",
                   SLURM_NTASKS=str(ntasks), SLURM_STEP_ID="0", SLURM_STEP_NUM_TASKS=str(ntasks),
                   SLURM_STEP_NODELIST=f"node[0-{ntasks - 1}]" if ntasks > 1 else "node0")
        procs.append(subprocess.Popen(command, env=env))
    if tasks:  # written whole, then renamed: scancel reads all of the pids or no file
        with open(f"{tasks}.tmp", "w") as f:
            f.write("".join(f"{p.pid}\n" for p in procs))
        os.replace(f"{tasks}.tmp", tasks)
    rcs = [p.wait() for p in procs]
    return next((128 - rc if rc < 0 else rc for rc in rcs if rc), 0)


def _scancel(argv: list[str]) -> int:
    sig = next((a.split("=", 1)[1] for a in argv if a.startswith("--signal=")), None)
    tasks = os.environ.get("FAKE_SLURM_TASKS")
    if sig and tasks and os.path.exists(tasks):
        signum = getattr(signal, sig if sig.startswith("SIG") else f"SIG{sig}")
        with open(tasks) as f:
            pids = f.read().split()
        for line in pids:
            try:
                os.kill(int(line), signum)
            except ProcessLookupError:
                pass
    return 0


def main(name: str) -> None:
    argv = sys.argv[1:]
    log = os.environ.get("FAKE_SLURM_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps([name, *argv]) + "\n")
    if name == "sbatch":
        if os.environ.get("FAKE_SBATCH_FAIL"):
            print("sbatch: error: Batch job submission failed: Invalid account or account/partition combination "
                  "specified", file=sys.stderr)
            sys.exit(1)
        print(f"Submitted batch job {os.environ.get('FAKE_SLURM_JOB_ID', '4242')}")
        sys.exit(0)
    if name == "srun":
        sys.exit(_srun(argv))
    if name == "scancel":
        sys.exit(_scancel(argv))
    sys.exit(int(os.environ.get("FAKE_SCONTROL_RC", "0")))
