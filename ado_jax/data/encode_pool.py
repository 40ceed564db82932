"""Runs a per-file encoder (``encode_worker.encode_file``) over input files in worker processes,
with a progress bar.

``run_files(encode_file, todo, out, settings, workers)``: with ``workers=1`` in this process;
otherwise a ``spawn`` pool (no fork of a process that may hold JAX's threads), each worker
taking whole files and running one ``tokenizers`` thread (``RAYON_NUM_THREADS=1`` unless set:
the workers already share the cores). The bar counts input bytes read (compressed bytes for
.gz / .zst), so its rate is MB/s of input and its ETA covers the files still to do. The first
failure (e.g. a malformed record under ``--errors strict``) stops the pool and is raised here;
finished files keep their parts.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

from tqdm import tqdm

_counter = None  # the shared byte counter, in a worker process


def _init_worker(counter) -> None:
    global _counter
    _counter = counter
    os.environ.setdefault("RAYON_NUM_THREADS", "1")  # workers share the cores: one tokenizer thread each


def _report(n: int) -> None:
    with _counter.get_lock():
        _counter.value += n


def _work(encode_file, args) -> dict:
    return encode_file(*args, report=_report)


def run_files(encode_file, todo: dict, out: Path, settings: dict, workers: int = 1,
              progress: bool = True) -> list[dict]:
    """Runs ``encode_file(input_id, path, out, settings, report=...)`` (a module-level function,
    so worker processes can import it) on every ``{input id: path}`` of ``todo``; returns the
    part summaries it returns."""
    if not todo:
        return []
    total = sum(p.stat().st_size for p in todo.values())
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
               desc=f"encode {len(todo)} files", dynamic_ncols=True, smoothing=0.1)
    tasks = [(i, str(p), str(out), settings) for i, p in todo.items()]
    try:
        if workers == 1:
            return [encode_file(*t, report=bar.update) for t in tasks]
        ctx = mp.get_context("spawn")
        counter = ctx.Value("q", 0)
        with ctx.Pool(min(workers, len(tasks)), initializer=_init_worker, initargs=(counter,)) as pool:
            pending = [pool.apply_async(_work, (encode_file, t)) for t in tasks]
            shown, results = 0, []
            while pending:
                time.sleep(0.2)
                bar.update(counter.value - shown)
                shown = counter.value
                for r in [r for r in pending if r.ready()]:
                    pending.remove(r)
                    results.append(r.get())  # raises the worker's error here; the pool is terminated on exit
            bar.update(counter.value - shown)
        return results
    finally:
        bar.close()
