"""What one invocation of a run asks for, and how it stops early: flags, signals, exit codes.

* ``RunOptions``: the CLI flags beside the config (``--force``, ``--reset-mixer``,
  ``--allow-change``, ``--break-lock``).
* ``StopSignals``: SIGTERM and a first Ctrl-C set a flag the loop checks between steps (agreed
  by all processes of a multi-process run, at the log cadence); a second Ctrl-C raises
  ``KeyboardInterrupt`` at once.
* ``RunStopped``: raised by the loop after it saved a checkpoint and stopped early, with the exit
  code the CLI returns (130 Ctrl-C, 3 a stuck run).
"""

from __future__ import annotations

import dataclasses
import signal
import sys

import numpy as np


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """What a user may ask of one invocation (CLI flags), beside the run's config.

    Attributes:
      force: train even when the memory estimate exceeds what the devices have.
      reset_mixer: resume with a fresh mixer (its ``init``), accepting a changed ``mixer`` section.
      allow_change: resume with changed optimizer hyperparameters (``run_dir.OPTIMIZER``).
      break_lock: take over a ``gs://`` run directory's lock object left by a dead process.
    """

    force: bool = False
    reset_mixer: bool = False
    allow_change: bool = False
    break_lock: bool = False


class RunStopped(RuntimeError):
    """The run stopped before ``train.steps``: interrupted (exit 130) or stuck (exit 3)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class StopSignals:
    """SIGTERM and a first Ctrl-C ask the loop to stop *between* steps (the state is donated to
    the step, so it can only be saved between them); a second Ctrl-C aborts at once."""

    def __init__(self):
        self.received = None
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum, _frame):
        if self.received == "SIGINT" and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        if signum == signal.SIGINT:
            print("\nCtrl-C: saving a checkpoint after this step (Ctrl-C again to abort without saving)",
                  file=sys.stderr)

    def should_stop(self, step: int, every: int) -> bool:
        """Whether the loop stops before ``step + 1``, the same answer on every process.

        One process: as soon as a signal arrived. Several (a pod, a SLURM job): every ``every``
        steps (the log cadence, where the loop syncs with the devices anyway) the processes
        all-gather their flags, and one process's SIGTERM stops all of them after the same step.
        A process that left the loop alone would hang the others in their next step or save."""
        import jax

        if jax.process_count() == 1:
            return self.received is not None
        if step % every:
            return False
        from jax.experimental import multihost_utils

        codes = {None: 0, "SIGTERM": 1, "SIGINT": 2}
        code = int(np.max(multihost_utils.process_allgather(np.int32(codes[self.received]))))
        if code and self.received is None:
            self.received = {v: k for k, v in codes.items()}[code]  # another process's signal
        return code > 0

    def restore(self) -> None:
        """Puts back the handlers that were installed before."""
        for s, handler in self.previous.items():
            signal.signal(s, handler)
