"""Metrics beyond ``metrics.jsonl``: TensorBoard event files and Weights & Biases.

``LogConfig`` (the run config's ``log`` section) switches them on; ``Tee(metrics_log, cfg,
run_dir)`` wraps the loop's ``MetricsLog`` so every record written to ``metrics.jsonl`` also
reaches each sink, as flat scalars (``flatten``)::

    {"step": 10, "loss": 2.1, "weights": {"code": 0.4, ...}, "A": {"code": {"legal": 0.1, ...}}}
    -> loss = 2.1, weights/code = 0.4, A/code/legal = 0.1        (at step 10)

* TensorBoard (``log.tensorboard=true``, extra ``tensorboard`` = ``tensorboardX``, no TensorFlow):
  event files in ``RUN_DIR/tensorboard``; ``tensorboard --logdir RUN_DIR/tensorboard``. For a
  ``gs://`` run directory they are written to a local temporary folder and each flush appends the
  new bytes to the objects (``ado_jax.storage.append_bytes``: O(new bytes), no rewrite).
* W&B (``log.wandb_project=NAME``, extra ``wandb``): ``log.wandb_mode=offline`` (the default)
  needs no network and writes ``RUN_DIR/wandb/offline-run-*`` (``wandb sync`` uploads it later);
  ``online`` logs live. The run id is kept in ``RUN_DIR/wandb_id`` so a resumed run continues
  the same W&B run (steps it already logged are not logged twice by W&B). W&B writes only to
  local disk: for a ``gs://`` run directory its files go to ``./wandb`` in the working directory
  (W&B's default), while ``wandb_id`` stays in the run directory.

Only process 0 writes (the wrapped log's ``enabled``); a missing extra fails at start-up with
the ``pip install`` line to run.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass

from etils import epath

from ado_jax import storage
from ado_jax.options import option as _f

WANDB_MODES = ("offline", "online", "disabled")


@dataclass
class LogConfig:
    """Metric sinks besides metrics.jsonl: TensorBoard and Weights & Biases (optional extras)."""

    tensorboard: bool = _f(False, "also write TensorBoard event files to RUN_DIR/tensorboard "
                                  "(pip install 'ado-jax[tensorboard]')")
    wandb_project: str = _f("", "also log to this Weights & Biases project (pip install 'ado-jax[wandb]'); "
                                "empty: off")
    wandb_mode: str = _f("offline", "W&B mode: offline (no network; RUN_DIR/wandb, `wandb sync` later) | online "
                                    "| disabled")
    wandb_name: str = _f("", "W&B run name (empty: the run directory's name)")


def flatten(record: dict) -> tuple[int, dict[str, float]]:
    """``(step, {tag: value})`` of a metrics record: ``[D]`` dicts become ``key/domain``, ``[D, D]``
    ones ``key/row/col``; non-numeric values are left out."""
    out = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}/{k}", v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[prefix] = float(value)

    for key, value in record.items():
        if key != "step":
            walk(key, value)
    return int(record["step"]), out


class TensorBoardSink:
    """Scalars to TensorBoard event files in ``log_dir`` (tensorboardX); an object-store
    ``log_dir`` (``gs://``) gets the event files of a local temporary folder, appended at each
    flush."""

    def __init__(self, log_dir):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as e:
            raise ImportError("log.tensorboard=true needs tensorboardX: pip install 'ado-jax[tensorboard]'") from e
        self.remote = str(log_dir) if storage.is_object_store(log_dir) else None
        self.local = tempfile.mkdtemp(prefix="ado-jax-tensorboard-") if self.remote else str(log_dir)
        self.sent: dict[str, int] = {}  # local event file -> bytes already appended to its object
        self.writer = SummaryWriter(logdir=self.local)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        """Adds every ``scalars`` entry at ``step``."""
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        """Writes pending events to disk (and their new bytes to the object store)."""
        self.writer.flush()
        self._mirror()

    def _mirror(self) -> None:
        if not self.remote:
            return
        for name in sorted(os.listdir(self.local)):
            path = os.path.join(self.local, name)
            done = self.sent.get(name, 0)
            if os.path.isfile(path) and os.path.getsize(path) > done:
                with open(path, "rb") as f:
                    f.seek(done)
                    new = f.read()
                storage.append_bytes(f"{self.remote}/{name}", new, exists=done > 0)
                self.sent[name] = done + len(new)

    def close(self) -> None:
        """Flushes and closes the event file (an object store's local copy is then deleted)."""
        self.writer.close()
        self._mirror()
        if self.remote:
            shutil.rmtree(self.local, ignore_errors=True)


class WandbSink:
    """Scalars to a W&B run (offline by default), resumed across restarts of the same run dir."""

    def __init__(self, cfg: LogConfig, run_dir: epath.Path, config: dict):
        if cfg.wandb_mode not in WANDB_MODES:
            raise ValueError(f"log.wandb_mode={cfg.wandb_mode!r}: expected {' | '.join(WANDB_MODES)}")
        try:
            import wandb
        except ImportError as e:
            raise ImportError("log.wandb_project needs wandb: pip install 'ado-jax[wandb]'") from e
        id_file = run_dir / "wandb_id"
        if not id_file.exists():
            storage.write_text(id_file, uuid.uuid4().hex[:16])
        local = None if storage.is_object_store(run_dir) else str(run_dir)  # W&B writes local files only
        self.run = wandb.init(project=cfg.wandb_project, name=cfg.wandb_name or run_dir.name, dir=local,
                              mode=cfg.wandb_mode, id=id_file.read_text().strip(), resume="allow", config=config)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        """Logs ``scalars`` at ``step`` (records of one step are merged into one W&B row)."""
        self.run.log(scalars, step=step)

    def flush(self) -> None:
        """Nothing to do: W&B writes in its own process."""

    def close(self) -> None:
        """Finishes the W&B run (offline: its run directory is complete)."""
        self.run.finish()


class Tee:
    """A ``MetricsLog`` that also feeds the sinks ``cfg.log`` asks for (attributes pass through)."""

    def __init__(self, metrics_log, cfg, run_dir):
        self.metrics_log, self.sinks = metrics_log, []
        log_cfg = getattr(cfg, "log", None) or LogConfig()
        if not metrics_log.enabled:
            return
        run_dir = epath.Path(run_dir)
        if log_cfg.tensorboard:
            self.sinks.append(TensorBoardSink(run_dir / "tensorboard"))
        if log_cfg.wandb_project:
            self.sinks.append(WandbSink(log_cfg, run_dir, cfg.to_dict()))

    def __getattr__(self, name):
        return getattr(self.metrics_log, name)

    def write(self, records: list[dict]) -> None:
        """Writes ``records`` to ``metrics.jsonl`` and every sink."""
        self.metrics_log.write(records)
        for rec in records:
            if "event" in rec:  # a resume or reset marker: no scalars
                continue
            step, scalars = flatten(rec)
            for sink in self.sinks:
                sink.write(step, scalars)
        for sink in self.sinks:
            sink.flush()

    def close(self) -> None:
        """Closes every sink (flushes the event files, finishes the W&B run)."""
        for sink in self.sinks:
            sink.close()
        self.sinks = []
