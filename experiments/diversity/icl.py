"""In-context linear regression figures of "Lowering Data Diversity can Accelerate Training: Case
Studies in Synthetic Tasks" at CPU scale.

Paper: d = 20, 41 points, GPT-2 256 x 12 x 8, Adam 1e-4, batch 128. CPU scale (docs/synthetic.md):
d = 5, 10 points, noise 1, a 2-layer 32-wide 2-head TaskGPT, Adam 1e-3, batch 64, 3000 steps,
2 seeds, test loss = MSE over all prompt lengths on 256 fresh N(0, I) tasks.

Figures: 1/4 (task count k, with the gradient cosine of App. C.1 / Fig. 8 tracked), 6 (covariance
bias beta), 5 (Zipf over a pool of 1024 tasks), 7 (curriculum), 3 (PCGrad at 1/4 batch), 12 (frozen readout).
Usage: python experiments/diversity/icl.py [--only fig1,fig6,...] [--steps 3000] [--seeds 2]
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
from common import save

STREAM = dict(dim=5, num_points=10, batch_size=64)
MODEL = dict(dim=32, layers=2, heads=2, lr=1e-3)
THRESH = 4.5  # test MSE; zero predictor = 1 + d = 6, ridge ~ 2.9 (printed)


def baselines(pool_sizes):
    """Test-distribution MSE of ridge and of the eq.-6 estimator for pools of each size."""
    s = make_task("icl_regression", **STREAM).stream
    b = s.test_batch(jax.random.PRNGKey(999), 2048)
    out = {"ridge": float(estimators.mse(estimators.ridge_predict(b["inputs"], b["targets"]), b["targets"]))}
    for k in pool_sizes:
        pool = ICLRegression(**STREAM, num_tasks=k).init(jax.random.PRNGKey(k)).pool_KD
        pred = estimators.discrete_bayes_predict(b["inputs"], b["targets"], pool)
        out[f"bayes k={k}"] = float(estimators.mse(pred, b["targets"]))
    print("baselines", out, flush=True)
    return out


def run(args):
    only = set(args.only.split(",")) if args.only else None
    want = lambda f: only is None or f in only
    kw = dict(num_steps=args.steps, eval_every=args.every, seeds=args.seeds)
    steps = np.arange(0, args.steps + 1, args.every)
    if want("fig1"):
        ks = [4, 16, 64, None]
        base = baselines([4, 16, 64])
        curves, cos = {}, {}
        for k in ks:
            r = st.train(make_task("icl_regression", model=MODEL, **STREAM, num_tasks=k), track_cosine=True, **kw)
            label = f"k={k if k else 'inf'}"
            curves[label], cos[label] = r["test_loss"][0], r["grad_cosine"][0]
        save("fig1_4_icl_task_count", "ICL regression: train on k tasks, test on N(0,I) tasks", steps, curves,
             "test_loss", THRESH, hlines={"ridge": base["ridge"], "bayes k=16": base["bayes k=16"]}, meta=base)
        save("fig8_icl_grad_cosine", "ICL: cosine of gradients of two distinct batches (App. C.1)", steps, cos,
             "grad_cosine", 0.5, below=False)
    if want("fig6"):
        curves = {}
        for beta in [0.0, 0.5, 0.9, 1.0]:
            r = st.train(make_task("icl_regression", model=MODEL, **STREAM, cov_beta=beta), **kw)
            curves[f"beta={beta}"] = r["test_loss"][0]
        save("fig6_icl_cov_bias", "ICL: tasks ~ N(0, (1-beta) I + beta v v^T), test beta=0", steps, curves,
             "test_loss", THRESH)
    if want("fig5"):
        task = make_task("icl_regression", model=MODEL, **STREAM, num_tasks=1024)
        alphas = [0.0, 1.0, 2.0]
        w = np.stack([np.asarray(diversity.zipf(1024, a, jax.random.PRNGKey(7))) for a in alphas])
        r = st.train(task, weights=w, **kw)
        save("fig5_icl_zipf", "ICL: Zipf(alpha) over a pool of 1024 tasks", steps,
             {f"alpha={a}": r["test_loss"][i] for i, a in enumerate(alphas)}, "test_loss", THRESH)
    if want("fig7"):
        task = make_task("icl_regression", model=MODEL, **STREAM, num_tasks=2 ** 16)
        base = st.train(make_task("icl_regression", model=MODEL, **STREAM), **kw)
        cur = st.train(task, weights=diversity.icl_curriculum(2 ** 16), **kw)
        save("fig7_icl_curriculum", "ICL: curriculum 32 tasks, doubled every 20 steps after 30", steps,
             {"k=inf": base["test_loss"][0], "curriculum": cur["test_loss"][0]}, "test_loss", THRESH)
    if want("fig3"):
        small = dict(STREAM, batch_size=16)
        curves = {"baseline B=64": st.train(make_task("icl_regression", model=MODEL, **STREAM), **kw)["test_loss"][0],
                  "baseline B=16": st.train(make_task("icl_regression", model=MODEL, **small), **kw)["test_loss"][0],
                  "PCGrad B=16": st.train(make_task("icl_regression", model=MODEL, **small), grad_mode="pcgrad",
                                          **kw)["test_loss"][0]}
        save("fig3_icl_pcgrad", "ICL: PCGrad (per-example) at 1/4 batch", steps, curves, "test_loss", THRESH)
    if want("fig12"):
        task = make_task("icl_regression", model=MODEL, **STREAM)
        params = eqx.filter(task.make_model(jax.random.PRNGKey(0)), eqx.is_array)
        frozen = optimization.freeze(optax.adam(MODEL["lr"]), params, optimization.readout_pred(params))
        curves = {"all layers": st.train(task, **kw)["test_loss"][0],
                  "frozen readout": st.train(task, optimizer=frozen, **kw)["test_loss"][0]}
        save("fig12_icl_frozen_readout", "ICL: frozen readout (App. C.5)", steps, curves, "test_loss", THRESH)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--every", type=int, default=200)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--only", default="")
    run(p.parse_args())
