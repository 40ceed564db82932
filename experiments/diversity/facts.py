"""Fact-memorization figures of "Lowering Data Diversity can Accelerate Training: Case Studies in
Synthetic Tasks" at CPU scale.

Paper: 100 subjects, 6 layers x 6 heads x 192, Adam(0.9, 0.95) lr 5e-5, batch 64. CPU scale
(docs/synthetic.md): 100 subjects x 4 relations (16 answers each), 64 noise tokens, 2 noise
tokens per document, a 2-layer 64-wide 4-head TaskGPT, Adam(0.9, 0.95) lr 3e-4, batch 64,
2000 steps, 8 paired seeds; accuracy = greedy answer over all 400 (s, r) pairs with fresh noise.
``--scale deep`` (Fig. 4's default) has the paper's depth (6 layers) and lr (5e-5) at a third of its
width (64): 3,000 steps, ~3x the cost per step (a 2-seed pilot reached 50 % at ~2,750 steps).
Each JSON records median steps-to-50 %,
the per-seed range and the paired bootstrap interval of the ratio to the baseline; rerunning
skips figures already saved with the same settings.

Figures (wall time on 2 idle cores, 8 seeds: ~1 min per run at "small", ~4 at "deep"; ~20 min in
all): 4 (truncate subjects to k; deep),
5 (Zipf over subjects), 7 (curricula k = 20 -> 100: App. A's switch at step 100, and switches
after 200 / 500 views per (subject, relation) pair of the 20 subjects), 2 (gradient bias with
Adam, n = 25 as in §3), 3 (PCGrad at 1/4 batch).
Usage: python experiments/diversity/facts.py [--only fig4,fig5,fig7,fig2,fig3] [--seeds 8]
       [--scale small|deep (default: per figure, as above)] [--steps N]
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
import optax

from ado_jax.synthetic import train as st
from ado_jax.synthetic.tasks import make_task
from ado_jax.synthetic.interventions import diversity, optimization
from common import done, save

STREAM = dict(num_subjects=100, num_relations=4, answers_per_relation=16, num_noise=64, k_noise=2, batch_size=64)
# scale -> (model, steps, eval every): "small" for the sweeps; "deep" has the paper's depth (6) and
# lr (5e-5) at a third of its width (64, not 192), ~3x the cost per step: Fig. 4 (truncation) by default.
SCALES = {"small": (dict(dim=64, layers=2, heads=4, lr=3e-4), 2000, 100),
          "deep": (dict(dim=64, layers=6, heads=4, lr=5e-5), 3000, 250)}
DEFAULT_SCALE = {"fig4": "deep"}
THRESH = 0.5  # steps to 50 % fact accuracy


def run(args):
    only = set(args.only.split(",")) if args.only else None

    def setup(fig, name):
        """(task, kw, steps, meta) for ``fig`` at its scale, or None when not wanted / already done."""
        scale = args.scale or DEFAULT_SCALE.get(fig, "small")
        model, n, every = SCALES[scale]
        n = args.steps or n
        settings = {"scale": scale, "stream": STREAM, "model": model, "steps": n, "every": every,
                    "seeds": args.seeds}
        if (only is not None and fig not in only) or done(name, settings):
            return None
        kw = dict(num_steps=n, eval_every=every, seeds=args.seeds)
        return make_task("facts", model=model, **STREAM), kw, np.arange(0, n + 1, every), {"settings": settings}

    acc = lambda task, kw, **a: st.train(task, **kw, **a)["test_acc"][0]
    if c := setup("fig4", "fig4_facts_truncate"):
        task, kw, steps, meta = c
        ks = [20, 50, 100]
        r = st.train(task, weights=np.stack([np.asarray(diversity.truncate(100, k)) for k in ks]), **kw)
        save("fig4_facts_truncate", "Facts: train on the first k of 100 subjects, test on all", r["steps"],
             {f"k={k}": r["test_acc"][i] for i, k in enumerate(ks)}, "test_acc", THRESH, below=False,
             baseline="k=100", meta=meta)
    if c := setup("fig5", "fig5_facts_zipf"):
        task, kw, steps, meta = c
        alphas = [0.0, 0.5, 1.0, 1.5]
        w = np.stack([np.asarray(diversity.zipf(100, a, jax.random.PRNGKey(5))) for a in alphas])
        r = st.train(task, weights=w, **kw)
        save("fig5_facts_zipf", "Facts: Zipf(alpha) over subjects", r["steps"],
             {f"alpha={a}": r["test_acc"][i] for i, a in enumerate(alphas)}, "test_acc", THRESH, below=False,
             baseline="alpha=0.0", meta=meta)
    if c := setup("fig7", "fig7_facts_curriculum"):
        task, kw, steps, meta = c
        # a switch counted in views per (subject, relation) pair of the k = 20 subjects: a batch of
        # 64 documents over 20 x 4 pairs shows each pair 0.8 times per step
        per_step = STREAM["batch_size"] / (20 * STREAM["num_relations"])
        curves = {"k=100 (baseline)": acc(task, kw),
                  "k=20 (static)": acc(task, kw, weights=diversity.truncate(100, 20)),
                  "App. A: k=20 for 100 steps": acc(task, kw, weights=diversity.facts_curriculum(100))}
        for views in (200, 500):
            curves[f"k=20 for {views} views/pair"] = acc(task, kw,
                weights=diversity.facts_curriculum(100, 20, int(views / per_step)))
        save("fig7_facts_curriculum", "Facts: curricula k=20 -> 100 (App. A and in views per pair)", steps,
             curves, "test_acc", THRESH, below=False, baseline="k=100 (baseline)", meta=meta)
    if c := setup("fig2", "fig2_facts_grad_bias"):
        task, kw, steps, meta = c
        curves = {}
        for g in [0.0, 0.03, 0.1, 0.3, 1.0]:
            opt = optax.chain(optimization.gradient_bias(g, 25), task.optimizer)
            curves[f"gamma={g}"] = acc(task, kw, optimizer=opt)
        save("fig2_facts_grad_bias", "Facts (Adam): gradient bias g + gamma g_bias (n=25)", steps, curves,
             "test_acc", THRESH, below=False, baseline="gamma=0.0", meta=meta)
    if c := setup("fig3", "fig3_facts_pcgrad"):
        task, kw, steps, meta = c
        small = make_task("facts", model=SCALES[meta["settings"]["scale"]][0],
                          **dict(STREAM, batch_size=STREAM["batch_size"] // 4))
        curves = {"baseline B=64": acc(task, kw),
                  "baseline B=16": st.train(small, **kw)["test_acc"][0],
                  "PCGrad B=16": st.train(small, grad_mode="pcgrad", **kw)["test_acc"][0]}
        save("fig3_facts_pcgrad", "Facts: PCGrad (per-example) at 1/4 batch", steps, curves, "test_acc", THRESH,
             below=False, baseline="baseline B=64", meta=meta)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=0, help="steps per run (0: the scale's)")
    p.add_argument("--scale", choices=sorted(SCALES), help="override every figure's scale")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--only", default="")
    run(p.parse_args())
