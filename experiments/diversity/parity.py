"""Sparse-parity figures of "Lowering Data Diversity can Accelerate Training: Case Studies in
Synthetic Tasks" at CPU scale (the paper's exact setup, fewer steps).

d = 20, k = 6, 3-layer MLP (2 x 40 hidden), SGD lr 0.1, batch 20, MSE, 16 seeds (paired: seed i
has the same init and data keys in every run); the training set is steps x batch examples for
the full 50k-step run (1e6), as in §4.1. We run 20k steps (learning happens in the first ~10k)
and evaluate every 250 steps on 2048 fresh points. Each figure's JSON records median
steps-to-90 %-accuracy, the per-seed range, and the paired bootstrap interval of the ratio to
its baseline (common.summarize). Rerunning skips figures already saved with the same settings.
Wall time on 2 idle cores, 16 seeds: ~30 s per figure for 2, 4, 5, 7, 10 and sam (~2.5 min
together); "select" ~10 min (one core: the 20k-domain upsampling mixer).

Figures: 2 (gradient bias), 4 (subsample rho), 5 (Zipf over batches), 7 (curriculum),
10 (staircase), plus "sam" (SAM, from "Data Distribution as a Lever for Guiding Optimizers
Toward Superior Generalization in LLMs", Gangavarapu et al.) and "select" (max-min subset vs
random, from "Data Uniformity Improves Training Efficiency and More, with a Convergence
Framework Beyond the NTK Regime", arXiv:2506.24120, and upsampling of late-learned examples
(Gangavarapu et al.) on a fixed 20k-example dataset). Plot labels keep the short names
"paper 001" (data uniformity) and "paper 003" (Gangavarapu et al.) of the saved results.
Usage: python experiments/diversity/parity.py [--steps 20000] [--only fig4,fig5,fig2,fig7,fig10,sam,select]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ado_jax.synthetic import train as st
from ado_jax.synthetic.sparse_parity import examples
from ado_jax.synthetic.tasks import make_task
from ado_jax.synthetic.interventions import diversity, optimization, uniformity, upsample
from common import done, save

N_EX = 1_000_000   # 50k steps x batch 20
THRESH = 0.9       # steps to test accuracy >= 0.9


def run(args):
    steps, every, seeds = args.steps, args.every, args.seeds
    only = set(args.only.split(",")) if args.only else None
    settings = {"steps": steps, "every": every, "seeds": seeds}
    want = lambda f, name: (only is None or f in only) and not done(name, settings)
    kw = dict(num_steps=steps, eval_every=every, seeds=seeds)
    meta = {"settings": settings}
    out = {}
    task = make_task("sparse_parity", num_examples=N_EX, num_chunks=1000)
    if want("fig4", "fig4_parity_subsample"):
        rhos = [1.0, 0.1, 0.01, 0.005, 0.002, 0.001]
        w = np.stack([np.asarray(diversity.subsample(1000, r)) for r in rhos])
        r = st.train(task, weights=w, **kw)
        curves = {f"rho={p}": r["test_acc"][i] for i, p in enumerate(rhos)}
        curves["fresh samples"] = st.train(make_task("sparse_parity"), **kw)["test_acc"][0]
        out["fig4"] = save("fig4_parity_subsample", "Sparse parity: subsample a fraction rho of the 1e6 examples",
                           r["steps"], curves, "test_acc", THRESH, below=False, baseline="rho=1.0", meta=meta)
    if want("fig7", "fig7_parity_curriculum"):
        # App. A literally (rho 0.02 for 100 steps = 0.1 epoch of the subset, 2k of its 20k examples
        # seen) and the same curriculum with the switch counted in epochs of the subset, the unit in
        # which a small subset is "learned": rho = 0.02 for 2 epochs (2,000 steps), and rho = 0.002
        # (memorizes on its own: ~0.78 accuracy at best) for 10 and 20 epochs (1,000 / 2,000 steps).
        ep = lambda rho: int(rho * N_EX / 20)  # steps per epoch of the subset at batch 20
        runs = {"rho=1 (baseline)": None, "rho=0.02": diversity.subsample(1000, 0.02),
                "rho=0.002": diversity.subsample(1000, 0.002),
                "App. A: rho=0.02 for 100 steps": diversity.parity_curriculum(1000),
                "rho=0.02 for 2 epochs": diversity.parity_curriculum(1000, 0.02, 2 * ep(0.02)),
                "rho=0.002 for 10 epochs": diversity.parity_curriculum(1000, 0.002, 10 * ep(0.002)),
                "rho=0.002 for 20 epochs": diversity.parity_curriculum(1000, 0.002, 20 * ep(0.002))}
        curves = {label: st.train(task, weights=w, **kw)["test_acc"][0] for label, w in runs.items()}
        out["fig7"] = save("fig7_parity_curriculum", "Sparse parity: curricula rho -> 1 (App. A and in epochs)",
                           np.arange(0, steps + 1, every), curves, "test_acc", THRESH, below=False,
                           baseline="rho=1 (baseline)", meta=meta)
    if want("fig5", "fig5_parity_zipf"):
        task5 = make_task("sparse_parity", num_examples=N_EX, num_chunks=N_EX // 20, whole_chunk=True)
        alphas = [0.0, 0.5, 0.75, 1.0, 1.5]
        w = np.stack([np.asarray(diversity.zipf(N_EX // 20, a, jax.random.PRNGKey(123))) for a in alphas])
        r = st.train(task5, weights=w, **kw)
        out["fig5"] = save("fig5_parity_zipf", "Sparse parity: Zipf(alpha) over fixed batches",
                           r["steps"], {f"alpha={a}": r["test_acc"][i] for i, a in enumerate(alphas)},
                           "test_acc", THRESH, below=False, baseline="alpha=0.0", meta=meta)
    if want("fig2", "fig2_parity_grad_bias"):
        curves = {}
        for g in [0.0, 0.01, 0.03, 0.1, 0.5, 1.0]:
            opt = optax.chain(optimization.gradient_bias(g, 100), optax.sgd(0.1))
            curves[f"gamma={g}"] = st.train(task, optimizer=opt, **kw)["test_acc"][0]
        out["fig2"] = save("fig2_parity_grad_bias", "Sparse parity (SGD): gradient bias g + gamma g_bias (n=100)",
                           np.arange(0, steps + 1, every), curves, "test_acc", THRESH, below=False,
                           baseline="gamma=0.0", meta=meta)
    if want("fig10", "fig10_parity_staircase"):
        curves = {}
        for eps in [0.0, 0.05, 0.1, 0.3]:
            curves[f"eps={eps}"] = st.train(make_task("sparse_parity", staircase_eps=eps), **kw)["test_acc"][0]
        out["fig10"] = save("fig10_parity_staircase", "Sparse parity: staircase target chi_6 + eps sum_j<6 chi_j",
                            np.arange(0, steps + 1, every), curves, "test_acc", THRESH, below=False,
                            baseline="eps=0.0", meta=meta)
    if want("sam", "sam_parity"):
        task = make_task("sparse_parity")
        curves = {"sgd": st.train(task, **kw)["test_acc"][0]}
        for rho in [0.01, 0.05]:
            curves[f"sam rho={rho}"] = st.train(task, optimizer=optimization.sam(optax.sgd(0.1), rho),
                                                grad_mode="sam", **kw)["test_acc"][0]
        out["sam"] = save("sam_parity", "Sparse parity: SAM (paper 003) vs SGD",
                          np.arange(0, steps + 1, every), curves, "test_acc", THRESH, below=False,
                          baseline="sgd", meta=meta)
    if want("select", "parity_uniformity_upsample"):
        # a 20k-example dataset, one domain per example: random vs max-min (data uniformity) 5k subsets,
        # and the full set with late-learned upsampling (Gangavarapu et al.) from step 1000
        n, m = 20_000, 5_000
        task = make_task("sparse_parity", num_examples=n, num_chunks=n, data_seed=0)  # one dataset, all seeds
        data_key = task.stream.init(jax.random.PRNGKey(0)).data_key
        x = examples(data_key, jnp.arange(n), 20)
        idx = uniformity.max_min_select(x, m, 0)
        rand = diversity.subsample(n, m / n)
        sel = uniformity.selection_weights(n, idx)
        print("h_min random", float(uniformity.h_min(x[:m])), "max-min", float(uniformity.h_min(x[idx])))
        r = st.train(task, weights=np.stack([np.asarray(rand), np.asarray(sel)]), **kw)
        full = st.train(task, **kw)["test_acc"][0]
        up = st.train(task, weights=upsample.upsample_mixer(1000, factor=3.0), **kw)["test_acc"][0]
        out["select"] = save("parity_uniformity_upsample",
                             "Sparse parity, 20k examples: random vs max-min 5k subset; upsampling",
                             r["steps"], {"random 5k": r["test_acc"][0], "max-min 5k (paper 001)": r["test_acc"][1],
                                          "all 20k": full, "all 20k, upsample late (paper 003)": up},
                             "test_acc", THRESH, below=False, baseline="all 20k", meta=meta)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--only", default="")
    run(p.parse_args())
