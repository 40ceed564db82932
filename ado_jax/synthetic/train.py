"""A compact trainer for the synthetic tasks: many seeds (and configs) in one compiled program.

``train`` vmaps over seeds and over a stack of mixture-weight configs, and runs the steps with
``lax.scan`` (an outer scan over eval chunks, an inner scan over steps), so e.g. 5 seeds x 6
Zipf exponents x 50k parity steps is one XLA program. Inside a step: draw a batch with the
current mixture (a static weight vector, a curriculum schedule, or any ``Mixer``), take the
gradient (mean, per-example PCGrad, or SAM), apply the optimizer, feed per-domain losses to
the mixer. ``main(argv)`` / ``run_task(task, **flags)`` are the CLI hooks.
"""

from __future__ import annotations


import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ado_jax.synthetic.tasks import Task
from ado_jax.synthetic.interventions import diversity, optimization
from ado_jax.mixing.base import Mixer, domain_stats

Array = jax.Array


def _as_mixer(weights, num_domains: int) -> tuple[Mixer | None, Array | None]:
    """Static ``[D]`` / ``[C, D]`` weights -> (None, array); schedules / mixers -> (mixer, None)."""
    if weights is None:
        return None, jnp.full((1, num_domains), 1.0 / num_domains)
    if isinstance(weights, Mixer):
        return weights, None
    if callable(weights):
        return diversity.schedule_mixer(weights), None
    w = jnp.asarray(weights, jnp.float32)
    w_CD = w[None] if w.ndim == 1 else w
    if w_CD.ndim != 2 or w_CD.shape[1] != num_domains:
        raise ValueError(f"weights must be [D] or [C, D] with D={num_domains}, got {w.shape}")
    if not bool(jnp.all(w_CD >= 0)) or not bool(jnp.all(jnp.sum(w_CD, 1) > 0)):
        raise ValueError("weights must be non-negative with a positive sum per config")
    return None, w_CD


def train(task: Task, *, num_steps: int, eval_every: int, seeds=5, weights=None,
          optimizer: optax.GradientTransformation | None = None, grad_mode: str = "mean",
          track_cosine: bool = False, key_offset: int = 0) -> dict[str, np.ndarray]:
    """Trains ``task`` for each seed (and each weight config) and returns eval curves.

    Args:
      num_steps: steps per run (a multiple of ``eval_every``).
      eval_every: steps between evaluations; evals at steps 0, eval_every, ..., num_steps.
      seeds: number of seeds (0..n-1, plus ``key_offset``) or a list of ints.
      weights: None (uniform), ``[D]`` or ``[C, D]`` static mixtures (C configs vmapped),
        a schedule ``step -> [D]`` (curriculum), or a ``Mixer``.
      optimizer: defaults to ``task.optimizer``. Wrap with ``optimization.sam`` for SAM.
      grad_mode: "mean" | "pcgrad" (per-example PCGrad) | "sam" (optimizer from ``sam``).
      track_cosine: also log the gradient cosine similarity of two distinct batches.

    Returns:
      dict of numpy arrays: ``steps [E]`` and each metric as ``[C, S, E]`` (``train_loss`` is
      the mean training loss over each eval chunk, ``[C, S, E - 1]``).
    """
    if num_steps % eval_every:
        raise ValueError(f"num_steps={num_steps} must be a multiple of eval_every={eval_every}")
    if grad_mode not in ("mean", "pcgrad", "sam"):
        raise ValueError(f"grad_mode must be mean, pcgrad or sam, got {grad_mode!r}")
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    stream, opt = task.stream, optimizer or task.optimizer
    mixer, w_CD = _as_mixer(weights, stream.num_domains)
    static = eqx.filter(task.make_model(jax.random.PRNGKey(0)), eqx.is_inexact_array, inverse=True)

    def mean_loss(params, batch):
        loss_B = task.loss_fn(eqx.combine(params, static), batch)
        return jnp.mean(loss_B), loss_B

    grad_fn = jax.value_and_grad(mean_loss, has_aux=True)

    def gradient(params, batch, key):
        if grad_mode != "pcgrad":
            return grad_fn(params, batch)
        one = lambda ex: grad_fn(params, jax.tree.map(lambda x: x[None], ex))[1]
        grads_B = jax.vmap(one)(batch)
        (loss, loss_B), _ = jax.value_and_grad(mean_loss, has_aux=True)(params, batch)
        return (loss, loss_B), optimization.pcgrad(grads_B, key)

    def run(key, w_D):
        km, ks, ke, kt = jax.random.split(key, 4)
        params = eqx.filter(task.make_model(km), eqx.is_inexact_array)
        carry = (params, opt.init(params), stream.init(ks),
                 mixer.init(stream.num_domains) if mixer else None, jnp.zeros((), jnp.int32), kt)

        def step(carry, _):
            params, opt_state, sstate, mstate, t, key = carry
            key, kg = jax.random.split(key)
            batch, sstate = stream.next(sstate, mstate.weights if mixer else w_D)
            (loss, loss_B), grads = gradient(params, batch, kg)
            extra = {"grad_fn": lambda p, _: grad_fn(p, batch)[1]} if grad_mode == "sam" else {}
            updates, opt_state = opt.update(grads, opt_state, params, **extra)
            params = optax.apply_updates(params, updates)
            if mixer:
                _, mstate = mixer.update(domain_stats(loss_B, batch["domain"], stream.num_domains, t), mstate)
            return (params, opt_state, sstate, mstate, t + 1, key), loss

        def evaluate(carry):
            params, sstate = carry[0], carry[2]
            out = task.eval_fn(eqx.combine(params, static), ke, sstate)
            if track_cosine:
                kc1, kc2 = jax.random.split(jax.random.fold_in(ke, carry[4]))
                w = carry[3].weights if mixer else w_D
                b1, _ = stream.next(sstate._replace(key=kc1), w)
                b2, _ = stream.next(sstate._replace(key=kc2), w)
                out["grad_cosine"] = optimization.cosine(grad_fn(params, b1)[1], grad_fn(params, b2)[1])
            return out

        def chunk(carry, _):
            metrics = evaluate(carry)
            carry, loss_T = jax.lax.scan(step, carry, None, length=eval_every)
            return carry, (metrics, jnp.mean(loss_T))

        carry, (metrics, train_loss) = jax.lax.scan(chunk, carry, None, length=num_steps // eval_every)
        last = evaluate(carry)
        metrics = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), metrics, last)
        return {**metrics, "train_loss": train_loss}

    keys_S = jnp.stack([jax.random.PRNGKey(s + key_offset) for s in seeds])
    w_in = w_CD if w_CD is not None else jnp.zeros((1, 1))
    out = eqx.filter_jit(jax.vmap(jax.vmap(run, (0, None)), (None, 0)))(keys_S, w_in)
    result = {k: np.asarray(v) for k, v in out.items()}
    result["steps"] = np.arange(0, num_steps + 1, eval_every)
    return result


def steps_to_threshold(steps_E: np.ndarray, curve_SE: np.ndarray, threshold: float,
                       below: bool = True) -> np.ndarray:
    """``[S]`` first eval step where the curve crosses ``threshold`` (NaN if never)."""
    hit_SE = curve_SE <= threshold if below else curve_SE >= threshold
    first_S = np.argmax(hit_SE, axis=-1)
    return np.where(hit_SE.any(axis=-1), steps_E[first_S], np.nan)


def run_task(task: str, *, preset: str = "cpu", steps: int = 2000, eval_every: int = 100, seeds: int = 2,
             lr: float | None = None, stream: dict | None = None, model: dict | None = None,
             zipf_alpha: float | None = None, truncate_k: int | None = None, rho: float | None = None,
             curriculum: bool = False, grad_bias_gamma: float = 0.0, grad_bias_every: int | None = None,
             pcgrad: bool = False, sam_rho: float | None = None, freeze_readout: bool = False,
             track_cosine: bool = False) -> dict[str, np.ndarray]:
    """One synthetic run from flags (what ``ado-jax train --task ...`` calls); see ``main``."""
    from ado_jax.synthetic.tasks import make_task

    model = dict(model or {}, **({"lr": lr} if lr is not None else {}))
    t = make_task(task, preset=preset, model=model, **(stream or {}))
    d = t.stream.num_domains
    if sum(x is not None and x is not False for x in (zipf_alpha, truncate_k, rho, curriculum or None)) > 1:
        raise ValueError("use at most one of zipf_alpha, truncate_k, rho, curriculum")
    weights = None
    if zipf_alpha is not None:
        weights = diversity.zipf(d, zipf_alpha, jax.random.PRNGKey(12345))
    elif truncate_k is not None:
        weights = diversity.truncate(d, truncate_k)
    elif rho is not None:
        weights = diversity.subsample(d, rho)
    elif curriculum:
        weights = {"icl_regression": diversity.icl_curriculum, "sparse_parity": diversity.parity_curriculum,
                   "facts": diversity.facts_curriculum}[task](d)
    opt = t.optimizer
    params = eqx.filter(t.make_model(jax.random.PRNGKey(0)), eqx.is_array)
    if freeze_readout:
        opt = optimization.freeze(opt, params, optimization.readout_pred(params))
    if grad_bias_gamma:
        every = grad_bias_every or (25 if task == "facts" else 100)
        opt = optax.chain(optimization.gradient_bias(grad_bias_gamma, every), opt)
    if sam_rho is not None and pcgrad:
        raise ValueError("choose one of sam_rho and pcgrad")
    if sam_rho is not None:
        opt = optimization.sam(opt, sam_rho)
    mode = "pcgrad" if pcgrad else "sam" if sam_rho is not None else "mean"
    return train(t, num_steps=steps, eval_every=eval_every, seeds=seeds, weights=weights, optimizer=opt,
                 grad_mode=mode, track_cosine=track_cosine)


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
    """CLI: ``--task icl_regression|sparse_parity|facts`` plus intervention flags; prints the
    final metrics (mean ± std over seeds) and writes all curves to ``--out`` JSON if given."""
    import argparse
    import json
    import os
    import tempfile

    p = argparse.ArgumentParser(prog="ado-jax train --task")
    p.add_argument("--task", required=True, choices=["icl_regression", "sparse_parity", "facts"],
                   help="which synthetic task to train")
    p.add_argument("--preset", default="cpu", choices=["cpu", "paper"],
                   help="cpu: shrunk setup that runs in minutes; paper: the paper's exact sizes")
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps per seed")
    p.add_argument("--eval-every", type=int, default=100, help="evaluate the task metric every N steps")
    p.add_argument("--seeds", type=int, default=2, help="seeds trained together (vmap) in one program")
    p.add_argument("--lr", type=float, help="learning rate (default: the preset's)")
    p.add_argument("--stream", default="{}", help='JSON stream overrides, e.g. \'{"num_tasks": 64}\'')
    p.add_argument("--model", default="{}", help='JSON model overrides, e.g. \'{"dim": 32}\'')
    p.add_argument("--zipf-alpha", type=float, help="Zipf exponent over tasks / batches / subjects")
    p.add_argument("--truncate-k", type=int, help="train on the first k tasks / subjects only")
    p.add_argument("--rho", type=float, help="subsample fraction of the data pool")
    p.add_argument("--curriculum", action="store_true", help="the paper's App. A curriculum for this task")
    p.add_argument("--grad-bias-gamma", type=float, default=0.0, help="gradient biasing g + gamma*g_bias (0: off)")
    p.add_argument("--grad-bias-every", type=int, help="refresh g_bias every N steps (paper: 100/100/25)")
    p.add_argument("--pcgrad", action="store_true", help="PCGrad over the batch's sub-batches")
    p.add_argument("--sam-rho", type=float, help="sharpness-aware minimization radius (optax.contrib.sam)")
    p.add_argument("--freeze-readout", action="store_true", help="keep the readout layer at its init")
    p.add_argument("--track-cosine", action="store_true", help="log cosine similarity of gradients of distinct batches")
    p.add_argument("--out", help="write all curves (per seed) to this JSON file")
    a = p.parse_args(argv)
    flags = {k: v for k, v in vars(a).items() if k not in ("task", "out", "eval_every")}
    flags["stream"], flags["model"] = json.loads(a.stream), json.loads(a.model)
    r = run_task(a.task, eval_every=a.eval_every, **flags)
    for k, v in r.items():
        if k != "steps":
            print(f"{k:12s} final {np.mean(v[..., -1]):.4g} ± {np.std(v[..., -1]):.2g} over {v.shape[1]} seeds")
    if a.out:
        d = os.path.dirname(os.path.abspath(a.out))
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"args": vars(a), **{k: v.tolist() for k, v in r.items()}}, f)
        os.replace(tmp, a.out)
    return r


if __name__ == "__main__":
    main()
