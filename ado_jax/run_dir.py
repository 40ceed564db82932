"""A run directory that survives what users do: one process at a time, and config changes on resume.

* ``RunLock``: an exclusive lock on ``RUN_DIR``. Local disks: ``fcntl.flock`` on
  ``RUN_DIR/run.lock`` (released by the kernel when the process dies, so it is never stale).
  ``gs://``: a ``run.lock`` object holding host, pid and start time, created only if absent
  (``ifGenerationMatch=0``: of two launches at the same instant exactly one wins) and deleted only
  by the process that created that generation. A killed process leaves it behind: delete it
  (``gsutil rm RUN_DIR/run.lock``) once you are sure that process is gone, or pass
  ``--break-lock``. A second process refuses with one line naming the holder.
* ``check_resume``: the stored config against the new one. Fields that only steer the loop (steps,
  cadences, the mesh, the metric sinks, ``train.init_from``, which only a new run reads) may change;
  optimizer hyperparameters may change with ``--allow-change``; the mixer with ``--reset-mixer`` (a
  fresh mixer from its ``init``); everything else (model shape, vocabulary, data, batch shape,
  seed) is refused with the list of differing fields.
* ``record_config``: ``config.json`` is the config in force; every change is appended, with the
  step and the differing fields, to ``config_history.jsonl``, never rewritten silently.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import socket
import sys

from etils import epath

from ado_jax import storage

LOCK = "run.lock"
HISTORY = "config_history.jsonl"
# Fields that steer only the loop: changing them on resume changes nothing already computed.
FREE = ("train.steps", "train.log_every", "train.eval_every", "train.eval_batches", "train.harness_every",
        "train.harness_tasks", "train.harness_include_path", "train.harness_limit", "train.ckpt_every",
        "train.keep_ckpts", "train.progress", "train.max_skipped_in_row", "train.init_from", "data.prefetch", "mesh.",
        "log.", "data.reader_threads", "data.readahead_mb", "data.cache_dir")  # reader settings: same batches
# The optimizer's hyperparameters: they change the run from here on, but not the state's shape.
OPTIMIZER = ("train.lr", "train.min_lr_ratio", "train.warmup_steps", "train.decay_steps", "train.weight_decay",
             "train.b1", "train.b2", "train.grad_clip")


class RunDirBusy(RuntimeError):
    """Another process holds the run directory's lock."""


class ConfigChanged(ValueError):
    """The new config differs from the stored one in fields a resumed run cannot change."""


def _holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _describe(info: str) -> str:
    try:
        h = json.loads(info)
        return f"pid {h['pid']} on {h['host']} since {h['started']}"
    except (ValueError, KeyError, TypeError):
        return "another process"


class RunLock:
    """Exclusive lock on ``run_dir`` for the life of the process (or until ``release``)."""

    def __init__(self, run_dir: epath.Path, break_lock: bool = False, object_store: bool | None = None):
        """``object_store``: use the lock object (default: for paths with a ``scheme://``)."""
        self.path = run_dir / LOCK
        self.remote = "://" in str(run_dir) if object_store is None else object_store
        self.fd = None
        self.generation = None
        if self.remote:
            self._acquire_object(break_lock)
        else:
            self._acquire_flock()

    def _acquire_flock(self) -> None:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = os.pread(fd, 4096, 0).decode(errors="replace")
            os.close(fd)
            raise RunDirBusy(f"run dir {self.path.parent} is in use by {_describe(info)}; wait for it to finish, "
                             "stop it, or choose another --run-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        self.fd = fd

    def _acquire_object(self, break_lock: bool) -> None:
        # Create-if-absent (ifGenerationMatch=0): of two launches at the same instant exactly one
        # creates the object; the other reads who holds it.
        holder = json.dumps(_holder())
        try:
            self.generation = storage.create_exclusive(self.path, holder)
            return
        except FileExistsError:
            info = storage.read_text(self.path) or ""
        if not break_lock:
            raise RunDirBusy(f"run dir {self.path.parent} is locked by {_describe(info)} ({self.path}); if that "
                             "process is gone, delete the lock object or rerun with --break-lock")
        stale = storage.generation(self.path)
        storage.delete_if_generation(self.path, stale)
        print(f"--break-lock: took over {self.path} from {_describe(info)}", file=sys.stderr)
        try:
            self.generation = storage.create_exclusive(self.path, holder)
        except FileExistsError:  # another process broke it first
            raise RunDirBusy(f"run dir {self.path.parent} was taken over by "
                             f"{_describe(storage.read_text(self.path) or '')} while breaking its lock") from None

    def release(self) -> None:
        """Releases the lock (local: closes the locked file; object store: deletes the lock object
        if it is still this process's generation, so a holder that took over is never unlocked)."""
        if self.remote:
            if not storage.delete_if_generation(self.path, self.generation) and storage.generation(self.path):
                print(f"warning: {self.path} was taken over by another process (--break-lock); left in place",
                      file=sys.stderr)
        elif self.fd is not None:
            os.close(self.fd)  # closing releases the flock
            self.fd = None


def flatten(tree: dict, prefix: str = "") -> dict:
    """``{"section.field": value}`` for a config dict (``Config.to_dict()``)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def diff(old: dict, new: dict) -> dict:
    """``{key: (old value, new value)}`` for every field that differs (``None`` where absent)."""
    a, b = flatten(old), flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def show_changes(changes: dict) -> str:
    """``"key: old -> new, ..."`` for ``{key: (old, new)}`` (``(unset)`` for an absent value)."""
    show = lambda v: "(unset)" if v is None else repr(v)
    return ", ".join(f"{k}: {show(old)} -> {show(new)}" for k, (old, new) in changes.items())


def check_resume(old: dict, new: dict, step: int, allow_change: bool = False, reset_mixer: bool = False) -> dict:
    """The accepted changes ``{key: (old, new)}`` from the config ``old`` stored at checkpoint
    ``step`` to ``new``; raises ``ConfigChanged`` listing the fields that cannot change.

    Free: ``FREE`` (loop cadence, steps, mesh). With ``allow_change``: ``OPTIMIZER``. With
    ``reset_mixer``: every ``mixer.*`` field (the caller starts a fresh mixer). Fields that ``old``
    lacks (added by a later release) are ignored."""
    stored = flatten(old)
    # A field the stored config lacks was added by a later release: the run used its default then.
    changes = {k: v for k, v in diff(old, new).items() if k in stored}
    refused = {}
    for key, change in changes.items():
        free = key.startswith(FREE) or (allow_change and key in OPTIMIZER) or (reset_mixer and key.startswith("mixer."))
        if not free:
            refused[key] = change
    if refused:
        hints = []
        if any(k.startswith("mixer.") for k in refused):
            hints.append("--reset-mixer starts a new mixer from its init at this step")
        if any(k in OPTIMIZER for k in refused):
            hints.append("--allow-change accepts new optimizer hyperparameters")
        if any(not k.startswith("mixer.") and k not in OPTIMIZER for k in refused):
            hints.append("the model, data, batch shape and seed cannot change in a resumed run: set them back, "
                         "or train in a new --run-dir (the checkpoints here are kept)")
        hint = "; ".join(hints)
        raise ConfigChanged(f"the run in this directory was saved at step {step} with a different config: "
                            f"{show_changes(refused)}. {hint}")
    return changes


def record_config(run_dir: epath.Path, config: dict, step: int, changes: dict | None) -> None:
    """Writes ``config.json`` (atomically: a renamed temporary file, or one upload to an object
    store) and, when ``changes`` is non-empty, appends the change (``{"step", "time", "changed":
    {key: [old, new]}}``) to ``config_history.jsonl``."""
    path = run_dir / "config.json"
    if changes:
        entry = {"step": step, "time": _holder()["started"], "changed": {k: list(v) for k, v in changes.items()}}
        storage.append_text(run_dir / HISTORY, json.dumps(entry) + "\n")
    elif path.exists() and json.loads(path.read_text()) == config:
        return
    storage.write_text(path, json.dumps(config, indent=1))


def os_error_message(e: OSError) -> str:
    """One line for an OS error met by a run: the path, what went wrong, and what to do."""
    path = e.filename or "a file"
    what = e.strerror or str(e)
    todo = {errno.ENOSPC: "free space on that disk and rerun: training resumes from the last complete checkpoint",
            errno.EDQUOT: "free space (disk quota) and rerun: training resumes from the last complete checkpoint",
            errno.EACCES: "make it writable or choose another --run-dir",
            errno.EPERM: "make it writable or choose another --run-dir",
            errno.EROFS: "the file system is read-only: choose another --run-dir",
            errno.ENOTDIR: "a file stands where a directory is expected: choose another path",
            errno.EEXIST: "a file stands where a directory is expected: choose another path",
            errno.EISDIR: "a directory was given where a file is expected",
            errno.ENOENT: "check the path"}.get(e.errno, "check the path and rerun")
    return f"{path}: {what}; {todo}"


def find_os_error(e: BaseException) -> OSError | None:
    """The OSError behind ``e`` (itself, its cause or context), if any: orbax and tensorstore wrap
    the file system's errors in their own exceptions."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        text = str(e)
        for code, marker in ((errno.ENOSPC, "No space left on device"), (errno.EACCES, "Permission denied"),
                             (errno.EROFS, "Read-only file system")):
            if marker in text:
                return OSError(code, os.strerror(code), _path_in(text))
        e = e.__cause__ or e.__context__
    return None


def _path_in(text: str) -> str | None:
    for token in text.replace('"', " ").replace("'", " ").split():
        if token.startswith("/") or token.startswith("gs://"):
            return token.rstrip(":,;)")
    return None
