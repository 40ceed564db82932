"""What one invocation of a run asks for, and how it stops early: flags, signals, exit codes.

* ``RunOptions``: the CLI flags beside the config (``--force``, ``--reset-mixer``,
  ``--allow-change``, ``--break-lock``).
* ``StopSignals``: SIGTERM and a first Ctrl-C set a flag the loop checks between steps; a second
  Ctrl-C raises ``KeyboardInterrupt`` at once.
* ``RunStopped``: raised by the loop after it saved a checkpoint and stopped early, with the exit
  code the CLI returns (130 Ctrl-C, 3 a stuck run).
"""

from __future__ import annotations

import dataclasses
import signal
import sys


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

    def restore(self) -> None:
        """Puts back the handlers that were installed before."""
        for s, handler in self.previous.items():
            signal.signal(s, handler)
