"""The training loop: data, sharded state, resume, metrics, eval, checkpoints, signals.

``run(cfg, run_dir)`` trains to ``cfg.train.steps``, resuming from ``run_dir``'s latest complete
checkpoint when there is one. Only process 0 writes metrics and shows the progress bar. What it
survives (Ctrl-C, SIGTERM, a second process, a changed config, a full disk, a stuck run) is
tabled in docs/reliability.md.
"""

from __future__ import annotations

import sys
import time

import equinox as eqx
import jax
import numpy as np
from etils import epath

from ado_jax import checkpoint, hf_checkpoint, memory, metric_sinks, run_dir as run_dirs, sharding, train
from ado_jax.optimizer import make_optimizer
from ado_jax.config import Config, config_from_dict, validate
from ado_jax.data import setup as data_setup
from ado_jax.eval_metrics import aggregate
from ado_jax.run_control import RunOptions, RunStopped, StopSignals
from ado_jax.run_log import MetricsLog, read_metrics
from ado_jax.storage_retries import count_retries

__all__ = ["MetricsLog", "RunOptions", "RunStopped", "StopSignals", "build_mixer", "eval_record", "run"]


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


def build_mixer(cfg: Config, names: tuple, sizes_D, run_dir: str):
    """The run's ``Mixer`` for trained domains ``names`` of sizes ``sizes_D: [D]``: the mixer
    config with its inputs from other runs read in (``MixerConfig.resolve``), then built."""
    return cfg.mixer.resolve(tuple(names), run_dir).build(sizes_D, cfg.train.decay_steps, cfg.train.seed)


def _check_resume(cfg: Config, ckpt, start: int, opts: RunOptions) -> tuple[dict, Config | None]:
    """The accepted config changes since checkpoint ``start`` (``run_dir.check_resume``), and,
    with ``--reset-mixer``, the stored config (the mixer state is restored in the old mixer's
    shape, then replaced by a fresh one)."""
    old = ckpt.config(start)
    changes = run_dirs.check_resume(old, cfg.to_dict(), start, opts.allow_change, opts.reset_mixer)
    return changes, (config_from_dict(old, validate_it=False) if opts.reset_mixer else None)


def _summary(start: int, step: int, wall: float, t_steps: int, t_run: float, tokens_per_step: int, last: dict,
             last_eval: dict | None) -> dict:
    """The closing record: steps, wall time, tokens/s (compilation excluded), final losses."""
    out = {"step": step, "steps_this_run": step - start, "wall_s": round(wall, 2),
           "tokens_per_s": round(tokens_per_step * t_steps / t_run, 1) if t_steps and t_run > 0 else None,
           "loss": last.get("loss")}
    if last_eval:
        out.update({k: v for k, v in last_eval.items() if k != "step"})
    return out


def run(cfg: Config, run_dir: str, opts: RunOptions = RunOptions()) -> dict:
    """Trains (or resumes) the run in ``run_dir``; returns the closing summary record
    (``step``, ``steps_this_run``, ``wall_s``, ``tokens_per_s``, ``loss``, and the last
    evaluation's ``eval_loss`` and aggregates).

    ``cfg`` is not changed: the run uses (and writes to ``config.json`` and every checkpoint) a
    copy with ``model.vocab_size`` resolved from the data when it is 0. A new run with
    ``train.init_from`` starts from that Hugging Face checkpoint's weights (``ado_jax.hf_checkpoint``;
    the model config must match it); a resume ignores it. The training data is one
    ``Loader`` (``ado_jax.data.base``), sampled in the step or on the host per ``data.loader``.
    Raises ``RunStopped`` after Ctrl-C (checkpoint saved) or a stuck run, ``run_dir.RunDirBusy``
    when another process holds the directory, ``run_dir.ConfigChanged`` for a refused config
    change, ``MemoryError`` when the estimate exceeds the devices' memory, ``OSError`` for the
    file system's failures."""
    t_begin = time.perf_counter()
    sharding.maybe_initialize_distributed()
    cfg = data_setup.resolve_vocab_size(cfg)
    validate(cfg, jax.device_count())
    lead = jax.process_index() == 0
    run_path = epath.Path(run_dir)
    with count_retries(run_dir, report=lead):  # "storage: N requests retried ..." at the end (gs://)
        run_path.mkdir(parents=True, exist_ok=True)
        lock = run_dirs.RunLock(run_path, opts.break_lock) if lead else None
        try:
            return _run_locked(cfg, run_path, opts, lead, t_begin)
        finally:
            if lock:
                lock.release()


def _run_locked(cfg: Config, run_path: epath.Path, opts: RunOptions, lead: bool, t_begin: float) -> dict:
    ckpt = checkpoint.Checkpointer(str(run_path / "checkpoints"), cfg.train.keep_ckpts)
    try:
        return _train(cfg, run_path, opts, lead, t_begin, ckpt)
    finally:
        ckpt.close()


def _train(cfg, run_path, opts, lead, t_begin, ckpt) -> dict:
    start = ckpt.latest_step() or 0
    changes, old_cfg = _check_resume(cfg, ckpt, start, opts) if start else ({}, None)
    if lead and "://" not in str(run_path):  # fail now, not at the first save after hours of training
        probe = run_path / "checkpoints" / ".write_probe"
        probe.write_text("")
        probe.unlink()
    if cfg.train.harness_every:  # fail now, not at the first harness evaluation
        from ado_jax.harness import run as harness_run

        harness_run.check_installed()
    if cfg.train.init_from and not start:  # before the data and the state: a mismatch fails at once
        hf_checkpoint.check_model_config(cfg.model, hf_checkpoint.read_config(cfg.train.init_from),
                                         cfg.train.init_from)
    if start >= cfg.train.steps:
        records = [r for r in read_metrics(run_path / "metrics.jsonl") if "loss" in r]
        if lead:
            print(f"{run_path}: already at step {start} (train.steps={cfg.train.steps}); nothing to train: raise "
                  "--steps to continue")
        return {"step": start, "steps_this_run": 0, "loss": records[-1]["loss"] if records else None}
    mesh = sharding.make_mesh(cfg.mesh)
    est = memory.check(cfg, mesh, opts.force)
    loader = data_setup.train_loader(cfg, mesh)
    heldout = data_setup.heldout_stream(cfg, with_eval_only=True)  # trained domains, then evaluation-only
    names = loader.names
    mixer = build_mixer(cfg, names, loader.sizes(), str(run_path))
    optimizer = make_optimizer(cfg.train)
    key_model, key_data = jax.random.split(jax.random.PRNGKey(cfg.train.seed))
    stream_state = loader.init_state(key_data, mixer.init(len(names)).weights)
    state = train.create_state(cfg.model, optimizer, mixer, stream_state, len(names), key_model, mesh)
    shardings = train.state_shardings(state, mesh)
    if start and old_cfg is not None:  # --reset-mixer: the old mixer's state shape, then a fresh mixer
        old_mixer = build_mixer(old_cfg, names, loader.sizes(), str(run_path))
        like = eqx.filter_eval_shape(train.init_state, cfg.model, optimizer, old_mixer, stream_state, len(names),
                                     key_model)
        restored, _ = ckpt.restore(like, train.state_shardings(like, mesh), start)
        state = eqx.tree_at(lambda s: s.mixer_state, restored, state.mixer_state)
    elif start:
        state, _ = ckpt.restore(state, shardings, start)
    elif cfg.train.init_from:  # the optimizer state's init does not depend on the weights' values
        state = eqx.tree_at(lambda s: s.model, state, hf_checkpoint.load_model(cfg.train.init_from, state.model))
    loader.start(state.stream_state)
    log = metric_sinks.Tee(MetricsLog(run_path, start, enabled=lead), cfg, run_path)  # + TensorBoard / W&B
    if lead:
        run_dirs.record_config(run_path, cfg.to_dict(), start, changes)
        mesh_txt = "x".join(str(mesh.shape[a]) for a in ("data", "fsdp", "tensor"))
        print(f"{run_path}: {f'resuming from step {start}' if start else 'new run'} to step {cfg.train.steps} | "
              f"{est['param_count'] / 1e6:.2f}M parameters | {jax.device_count()} {jax.default_backend()} "
              f"device(s), mesh data x fsdp x tensor = {mesh_txt} | mixer {cfg.mixer.name} | about "
              f"{est['total'] / 2**20:,.0f} MiB per device", flush=True)
        if note := cfg.mixer.describe(loader.sizes(), cfg.train.decay_steps):
            print(note, flush=True)
        if cfg.train.init_from:
            print(f"train.init_from={cfg.train.init_from}: " + (
                f"ignored, resuming from this run's own checkpoint at step {start}" if start else
                "weights loaded from that Hugging Face checkpoint"), flush=True)
        if changes:
            print(f"config changes accepted at step {start}: {run_dirs.show_changes(changes)} "
                  f"(history in {run_path / run_dirs.HISTORY})", flush=True)
    if start and (changes or opts.reset_mixer):
        log.write([{"step": start, "event": "resume", "reset_mixer": bool(opts.reset_mixer),
                    "mixer": cfg.mixer.name, "changed": {k: list(v) for k, v in changes.items()}}])
    last_2d = dict(log.last_matrices)  # [D, D] metrics are written only when they change
    step_fn = train.make_train_step(cfg.train, optimizer, mixer, mesh, shardings, len(names))
    eval_batches = heldout.fixed_batches(cfg.train.eval_batches) if cfg.train.eval_every else None
    # Read in-step only if the mixer asks; a mixer sees the trained domains only: the first D.
    mixer_heldout = jax.tree.map(lambda x: x[:len(names)], heldout.fixed_batches(cfg.mixer.heldout_batches))

    def save(step, state):
        # The loader's position (a host loader's is not in the step's state) travels in the checkpoint.
        position = loader.state(state.stream_state)
        if jax.process_count() > 1:  # host arrays, the same on every process: global and replicated for orbax
            position = sharding.replicated(position, mesh)
        state = eqx.tree_at(lambda s: s.stream_state, state, position)
        ckpt.save(step, state, cfg.to_dict())

    from tqdm import tqdm

    bar = tqdm(total=cfg.train.steps, initial=start, disable=not (cfg.train.progress and lead), unit="step",
               dynamic_ncols=True)
    tokens_per_step = cfg.train.batch_size * cfg.train.seq_len
    pending, last, last_eval, t0, t_steps, stuck = [], {}, None, None, 0, 0
    step, state_ok, failed = start, True, False
    signals = StopSignals()
    try:
        while step < cfg.train.steps and not stuck and not signals.should_stop(step, cfg.train.log_every):
            data = loader.step_input(state.mixer_state.weights)
            state_ok = False  # from here until the step returns, `state` may be donated
            state, metrics = step_fn(state, data, mixer_heldout)
            state_ok = True
            step += 1
            pending.append((step, metrics))
            if t0 is None:  # rates and the bar's ETA start after the first (compiling) step
                jax.block_until_ready(metrics["loss"])
                t0 = time.perf_counter()
                if not bar.disable:
                    bar.initial, bar.start_t = step, time.time()  # tqdm's clock
            if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                records = _to_records(pending, names, last_2d)
                pending, last = [], records[-1]
                t_steps = step - start - 1
                last["tokens_per_s"] = tokens_per_step * t_steps / max(time.perf_counter() - t0, 1e-9)
                log.write(records)
                bar.set_postfix(loss=f"{last['loss']:.3f}", tok_s=f"{last['tokens_per_s']:.3g}")
                if cfg.train.max_skipped_in_row and last["skipped_in_row"] >= cfg.train.max_skipped_in_row:
                    stuck = last["skipped_in_row"]
            bar.update(1)
            if cfg.train.eval_every and (step % cfg.train.eval_every == 0 or step == cfg.train.steps):
                last_eval = eval_record(step, state.model, eval_batches, heldout.names,
                                        dict(zip(names, loader.sizes())), cfg.data.eval_only_domains)
                log.write([last_eval])
            if cfg.train.harness_every and (step % cfg.train.harness_every == 0 or step == cfg.train.steps):
                log.write([harness_run.evaluate_in_training(cfg, state.model, step, mesh)])
            if step % cfg.train.ckpt_every == 0:
                save(step, state)
    except BaseException:
        failed = True
        raise
    finally:
        signals.restore()
        bar.close()
        try:
            log.write(_to_records(pending, names, last_2d))
            if state_ok and step > start and ckpt.latest_step() != step:
                save(step, state)
        except Exception as e:  # a second failure must not hide the first
            if not failed:
                raise
            print(f"warning: could not save the final checkpoint at step {step}: {e}", file=sys.stderr)
        if not state_ok and lead:
            print(f"aborted inside step {step + 1}: nothing saved after checkpoint {ckpt.latest_step()}",
                  file=sys.stderr)
        log.close()
        loader.close()
    t_run = time.perf_counter() - t0 if t0 is not None else 0.0
    summary = _summary(start, step, time.perf_counter() - t_begin, step - start - 1, t_run, tokens_per_step, last,
                       last_eval)
    where = f"checkpoint at step {step} in {run_path / 'checkpoints'}"
    if signals.received == "SIGINT":
        raise RunStopped(f"interrupted (Ctrl-C): saved {where}; rerun the same command to resume", 130)
    if signals.received and lead:
        print(f"{signals.received}: saved {where}; rerun to resume")
    if stuck:
        raise RunStopped(f"stopped: the last {stuck} steps were all skipped (non-finite gradient or update; "
                         f"train.max_skipped_in_row={cfg.train.max_skipped_in_row}); saved {where}. Lower train.lr "
                         "(resume with --allow-change) or check the data", 3)
    return summary
