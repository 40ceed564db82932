"""In-context linear regression figures of "Lowering Data Diversity can Accelerate Training: Case
Studies in Synthetic Tasks" at CPU scale.

Paper (App. B.1): d = 20, 41 points, GPT-2 256 x 12 x 8 (22.4 M parameters), Adam 1e-4, batch 128.
A 2-core CPU does ~40-60 GFLOP/s, so that model at 8 seeds is out of reach (~0.2 s per seed-step
already for a 0.8 M model at d = 20). Two CPU scales (``--scale``):

* ``d10``: d = 10, 21 points (the paper's 2d + 1), a 2-layer 64-wide 4-head TaskGPT (~0.1 M),
  Adam 1e-4 (the paper's lr), batch 64, 3,000 steps: Fig. 1/4 (task count k). A 2-seed pilot
  at lr 1e-3 left k = inf on its 1 + d plateau for 2,000 steps; at 1e-4 it leaves it at ~1,600.
* ``small``: d = 5, 10 points, a 2-layer 32-wide 2-head TaskGPT (~25 k), Adam 1e-3, batch 64,
  3,000 steps: the optimization interventions (Fig. 2 gradient bias with Adam, Fig. 3 PCGrad)
  and the curricula (Fig. 7), which need many runs.

Test loss = MSE over all prompt lengths on 256 fresh N(0, I) tasks; 8 paired seeds; each JSON
records median steps-to-threshold, the per-seed range and the paired bootstrap interval of the
ratio to the baseline. Rerunning skips figures already saved with the same settings.

Figures (wall time on 2 idle cores, 8 seeds): 1/4 task count + Fig. 8 gradient cosine (d10,
~25 min), 2 gradient bias (small, ~12 min), 3 PCGrad at 1/4 batch (small, ~8 min), 7 curricula
(small, ~8 min), 6 covariance bias, 5 Zipf over 1,024 tasks, 12 frozen readout (small, ~8 min each).
Usage: python experiments/diversity/icl.py [--only fig1,fig2,fig3,fig5,fig6,fig7,fig12] [--seeds 8]
       [--scale d10|small (default: per figure, as above)] [--steps N]
"""

from __future__ import annotations

import argparse

import equinox as eqx
import jax
import numpy as np
import optax

from ado_jax.synthetic import train as st
from ado_jax.synthetic import ICLRegression, estimators
from ado_jax.synthetic.tasks import make_task
from ado_jax.synthetic.interventions import diversity, optimization
from common import done, save

# scale -> (stream, model, steps, eval every, threshold); the threshold marks leaving the plateau of
# the zero predictor (test MSE 1 + d) towards ridge (printed as a baseline)
SCALES = {"small": (dict(dim=5, num_points=10, batch_size=64), dict(dim=32, layers=2, heads=2, lr=1e-3),
                    3000, 200, 4.5),
          "d10": (dict(dim=10, num_points=21, batch_size=64), dict(dim=64, layers=2, heads=4, lr=1e-4),
                  3000, 100, 9.0)}
DEFAULT_SCALE = {"fig1": "d10"}


def baselines(stream_cfg: dict, pool_sizes):
    """Test-distribution MSE of ridge and of the eq.-6 estimator for pools of each size."""
    s = make_task("icl_regression", **stream_cfg).stream
    b = s.test_batch(jax.random.PRNGKey(999), 2048)
    out = {"ridge": float(estimators.mse(estimators.ridge_predict(b["inputs"], b["targets"]), b["targets"]))}
    for k in pool_sizes:
        pool = ICLRegression(**stream_cfg, num_tasks=k).init(jax.random.PRNGKey(k)).pool_KD
        pred = estimators.discrete_bayes_predict(b["inputs"], b["targets"], pool)
        out[f"bayes k={k}"] = float(estimators.mse(pred, b["targets"]))
    print("baselines", out, flush=True)
    return out


def examples_per_task_curriculum(pool: int, batch: int, start: int, views: int):
    """Doubling curriculum timed in examples seen per task: hold ``k`` tasks (from ``start``) until
    each has been seen ``views`` times on average (``views * k / batch`` steps), then double.
    App. A's literal schedule (32 tasks for 30 steps, doubled every 20) is ``icl_curriculum``."""
    ks, bounds, t = [start], [], 0
    while ks[-1] < pool:
        t += views * ks[-1] // batch
        bounds.append(t)
        ks.append(min(2 * ks[-1], pool))
    return diversity.piecewise(bounds, [diversity.truncate(pool, k) for k in ks])


def run(args):
    only = set(args.only.split(",")) if args.only else None

    def setup(fig, name):
        """(stream, model, kw, steps, threshold, meta) for ``fig`` or None when not wanted / done."""
        scale = args.scale or DEFAULT_SCALE.get(fig, "small")
        stream, model, n, every, thresh = SCALES[scale]
        n = args.steps or n
        settings = {"scale": scale, "stream": stream, "model": model, "steps": n, "every": every, "seeds": args.seeds}
        if (only is not None and fig not in only) or done(name, settings):
            return None
        kw = dict(num_steps=n, eval_every=every, seeds=args.seeds)
        return stream, model, kw, np.arange(0, n + 1, every), thresh, {"settings": settings}

    task = lambda stream, model, **over: make_task("icl_regression", model=model, **{**stream, **over})
    if c := setup("fig1", "fig1_4_icl_task_count"):
        stream, model, kw, steps, thresh, meta = c
        ks = [16, 64, 256, 1024, None]
        base = baselines(stream, [16, 64, 256])
        curves, cos = {}, {}
        for k in ks:
            r = st.train(task(stream, model, num_tasks=k), track_cosine=True, **kw)
            label = f"k={k if k else 'inf'}"
            curves[label], cos[label] = r["test_loss"][0], r["grad_cosine"][0]
        meta.update(base)
        save("fig1_4_icl_task_count", f"ICL regression (d={stream['dim']}): train on k tasks, test on N(0,I) tasks",
             steps, curves, "test_loss", thresh, hlines={"ridge": base["ridge"], "bayes k=64": base["bayes k=64"]},
             meta=meta, baseline="k=inf")
        save("fig8_icl_grad_cosine", "ICL: cosine of gradients of two distinct batches (App. C.1)", steps, cos,
             "grad_cosine", 0.5, below=False, meta=meta)
    if c := setup("fig2", "fig2_icl_grad_bias"):
        stream, model, kw, steps, thresh, meta = c
        curves = {}
        for g in [0.0, 0.03, 0.1, 0.3, 1.0]:
            opt = optax.chain(optimization.gradient_bias(g, 100), optax.adam(model["lr"]))
            curves[f"gamma={g}"] = st.train(task(stream, model), optimizer=opt, **kw)["test_loss"][0]
        save("fig2_icl_grad_bias", "ICL (Adam): gradient bias g + gamma g_bias (n=100)", steps, curves,
             "test_loss", thresh, meta=meta, baseline="gamma=0.0")
    if c := setup("fig6", "fig6_icl_cov_bias"):
        stream, model, kw, steps, thresh, meta = c
        curves = {f"beta={b}": st.train(task(stream, model, cov_beta=b), **kw)["test_loss"][0]
                  for b in [0.0, 0.5, 0.9, 1.0]}
        save("fig6_icl_cov_bias", "ICL: tasks ~ N(0, (1-beta) I + beta v v^T), test beta=0", steps, curves,
             "test_loss", thresh, meta=meta, baseline="beta=0.0")
    if c := setup("fig5", "fig5_icl_zipf"):
        stream, model, kw, steps, thresh, meta = c
        alphas = [0.0, 1.0, 2.0]
        w = np.stack([np.asarray(diversity.zipf(1024, a, jax.random.PRNGKey(7))) for a in alphas])
        r = st.train(task(stream, model, num_tasks=1024), weights=w, **kw)
        save("fig5_icl_zipf", "ICL: Zipf(alpha) over a pool of 1024 tasks", steps,
             {f"alpha={a}": r["test_loss"][i] for i, a in enumerate(alphas)}, "test_loss", thresh, meta=meta,
             baseline="alpha=0.0")
    if c := setup("fig7", "fig7_icl_curriculum"):
        stream, model, kw, steps, thresh, meta = c
        pool, b = 2 ** 16, stream["batch_size"]
        t = task(stream, model, num_tasks=pool)
        curves = {"k=inf (baseline)": st.train(task(stream, model), **kw)["test_loss"][0],
                  "k=32 (static)": st.train(task(stream, model, num_tasks=32), **kw)["test_loss"][0],
                  "App. A: 32 tasks, x2 every 20 steps": st.train(t, weights=diversity.icl_curriculum(pool),
                                                                  **kw)["test_loss"][0]}
        for views in (50, 200):
            curves[f"32 tasks, x2 after {views} views/task"] = st.train(
                t, weights=examples_per_task_curriculum(pool, b, 32, views), **kw)["test_loss"][0]
        save("fig7_icl_curriculum", "ICL: curricula over the task count (App. A and in views per task)", steps,
             curves, "test_loss", thresh, meta=meta, baseline="k=inf (baseline)")
    if c := setup("fig3", "fig3_icl_pcgrad"):
        stream, model, kw, steps, thresh, meta = c
        small = dict(stream, batch_size=stream["batch_size"] // 4)
        curves = {"baseline B=64": st.train(task(stream, model), **kw)["test_loss"][0],
                  "baseline B=16": st.train(task(small, model), **kw)["test_loss"][0],
                  "PCGrad B=16": st.train(task(small, model), grad_mode="pcgrad", **kw)["test_loss"][0]}
        save("fig3_icl_pcgrad", "ICL: PCGrad (per-example) at 1/4 batch", steps, curves, "test_loss", thresh,
             meta=meta, baseline="baseline B=64")
    if c := setup("fig12", "fig12_icl_frozen_readout"):
        stream, model, kw, steps, thresh, meta = c
        t = task(stream, model)
        params = eqx.filter(t.make_model(jax.random.PRNGKey(0)), eqx.is_array)
        frozen = optimization.freeze(optax.adam(model["lr"]), params, optimization.readout_pred(params))
        curves = {"all layers": st.train(t, **kw)["test_loss"][0],
                  "frozen readout": st.train(t, optimizer=frozen, **kw)["test_loss"][0]}
        save("fig12_icl_frozen_readout", "ICL: frozen readout (App. C.5)", steps, curves, "test_loss", thresh,
             meta=meta, baseline="all layers")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=0, help="steps per run (0: the scale's)")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--scale", choices=sorted(SCALES), help="override every figure's scale")
    p.add_argument("--only", default="")
    run(p.parse_args())
