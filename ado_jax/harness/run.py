"""Harness tasks on a run's checkpoint: ``ado-jax eval --run-dir R --harness TASKS``.

``evaluate_run`` loads the checkpoint's model (no optimizer, data or mixer state) and the run's
tokenizer, runs lm-eval's tasks through ``JaxLM`` and appends one record to the run's
``metrics.jsonl`` (and its TensorBoard / W&B sinks, ``ado_jax.metric_sinks``)::

    {"step": 2000, "harness": {"piqa": {"acc": 0.61, "acc_stderr": 0.011, "acc_norm": 0.62, ...}, ...},
     "harness_samples": {"piqa": 1838, ...}}

so that ``ado-jax compare`` and ``ado-jax plot`` show it. ``evaluate_model`` makes the same
record from a model in memory (what a training loop would call; it writes nothing).
``ado-table1`` names the seven tasks of Table 1 of "Adaptive Data Optimization: Dynamic Sample
Selection with Scaling Laws" (arXiv:2410.11820), zero-shot, by their lm-eval names. Every process
computes; process 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import types

from etils import epath

from ado_jax import sharding, storage

SUITES = {"ado-table1": ("hellaswag", "winogrande", "piqa", "arc_easy", "sciq", "logiqa2", "lambada_openai")}
OFFLINE_HELP = ("pre-download the datasets where the network is reachable (run the same command there, or "
                "datasets.load_dataset(NAME)), copy ~/.cache/huggingface here and set HF_DATASETS_OFFLINE=1 "
                "HF_HUB_OFFLINE=1; or give the task a local dataset_path (dataset_path: json, "
                "dataset_kwargs.data_files) in a YAML under --harness-include-path")


def expand_tasks(spec) -> list[str]:
    """Task names from ``spec`` (a comma-separated string or a list): suite names (``SUITES``)
    become their tasks, duplicates go. ValueError when nothing is left."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for item in (s.strip() for s in items):
        for task in SUITES.get(item, (item,) if item else ()):
            if task not in out:
                out.append(task)
    if not out:
        raise ValueError(f"--harness {spec!r}: expected task names (comma-separated) or a suite {sorted(SUITES)}")
    return out


def task_manager(tasks: list[str], include_path: str | None = None):
    """An lm-eval ``TaskManager`` that knows ``tasks``: only ``include_path``'s YAMLs when they
    hold every task (indexing lm-eval's own thousands of YAMLs takes ~10 s), else both.
    ValueError naming the unknown tasks."""
    from lm_eval.tasks import TaskManager

    if include_path and not os.path.isdir(include_path):
        raise FileNotFoundError(f"--harness-include-path {include_path}: no such directory")
    manager = TaskManager(include_path=include_path, include_defaults=False) if include_path else None
    if manager is None or any(t not in manager.all_tasks for t in tasks):
        manager = TaskManager(include_path=include_path)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        where = f" nor in {include_path}" if include_path else " (--harness-include-path DIR adds your own YAMLs)"
        raise ValueError(f"unknown harness task(s) {unknown}: not lm-eval tasks{where}; suites: {sorted(SUITES)}")
    return manager


def _hub_failure(e: BaseException) -> str | None:
    """The first line of a dataset-download failure somewhere in ``e``'s chain, else None."""
    names = {"OfflineModeIsEnabled", "LocalEntryNotFoundError", "DatasetNotFoundError", "HfHubHTTPError"}
    while e is not None:
        text = str(e).split("\n")[0]
        if isinstance(e, ConnectionError) or type(e).__name__ in names or "on the Hub" in text:
            return text
        e = e.__cause__ or e.__context__
    return None


def run_tasks(lm, tasks: list[str], include_path: str | None = None, limit: int | None = None) -> dict:
    """lm-eval's ``simple_evaluate`` of ``tasks`` (zero-shot) with ``lm``; returns its result
    dict (``"results"``, ``"n-samples"``, ...). A dataset that cannot be downloaded raises one
    ValueError line saying what to do (``OFFLINE_HELP``)."""
    from lm_eval import simple_evaluate

    if limit is not None and limit < 1:
        raise ValueError(f"--limit {limit}: must be at least 1 document per task")
    manager = task_manager(tasks, include_path)
    # lm-eval bootstraps perplexity's stderr in a fork()ed Pool unless DISABLE_MULTIPROC is set: a fork
    # of this multithreaded JAX process can deadlock (Python warns of it), so it bootstraps in-process.
    os.environ.setdefault("DISABLE_MULTIPROC", "1")
    try:
        return simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit, bootstrap_iters=1000,
                               log_samples=False)
    except Exception as e:
        why = _hub_failure(e)
        if why is None:
            raise
        raise ValueError(f"harness tasks {tasks}: a dataset could not be fetched from the Hugging Face hub "
                         f"({why}): {OFFLINE_HELP}") from None


def results_record(step: int, out: dict) -> dict:
    """The ``metrics.jsonl`` record of ``run_tasks``' result ``out``: per task, its numeric metrics
    without lm-eval's ``,none`` filter suffix (another filter's name is kept: ``exact_match_flexible``)."""
    tasks = {}
    for task, metrics in out["results"].items():
        row = {}
        for key, value in metrics.items():
            name, _, filt = key.partition(",")
            if filt and isinstance(value, (int, float)) and math.isfinite(value):
                row[name if filt == "none" else f"{name}_{filt}"] = float(value)
        tasks[task] = row
    samples = {t: int(n.get("effective", n.get("original", 0))) if isinstance(n, dict) else int(n)
               for t, n in out.get("n-samples", {}).items()}
    return {"step": int(step), "harness": tasks, "harness_samples": samples}


def _tokenizer(stored: dict):
    """The run's tokenizer: bytes (256 ids, no EOS) for built-in data, else the corpus's."""
    from ado_jax.data.tokenizer import TOKENIZER_FILE, ByteTokenizer, load_tokenizer

    data = stored.get("data", {})
    if data.get("source", "builtin") == "builtin":
        return ByteTokenizer(add_eos=False)
    corpus = data["corpus_dir"]
    if not storage.is_object_store(corpus):
        return load_tokenizer(corpus)
    with tempfile.TemporaryDirectory(prefix="ado-jax-tokenizer-") as tmp:  # a gs:// corpus: its two files
        spec = json.loads((epath.Path(corpus) / TOKENIZER_FILE).read_text())
        for name in {TOKENIZER_FILE, spec.get("file")} - {None}:
            with open(os.path.join(tmp, name), "wb") as f:
                f.write((epath.Path(corpus) / name).read_bytes())
        return load_tokenizer(tmp)


def load_run_model(run_dir: str, step: int | None = None, compute_dtype: str = "float32", mesh=None):
    """``(model, tokenizer, step, stored config)`` of checkpoint ``step`` (default: latest) of the
    run in ``run_dir``: the ``Llama`` in ``compute_dtype`` (no remat), placed on ``mesh`` with the
    training shardings when one is given, and the run's tokenizer."""
    import dataclasses

    import equinox as eqx
    import jax

    from ado_jax.checkpoint import _key, is_leaf_array, open_run_checkpoint
    from ado_jax.models.llama import Llama, ModelConfig

    if compute_dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"--harness-dtype {compute_dtype!r}: expected float32 | bfloat16 | float16")
    ckpt, step, stored = open_run_checkpoint(run_dir, step)
    try:
        names = {f.name for f in dataclasses.fields(ModelConfig)}
        cfg = ModelConfig(**{**{k: v for k, v in stored["model"].items() if k in names},
                             "compute_dtype": compute_dtype, "remat": "none"})
        arrays, static = eqx.partition(eqx.filter_eval_shape(Llama, cfg, jax.random.PRNGKey(0)), is_leaf_array)
        leaves, treedef = jax.tree_util.tree_flatten_with_path(arrays)
        host = ckpt.restore_arrays({"model_" + _key(p): x for p, x in leaves}, step)
    finally:
        ckpt.close()
    placements = jax.tree.leaves(sharding.tree_shardings(arrays, mesh)) if mesh is not None else [None] * len(leaves)
    placed = [jax.make_array_from_callback(x.shape, s, lambda i, a=host["model_" + _key(p)]: a[i])
              if s is not None else jax.numpy.asarray(host["model_" + _key(p)])
              for (p, x), s in zip(leaves, placements)]
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, placed), static), _tokenizer(stored), step, stored


class _Appender:
    """Appends whole JSON lines to ``metrics.jsonl`` (as ``run_log.MetricsLog.write`` does),
    without a training run's resume bookkeeping; ``enabled`` on process 0 only."""

    def __init__(self, run_dir: str):
        import jax

        self.path, self.enabled = epath.Path(run_dir) / "metrics.jsonl", jax.process_index() == 0

    def write(self, records: list[dict]) -> None:
        """Appends ``records``; refuses a file whose last line was cut short (a crash)."""
        if not self.enabled:
            return
        exists = self.path.exists()
        text = self.path.read_text() if exists else ""
        if text and not text.endswith("\n"):
            raise ValueError(f"{self.path} ends in a partial line (a write cut short); resume the run once "
                             "(it drops that line) or delete the line, then evaluate again")
        storage.append_text(self.path, "".join(json.dumps(r) + "\n" for r in records), exists=exists)


def evaluate_model(model, tokenizer, tasks, step: int, include_path: str | None = None, limit: int | None = None,
                   batch_size: int = 32, mesh=None) -> dict:
    """The ``metrics.jsonl`` record of harness ``tasks`` (names or suites) on ``model`` (a
    ``Llama``, placed on ``mesh`` when given) with the run's ``tokenizer``, at ``step``. Writes
    nothing: a training loop passes the record to its own metrics log (process 0)."""
    from ado_jax.harness.lm import MISSING, JaxLM

    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise ValueError(MISSING) from None
    tasks = expand_tasks(tasks)
    out = run_tasks(JaxLM(model, tokenizer, batch_size=batch_size, mesh=mesh), tasks, include_path, limit)
    record = results_record(step, out)
    if limit is not None:
        record["harness_limit"] = limit
    return record


def evaluate_in_training(cfg, model, step: int, mesh=None) -> dict:
    """The harness record of ``cfg.train.harness_tasks`` on the training ``model`` at ``step``
    (``train.harness_every``): every process computes, the loop's log writes on process 0."""
    t = cfg.train
    return evaluate_model(model, _tokenizer(cfg.to_dict()), t.harness_tasks, step, t.harness_include_path or None,
                          t.harness_limit or None, mesh=mesh)


def check_installed() -> None:
    """ValueError with the install line when lm-eval is missing (before a run that needs it trains)."""
    from ado_jax.harness.lm import MISSING

    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise ValueError(f"train.harness_every: {MISSING}") from None


def evaluate_run(run_dir: str, tasks, include_path: str | None = None, limit: int | None = None,
                 step: int | None = None, batch_size: int = 32, compute_dtype: str = "float32",
                 mesh_cfg=None) -> dict:
    """Runs harness ``tasks`` (names or suites, ``expand_tasks``) on checkpoint ``step`` (default:
    latest) of ``run_dir`` with batches split over a mesh of every device (``mesh_cfg``: a
    ``MeshConfig``; default data-parallel), appends the record to ``metrics.jsonl`` and the run's
    metric sinks, and returns it."""
    from ado_jax.config import MeshConfig
    from ado_jax.harness.lm import MISSING
    from ado_jax.metric_sinks import LogConfig, Tee

    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise ValueError(MISSING) from None
    expand_tasks(tasks)  # a bad --harness fails before the checkpoint is read
    mesh = sharding.make_mesh(mesh_cfg or MeshConfig())
    model, tokenizer, step, stored = load_run_model(run_dir, step, compute_dtype, mesh)
    record = evaluate_model(model, tokenizer, tasks, step, include_path, limit, batch_size, mesh)
    log_cfg = types.SimpleNamespace(log=LogConfig(**stored.get("log", {})), to_dict=lambda: stored)
    sinks = Tee(_Appender(run_dir), log_cfg, run_dir)
    try:
        sinks.write([record])
    finally:
        sinks.close()
    return record
