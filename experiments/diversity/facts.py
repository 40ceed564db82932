"""Fact-memorization figures of "Lowering Data Diversity can Accelerate Training: Case Studies in
Synthetic Tasks" at CPU scale.

Paper: 100 subjects, 6 layers x 6 heads x 192, Adam(0.9, 0.95) lr 5e-5, batch 64. CPU scale
(docs/synthetic.md): 100 subjects x 4 relations (16 answers each), 64 noise tokens, 2 noise
tokens per document, a 2-layer 64-wide 4-head TaskGPT, Adam(0.9, 0.95) lr 3e-4, batch 64,
2000 steps, 2 seeds; accuracy = greedy answer over all 400 (s, r) pairs with fresh noise.

Figures: 4 (truncate subjects to k), 5 (Zipf over subjects), 7 (curriculum k = 20 -> 100 at step 100).
Usage: python experiments/diversity/facts.py [--only fig4,fig5,fig7] [--steps 2000] [--seeds 2]
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from ado_jax.synthetic import train as st
from ado_jax.synthetic.tasks import make_task
from ado_jax.synthetic.interventions import diversity
from common import save

STREAM = dict(num_subjects=100, num_relations=4, answers_per_relation=16, num_noise=64, k_noise=2, batch_size=64)
MODEL = dict(dim=64, layers=2, heads=4, lr=3e-4)
THRESH = 0.5  # steps to 50 % fact accuracy


def run(args):
    only = set(args.only.split(",")) if args.only else None
    want = lambda f: only is None or f in only
    kw = dict(num_steps=args.steps, eval_every=args.every, seeds=args.seeds)
    task = make_task("facts", model=MODEL, **STREAM)
    if want("fig4"):
        ks = [20, 50, 100]
        r = st.train(task, weights=np.stack([np.asarray(diversity.truncate(100, k)) for k in ks]), **kw)
        save("fig4_facts_truncate", "Facts: train on the first k of 100 subjects, test on all", r["steps"],
             {f"k={k}": r["test_acc"][i] for i, k in enumerate(ks)}, "test_acc", THRESH, below=False)
    if want("fig5"):
        alphas = [0.0, 0.5, 1.0, 1.5]
        w = np.stack([np.asarray(diversity.zipf(100, a, jax.random.PRNGKey(5))) for a in alphas])
        r = st.train(task, weights=w, **kw)
        save("fig5_facts_zipf", "Facts: Zipf(alpha) over subjects", r["steps"],
             {f"alpha={a}": r["test_acc"][i] for i, a in enumerate(alphas)}, "test_acc", THRESH, below=False)
    if want("fig7"):
        base = st.train(task, **kw)
        cur = st.train(task, weights=diversity.facts_curriculum(100), **kw)
        save("fig7_facts_curriculum", "Facts: curriculum k=20 until step 100, then 100", base["steps"],
             {"k=100 (baseline)": base["test_acc"][0], "curriculum": cur["test_acc"][0]}, "test_acc", THRESH,
             below=False)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--only", default="")
    run(p.parse_args())
