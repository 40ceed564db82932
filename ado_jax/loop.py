"""The training loop: data, sharded state, resume, metrics, eval, checkpoints, SIGTERM.

``run(cfg, run_dir)`` trains to ``cfg.train.steps``, resuming from ``run_dir``'s latest complete
checkpoint when there is one. Only process 0 writes metrics and shows the progress bar.
"""

from __future__ import annotations

import json
import signal
import time

import equinox as eqx
import jax
import numpy as np
from etils import epath

from ado_jax import checkpoint, metric_sinks, sharding, train
from ado_jax.config import Config, validate
from ado_jax.data import setup as data_setup
from ado_jax.eval_metrics import aggregate


class MetricsLog:
    """``metrics.jsonl`` in the run dir: one JSON object per step (process 0 only)."""

    def __init__(self, run_dir: epath.Path, resume_step: int):
        self.path = run_dir / "metrics.jsonl"
        self.enabled = jax.process_index() == 0
        self.lines: list[str] = []
        # The last written value of every [D, D] metric (``{row: {col: v}}``) as an array, so a
        # resumed run writes a matrix exactly when the uninterrupted run would have.
        self.last_matrices: dict = {}
        if self.enabled and self.path.exists():
            # Drop lines past the checkpoint we resume from: those steps are about to be redone.
            for ln in self.path.read_text().splitlines():
                rec = json.loads(ln) if ln else None
                if rec is None or rec["step"] > resume_step:
                    continue
                self.lines.append(ln + "\n")
                self.last_matrices.update(
                    {k: np.array([list(row.values()) for row in v.values()], np.float32) for k, v in rec.items()
                     if isinstance(v, dict) and v and isinstance(next(iter(v.values())), dict)})
            self._write_all()

    def _write_all(self) -> None:
        tmp = self.path.parent / (self.path.name + ".tmp")
        tmp.write_text("".join(self.lines))
        tmp.replace(self.path)

    def write(self, records: list[dict]) -> None:
        """Appends ``records`` as JSON lines (rewrites the file on gs://; no-op off process 0)."""
        if not self.enabled or not records:
            return
        new = [json.dumps(r) + "\n" for r in records]
        self.lines += new
        if str(self.path).startswith("gs://"):
            self._write_all()  # object stores cannot append
        else:
            with open(self.path, "a") as f:
                f.writelines(new)


def _to_records(pending: list[tuple[int, dict]], names: tuple, last_2d: dict) -> list[dict]:
    """Host records: [D] metrics become ``{domain: value}``; [D, D] ones ``{row: {col: value}}``,
    written only when they differ from the last written (``last_2d``, updated here): a matrix
    that changes once a round would otherwise fill the log with copies."""
    out = []
    for step, metrics in jax.device_get(pending):
        rec = {"step": step}
        for k, v in metrics.items():
            v = np.asarray(v)
            if v.ndim == 2:
                if k not in last_2d or not np.array_equal(last_2d[k], v):
                    last_2d[k] = v
                    rec[k] = {r: dict(zip(names, map(float, row))) for r, row in zip(names, v)}
            else:
                rec[k] = dict(zip(names, map(float, v))) if v.ndim == 1 else v.item()
        out.append(rec)
    return out


def eval_record(step: int, model, batches: dict, names: tuple, sizes: dict, eval_only) -> dict:
    """The metrics line of one evaluation: ``eval_loss`` per domain (trained, then
    evaluation-only) over fixed ``batches`` ``[D, n, B, T]``, and the papers' aggregates
    (``ado_jax.eval_metrics.aggregate``: uniform mean, mean perplexity, natural-weighted mean
    over ``sizes`` = ``{trained domain: tokens}``, mean over ``eval_only``)."""
    losses_D = np.asarray(jax.device_get(train.evaluate(model, batches)))
    losses = dict(zip(names, map(float, losses_D)))
    return {"step": step, "eval_loss": losses, **aggregate(losses, sizes, eval_only)}


def run(cfg: Config, run_dir: str) -> dict:
    """Trains (or resumes) the run in ``run_dir``; returns the last logged metrics record.

    ``cfg`` is not changed: the run uses (and writes to ``config.json`` and every checkpoint) a
    copy with ``model.vocab_size`` resolved from the data when it is 0. The training data is one
    ``Loader`` (``ado_jax.data.base``), sampled in the step or on the host per ``data.loader``."""
    sharding.maybe_initialize_distributed()
    cfg = data_setup.resolve_vocab_size(cfg)
    validate(cfg, jax.device_count())
    run_path = epath.Path(run_dir)
    run_path.mkdir(parents=True, exist_ok=True)
    mesh = sharding.make_mesh(cfg.mesh)
    loader = data_setup.train_loader(cfg, mesh)
    heldout = data_setup.heldout_stream(cfg, with_eval_only=True)  # trained domains, then evaluation-only
    names = loader.names
    mixer = cfg.mixer.build(loader.sizes(), cfg.train.decay_steps, cfg.train.seed)
    optimizer = train.make_optimizer(cfg.train)
    key_model, key_data = jax.random.split(jax.random.PRNGKey(cfg.train.seed))
    stream_state = loader.init_state(key_data, mixer.init(len(names)).weights)
    state = train.create_state(cfg.model, optimizer, mixer, stream_state, len(names), key_model, mesh)
    shardings = train.state_shardings(state, mesh)

    ckpt = checkpoint.Checkpointer(str(run_path / "checkpoints"), cfg.train.keep_ckpts)
    start = ckpt.latest_step() or 0
    if start:
        state, _ = ckpt.restore(state, shardings, start)
    loader.start(state.stream_state)
    if jax.process_index() == 0:
        (run_path / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    log = metric_sinks.Tee(MetricsLog(run_path, start), cfg, run_path)  # + TensorBoard / W&B per cfg.log
    last_2d = dict(log.last_matrices)  # [D, D] metrics are written only when they change
    step_fn = train.make_train_step(cfg.train, optimizer, mixer, mesh, shardings, len(names))
    eval_batches = heldout.fixed_batches(cfg.train.eval_batches) if cfg.train.eval_every else None
    # Read in-step only if the mixer asks; a mixer sees the trained domains only: the first D.
    mixer_heldout = jax.tree.map(lambda x: x[:len(names)], heldout.fixed_batches(cfg.mixer.heldout_batches))

    def save(step, state):
        # The loader's position (a host loader's is not in the step's state) travels in the checkpoint.
        state = eqx.tree_at(lambda s: s.stream_state, state, loader.state(state.stream_state))
        ckpt.save(step, state, cfg.to_dict())

    stop = {"sigterm": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(sigterm=True))
    show = cfg.train.progress and jax.process_index() == 0
    from tqdm import tqdm

    bar = tqdm(total=cfg.train.steps, initial=start, disable=not show, unit="step", dynamic_ncols=True)
    tokens_per_step = cfg.train.batch_size * cfg.train.seq_len
    pending, last, t0, t_steps = [], {}, time.perf_counter(), 0
    step = start
    try:
        while step < cfg.train.steps and not stop["sigterm"]:
            data = loader.step_input(state.mixer_state.weights)
            state, metrics = step_fn(state, data, mixer_heldout)
            step += 1
            pending.append((step, metrics))
            if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                records = _to_records(pending, names, last_2d)
                pending, last = [], records[-1]
                dt = time.perf_counter() - t0
                t_steps += len(records)
                last["tokens_per_s"] = tokens_per_step * t_steps / max(dt, 1e-9)
                log.write(records)
                bar.set_postfix(loss=f"{last['loss']:.3f}", tok_s=f"{last['tokens_per_s']:.3g}")
            bar.update(1)
            if cfg.train.eval_every and (step % cfg.train.eval_every == 0 or step == cfg.train.steps):
                rec = eval_record(step, state.model, eval_batches, heldout.names,
                                  dict(zip(names, loader.sizes())), cfg.data.eval_only_domains)
                log.write([rec])
            if step % cfg.train.ckpt_every == 0:
                save(step, state)
    finally:
        signal.signal(signal.SIGTERM, previous)
        log.write(_to_records(pending, names, last_2d))
        if step > start and ckpt.latest_step() != step:
            save(step, state)
        ckpt.close()
        log.close()
        loader.close()
        bar.close()
    if stop["sigterm"] and jax.process_index() == 0:
        print(f"SIGTERM: saved checkpoint at step {step} in {run_path / 'checkpoints'}; rerun to resume")
    return last
