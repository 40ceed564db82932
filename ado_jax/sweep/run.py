"""``run_sweep``: a resumable sweep directory of K proxy runs trained side by side, and its table.

Layout of ``SWEEP_DIR`` (local or gs://)::

    sweep.json        the run config, the sweep spec, the domains, seeds and the K mixtures
    checkpoints/      the stacked ``ProxyState`` (orbax, ``ado_jax.checkpoint``), every train.ckpt_every steps
    metrics.jsonl     per step: each proxy's training loss [K]
    results.json/.csv the results table (``ado_jax.sweep.table``), written at the end

A rerun with the same command resumes from the latest checkpoint and gives the same table as an
uninterrupted sweep (the mixtures are read back from ``sweep.json``, not drawn again). A rerun
may raise ``train.steps`` (the schedule follows ``train.decay_steps``); any other change to the
config or the spec is refused, naming the keys that differ.
"""

from __future__ import annotations

import dataclasses
import json
import time

import jax
import numpy as np
from etils import epath

from ado_jax import checkpoint, run_dir as run_dirs, storage
from ado_jax.optimizer import make_optimizer
from ado_jax.config import Config, validate
from ado_jax.data import setup as data_setup
from ado_jax.run_control import RunStopped, StopSignals
from ado_jax.run_log import MetricsLog, read_metrics
from ado_jax.sweep import proxies, samplers, table as tables

SPEC_FILE = "sweep.json"


@dataclasses.dataclass
class SweepSpec:
    """How a sweep's mixtures are chosen (stored in ``sweep.json``).

    Attributes:
      sampler: ``regmix`` | ``grid`` | ``dirichlet`` | ``given`` (``ado_jax.sweep.samplers``).
      num: K, the number of proxies (regmix, dirichlet; grid and given: the number of rows).
      seed: the sampler's PRNG seed (the proxies' own seeds come from ``train.seed``).
      resolution: grid step ``1 / resolution`` (grid).
      alpha: Dirichlet concentration (dirichlet).
      max_epochs: RegMix's cap on passes over a domain's tokens in one proxy (None: no cap).
      distinct_seeds: proxy ``k`` uses ``train.seed + k`` (default: every proxy ``train.seed``,
        the same initialisation and data key for all, so mixtures are compared on common noise).
      mixtures: the rows of ``given`` (lists of D weights, or ``{domain: weight}`` dicts).
    """

    sampler: str = "regmix"
    num: int = 16
    seed: int = 0
    resolution: int = 4
    alpha: float = 1.0
    max_epochs: float | None = 15.0
    distinct_seeds: bool = False
    mixtures: list | None = None


def _plan(cfg: Config, spec: SweepSpec, names, sizes_D, path: epath.Path) -> dict:
    """The sweep's plan: read from ``sweep.json`` when it exists (refusing a changed config or
    spec), else drawn now and written there."""
    conf = cfg.to_dict()
    stored = storage.read_text(path / SPEC_FILE)
    if stored is not None:
        plan = json.loads(stored)
        old_conf = {**plan["config"], "train": {**plan["config"]["train"], "steps": cfg.train.steps}}
        changed = {**run_dirs.diff(old_conf, conf),
                   **{f"sweep.{k}": v for k, v in run_dirs.diff(plan["spec"], dataclasses.asdict(spec)).items()}}
        if changed:
            raise ValueError(f"sweep dir {path} holds another sweep: {run_dirs.show_changes(changed)} (only "
                             "train.steps may change on a rerun); use another sweep dir for another sweep")
        plan["config"] = conf
        return plan
    run_tokens = cfg.train.steps * cfg.train.batch_size * cfg.train.seq_len
    mix_KD = samplers.sample(spec.sampler, jax.random.PRNGKey(spec.seed), names, sizes_D, num=spec.num,
                             run_tokens=run_tokens, resolution=spec.resolution, alpha=spec.alpha,
                             max_epochs=spec.max_epochs, rows=spec.mixtures)
    if spec.sampler in ("regmix", "dirichlet") and len(mix_KD) != spec.num:
        raise ValueError(f"sampler {spec.sampler} gave {len(mix_KD)} mixtures for num={spec.num}")
    k = len(mix_KD)
    seeds = [cfg.train.seed + (i if spec.distinct_seeds else 0) for i in range(k)]
    plan = {"config": conf, "spec": dataclasses.asdict(spec), "domains": list(names),
            "sizes": [float(s) for s in sizes_D], "seeds": seeds, "mixtures": mix_KD.tolist()}
    storage.write_text(path / SPEC_FILE, json.dumps(plan, indent=1) + "\n")
    return plan


def check_inputs(cfg: Config, spec: SweepSpec) -> None:
    """Raises ValueError naming the first sweep input that cannot work (before any data is read)."""
    if spec.sampler not in samplers.SAMPLERS:
        raise ValueError(f"--sampler {spec.sampler!r}: expected one of {', '.join(samplers.SAMPLERS)}")
    if spec.sampler in ("regmix", "dirichlet") and (int(spec.num) != spec.num or spec.num < 1):
        raise ValueError(f"--num {spec.num!r}: the number of proxies K must be an integer >= 1")
    if spec.sampler == "given" and not spec.mixtures:
        raise ValueError("--sampler given needs --mixtures FILE (a JSON list of mixtures)")
    if cfg.data.loader != "device":
        raise ValueError(f"data.loader={cfg.data.loader}: a sweep samples its proxies' batches inside the step; "
                         "use data.loader=device (the domains must fit in device memory)")
    if cfg.train.grad_accum != 1:
        raise ValueError(f"train.grad_accum={cfg.train.grad_accum}: a sweep's proxies take one micro-batch per step")


def run_sweep(cfg: Config, spec: SweepSpec, sweep_dir: str, chunk: int | None = None) -> dict:
    """Trains (or resumes) the sweep in ``sweep_dir``; returns the results table (``ado_jax.sweep.table``).

    Every proxy runs ``cfg`` (model, optimizer, ``train.steps``, data) with ``mixer.name=static``
    on its own mixture; the held-out losses are those of ``ado-jax train``'s last evaluation
    (``train.eval_batches`` fixed batches per domain, trained and evaluation-only domains).
    ``chunk``: proxies computed at once per device (``proxies.make_sweep_step``; None: 1 on CPU,
    all K on an accelerator); it changes speed, not the runs, and may differ on a rerun.
    Raises ValueError for bad input, ``RunStopped`` after Ctrl-C (checkpoint saved),
    ``run_dir.RunDirBusy`` when another process holds the directory."""
    check_inputs(cfg, spec)
    if chunk is not None and chunk < 0:
        raise ValueError(f"--chunk {chunk}: expected >= 0 (0: all proxies in one vmap)")
    cfg = data_setup.resolve_vocab_size(cfg)
    validate(cfg)
    path = epath.Path(sweep_dir)
    path.mkdir(parents=True, exist_ok=True)
    lock = run_dirs.RunLock(path)
    ckpt = checkpoint.Checkpointer(str(path / "checkpoints"), cfg.train.keep_ckpts)
    try:
        return _train(cfg, spec, path, ckpt, chunk)
    finally:
        ckpt.close()
        lock.release()


def _train(cfg: Config, spec: SweepSpec, path: epath.Path, ckpt, chunk: int | None = None) -> dict:
    stream = data_setup.train_stream(cfg)
    heldout = data_setup.heldout_stream(cfg, with_eval_only=True)
    plan = _plan(cfg, spec, stream.names, stream.sizes(), path)
    mix_KD, seeds = np.asarray(plan["mixtures"], np.float32), plan["seeds"]
    k, start = len(seeds), ckpt.latest_step() or 0
    mesh = proxies.proxy_mesh(k)
    optimizer = make_optimizer(cfg.train)
    state = proxies.init_proxies(cfg.model, optimizer, seeds, mix_KD, mesh)
    shardings = proxies.state_shardings(state, mesh)
    if start:
        state, _ = ckpt.restore(state, shardings, start)
    step_fn = proxies.make_sweep_step(cfg.train, optimizer, mesh, shardings, chunk)
    log = MetricsLog(path, start)
    print(f"{path}: {'resuming sweep from step ' + str(start) if start else 'new sweep'} to step {cfg.train.steps}: "
          f"{k} proxies ({spec.sampler}) over {len(stream.names)} domains, {mesh.devices.size} device(s) "
          f"on the proxy axis", flush=True)
    step, pending, last, t0, state_ok = start, [], None, time.perf_counter(), True
    signals = StopSignals()
    try:
        while step < cfg.train.steps and not signals.should_stop(step, cfg.train.log_every):
            state_ok = False  # until the step returns, `state` may be donated
            state, metrics = step_fn(state, stream)
            state_ok, step = True, step + 1
            pending.append((step, metrics["loss"]))
            if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                log.write([{"step": s, "loss": np.asarray(v).tolist()} for s, v in jax.device_get(pending)])
                last, pending = pending[-1][1], []
            if step % cfg.train.ckpt_every == 0 or step == cfg.train.steps:
                ckpt.save(step, state, cfg.to_dict())
    finally:
        signals.restore()
        if pending:
            log.write([{"step": s, "loss": np.asarray(v).tolist()} for s, v in jax.device_get(pending)])
            last = pending[-1][1]
        if state_ok and step > start and ckpt.latest_step() != step:
            ckpt.save(step, state, cfg.to_dict())
    if signals.received:
        msg = f"{signals.received}: sweep checkpoint saved at step {step} in {path / 'checkpoints'}; rerun to resume"
        raise RunStopped(msg, 130 if signals.received == "SIGINT" else 0)
    if last is None:  # a rerun of a finished sweep: the last logged losses
        last = next((r["loss"] for r in reversed(read_metrics(path / "metrics.jsonl")) if "loss" in r), None)
    batches = heldout.fixed_batches(cfg.train.eval_batches)
    losses_KM = np.asarray(jax.device_get(proxies.evaluate(state, batches)))
    result = tables.build_table(mix_KD, losses_KM, stream.names, heldout.names, stream.sizes(),
                                cfg.data.eval_only_domains, seeds, step,
                                None if last is None else jax.device_get(last), plan["spec"])
    json_path, csv_path = tables.write_table(path, result)
    print(f"{path}: {k} proxies at step {step} in {time.perf_counter() - t0:.1f} s; table: {json_path}, {csv_path}",
          flush=True)
    return result

