"""Checkpoints of the whole TrainState with orbax: exact resume, onto any mesh.

Layout: ``RUN_DIR/checkpoints/<step>/{state, config, checksums.json}``. Orbax writes each
checkpoint into a temporary directory and renames it only once complete, so a save killed midway
is never listed as the latest. Orbax keeps no checksum of array bytes, so on local disks we add
``checksums.json`` (sha256 of every file) after a save and verify it before a restore: a
corrupted checkpoint is an error naming the file, never silently wrong weights. The state is
stored as a flat dict keyed by each array's pytree path, which keeps the files readable and makes
a structure mismatch an error naming the missing array.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re

import equinox as eqx
import jax
import orbax.checkpoint as ocp
from etils import epath

from ado_jax.run_dir import find_os_error


CHECKSUMS = "checksums.json"


def is_leaf_array(x) -> bool:
    """An array or an abstract array (``jax.ShapeDtypeStruct``)."""
    return eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


def _key(path) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", jax.tree_util.keystr(path)).strip("_") or "root"


def flatten_state(state) -> dict:
    """``{path key: array}`` for every array leaf of ``state``."""
    leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(state, eqx.is_array))[0]
    out = {}
    for path, leaf in leaves:
        key = _key(path)
        if key in out:
            raise ValueError(f"two state arrays map to the checkpoint key {key!r}")
        out[key] = leaf
    return out


class _DropThreadTracebacks(logging.Filter):
    """Drops orbax's log records of exceptions in its writer threads: the same exception reaches
    ``save``, which raises it once (a full disk used to print 170 tracebacks)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "raised an exception" not in record.getMessage()


class Checkpointer:
    """Saves and restores TrainStates under ``directory`` (local path or ``gs://``), keeping ``keep``."""

    def __init__(self, directory: str, keep: int = 3):
        # orbax wants absolute paths; "runs/x" is relative to where the command runs
        self.directory = epath.Path(directory if "://" in str(directory) else os.path.abspath(directory))
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self._verified: set[int] = set()  # a resume reads the config, then the arrays: hash the files once

    def latest_step(self) -> int | None:
        """The newest *complete* checkpoint's step, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of the complete checkpoints in the directory, oldest first."""
        return sorted(self.manager.all_steps())

    def _local_step_dir(self, step: int) -> str | None:
        path = str(self.directory / str(step))
        return None if "://" in path else path

    def _file_hashes(self, step_dir: str) -> dict:
        hashes = {}
        for root, _, files in os.walk(step_dir):
            for name in files:
                full = os.path.join(root, name)
                rel = os.path.relpath(full, step_dir)
                if rel.startswith(CHECKSUMS):
                    continue
                digest = hashlib.sha256()
                with open(full, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
                hashes[rel] = digest.hexdigest()
        return hashes

    def save(self, step: int, state, config: dict) -> None:
        """Writes ``state`` (every array) and ``config`` (JSON) as checkpoint ``step``; blocks until done.

        A file-system failure (a full disk, lost permissions) raises the ``OSError`` behind it,
        naming the path; the save's temporary folder is never listed, so the previous
        checkpoint stays the latest."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(flatten_state(state)), config=ocp.args.JsonSave(config))
        self._verified.discard(step)  # rewritten: its files are new
        quiet = _DropThreadTracebacks()
        logging.getLogger("absl").addFilter(quiet)
        try:
            self.manager.save(step, args=args, force=True)
            self.manager.wait_until_finished()
        except Exception as e:  # orbax/tensorstore wrap the OS error in their own exceptions
            os_error = find_os_error(e)
            if os_error is None:
                raise
            raise os_error from e
        finally:
            logging.getLogger("absl").removeFilter(quiet)
        step_dir = self._local_step_dir(step)
        if step_dir and jax.process_index() == 0:
            hashes = self._file_hashes(step_dir)  # before the .tmp file exists
            tmp = os.path.join(step_dir, CHECKSUMS + ".tmp")
            with open(tmp, "w") as f:
                json.dump(hashes, f)
            os.replace(tmp, os.path.join(step_dir, CHECKSUMS))

    def verify(self, step: int) -> None:
        """Raises ValueError naming the first file of checkpoint ``step`` whose bytes changed or vanished
        (once per step and Checkpointer: ``config`` then ``restore`` hash the files once)."""
        step_dir = self._local_step_dir(step)
        if step in self._verified or not step_dir or not os.path.exists(os.path.join(step_dir, CHECKSUMS)):
            return  # object stores (and checkpoints from before checksums) are trusted as is
        with open(os.path.join(step_dir, CHECKSUMS)) as f:
            want = json.load(f)
        have = self._file_hashes(step_dir)
        for rel, digest in sorted(want.items()):
            if have.get(rel) != digest:
                what = "is missing" if rel not in have else "does not match its checksum"
                raise ValueError(f"checkpoint {step_dir} is corrupted: {rel} {what}; move that folder out of "
                                 f"{self.directory} to resume from the previous checkpoint")
        self._verified.add(step)

    def config(self, step: int) -> dict:
        """The config dict stored with checkpoint ``step`` (read alone, without the arrays; the
        checkpoint's checksums are verified first)."""
        self.verify(step)
        try:
            return self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
        except Exception as e:
            raise ValueError(self._unreadable(step, e)) from e

    def _unreadable(self, step: int, e: Exception) -> str:
        return (f"checkpoint {self.directory / str(step)} cannot be restored: {str(e)[:300]}; if its files are "
                f"damaged, move that folder out of {self.directory} to resume from the previous checkpoint")

    def restore(self, abstract_state, shardings, step: int | None = None):
        """Restores checkpoint ``step`` (default: latest) into the structure of ``abstract_state``.

        Args:
          abstract_state: a TrainState (or its ``eval_shape``) giving structure, shapes and dtypes.
          shardings: a matching pytree of ``NamedSharding`` — the *current* mesh, which may have a
            different shape from the one that saved.
        Returns: ``(state, config_dict)``.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        arrays = eqx.filter(abstract_state, is_leaf_array)
        flat_abstract = jax.tree_util.tree_flatten_with_path(arrays)
        flat_shardings = jax.tree.leaves(shardings)
        if len(flat_shardings) != len(flat_abstract[0]):
            raise ValueError(f"{len(flat_shardings)} shardings given for {len(flat_abstract[0])} state arrays")
        target = {_key(p): jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
                  for (p, x), s in zip(flat_abstract[0], flat_shardings)}
        self.verify(step)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target), config=ocp.args.JsonRestore()))
        except Exception as e:  # orbax/tensorstore raise bare Exceptions for unreadable files
            raise ValueError(self._unreadable(step, e)) from e
        values = [restored.state[k] for k in target]
        state_arrays = jax.tree_util.tree_unflatten(flat_abstract[1], values)
        static = eqx.filter(abstract_state, is_leaf_array, inverse=True)
        return eqx.combine(state_arrays, static), restored.config

    def restore_arrays(self, target: dict, step: int) -> dict:
        """Some arrays of checkpoint ``step`` as host numpy arrays, without the rest of the state.

        ``target``: ``{checkpoint key: jax.ShapeDtypeStruct}``, keys as ``flatten_state`` names
        them (``model_embed``, ``model_blocks_wq``, ...). Returns ``{key: np.ndarray}``. Used by
        ``ado-jax export``, which needs the model but not the data, mixer or optimizer."""
        import numpy as np

        self.verify(step)
        restore_args = {k: ocp.RestoreArgs(restore_type=np.ndarray) for k in target}
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                target, restore_args=restore_args, partial_restore=True)))
        except Exception as e:
            raise ValueError(self._unreadable(step, e)) from e
        return dict(restored.state)

    def close(self) -> None:
        """Waits for pending saves and releases the checkpoint manager."""
        self.manager.close()


def open_run_checkpoint(run_dir: str, step: int | None = None) -> tuple[Checkpointer, int, dict]:
    """``(Checkpointer, step, stored config)`` of checkpoint ``step`` (default: the latest) of the
    run in ``run_dir``, for readers of a finished run (export, evaluation); the caller closes the
    Checkpointer. FileNotFoundError when ``run_dir`` has no checkpoints or no complete one at ``step``."""
    if not (epath.Path(run_dir) / "checkpoints").is_dir():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no checkpoints/ folder)")
    ckpt = Checkpointer(f"{run_dir}/checkpoints")
    try:
        steps = ckpt.all_steps()
        step = steps[-1] if step is None and steps else step
        if step not in steps:
            raise FileNotFoundError(f"{run_dir}: no complete checkpoint at step {step} (steps: {steps})")
        return ckpt, step, ckpt.config(step)
    except BaseException:
        ckpt.close()
        raise
