"""The three synthetic tasks bundled for training: stream + model + per-example loss + eval.

``Task`` is what ``ado_jax.synthetic.train.train`` runs. ``make_task(name, **cfg)`` builds the
papers' setups (``preset="paper"``) or our CPU-scale ones (``preset="cpu"``, the default).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ado_jax.synthetic import estimators
from ado_jax.synthetic.facts import Facts
from ado_jax.synthetic.icl_regression import ICLRegression
from ado_jax.synthetic.sparse_parity import SparseParity
from ado_jax.synthetic.gpt_tasks import TaskGPT, icl_predict
from ado_jax.synthetic.mlp import parity_mlp

Array = jax.Array


class Task(NamedTuple):
    """A synthetic task.

    Attributes:
      name: "icl_regression" | "sparse_parity" | "facts".
      stream: the pure data stream (``init``, ``next(state, weights_D)``, ``num_domains``).
      make_model: ``key -> eqx.Module``.
      loss_fn: ``(model, batch) -> loss_B [B]`` per-example training loss.
      eval_fn: ``(model, key, stream_state) -> dict[str, []]`` test metrics (test distribution).
      optimizer: the paper's (or CPU-scaled) optimizer for this task.
    """

    name: str
    stream: Any
    make_model: Callable[[Array], eqx.Module]
    loss_fn: Callable[[eqx.Module, dict], Array]
    eval_fn: Callable[[eqx.Module, Array], dict]
    optimizer: optax.GradientTransformation


def icl_task(stream: ICLRegression, dim=32, layers=2, heads=2, lr=1e-3, eval_batch=256) -> Task:
    """ICL regression; test loss = MSE over all prompt lengths on fresh ``N(0, I)`` tasks."""

    def make_model(key):
        return TaskGPT(key, max_len=stream.seq_len, dim=dim, num_layers=layers, num_heads=heads,
                       input_dim=stream.dim)

    def loss_fn(model, batch):
        pred_BN = jax.vmap(icl_predict, (None, 0, 0))(model, batch["inputs"], batch["targets"])
        return jnp.mean((pred_BN - batch["targets"]) ** 2, axis=1)

    def eval_fn(model, key, stream_state=None):
        return {"test_loss": jnp.mean(loss_fn(model, stream.test_batch(key, eval_batch)))}

    return Task("icl_regression", stream, make_model, loss_fn, eval_fn, optax.adam(lr))


def parity_task(stream: SparseParity, width=40, depth=2, lr=0.1, eval_batch=2048) -> Task:
    """Sparse parity; SGD on MSE; test loss and sign accuracy on fresh uniform points."""

    def make_model(key):
        return parity_mlp(key, stream.dim, width, depth)

    def loss_fn(model, batch):
        return (jax.vmap(model)(batch["inputs"]) - batch["targets"]) ** 2

    def eval_fn(model, key, stream_state=None):
        batch = stream.test_batch(key, eval_batch)
        pred_B = jax.vmap(model)(batch["inputs"])
        return {"test_loss": jnp.mean((pred_B - batch["targets"]) ** 2),
                "test_acc": estimators.parity_accuracy(pred_B, batch["targets"])}

    return Task("sparse_parity", stream, make_model, loss_fn, eval_fn, optax.sgd(lr))


def facts_task(stream: Facts, dim=64, layers=2, heads=4, lr=3e-4) -> Task:
    """Fact memorization; accuracy = greedy answer over all (s, r) with fresh noise (the ground
    truth ``phi`` lives in the stream state)."""

    def make_model(key):
        return TaskGPT(key, max_len=stream.seq_len, dim=dim, num_layers=layers, num_heads=heads,
                       vocab_size=stream.vocab_size)

    def loss_fn(model, batch):
        logits_BTV = jax.vmap(model)(batch["inputs"])
        ce_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, batch["targets"])
        return jnp.mean(ce_BT, axis=1)

    def eval_fn(model, key, stream_state):
        prompts_PT, answers_P = stream.all_pairs(key, stream_state.answer_SR)
        logits_fn = jax.vmap(model)
        last_PV = logits_fn(prompts_PT)[:, -1]
        ce = optax.softmax_cross_entropy_with_integer_labels(last_PV, answers_P)
        return {"test_acc": estimators.fact_accuracy(logits_fn, prompts_PT, answers_P),
                "test_loss": jnp.mean(ce)}

    return Task("facts", stream, make_model, loss_fn, eval_fn, optax.adam(lr, b1=0.9, b2=0.95))


def make_task(name: str, preset: str = "cpu", model: dict | None = None, **stream_cfg) -> Task:
    """Builds a task. ``preset="paper"`` = the paper's App. B sizes; ``"cpu"`` = docs/synthetic.md.

    ``stream_cfg`` overrides stream fields (e.g. ``num_tasks``, ``cov_beta``, ``num_examples``);
    ``model`` overrides model / optimizer fields (``dim``, ``layers``, ``heads``, ``lr``, ...).
    """
    if preset not in ("cpu", "paper"):
        raise ValueError(f"preset must be 'cpu' or 'paper', got {preset!r}")
    model = dict(model or {})
    paper = preset == "paper"
    if name == "icl_regression":
        base = dict(dim=20, num_points=41, batch_size=128) if paper else dict(dim=5, num_points=10, batch_size=64)
        m = dict(dim=256, layers=12, heads=8, lr=1e-4) if paper else {}
        return icl_task(ICLRegression(**{**base, **stream_cfg}), **{**m, **model})
    if name == "sparse_parity":
        return parity_task(SparseParity(**{**dict(dim=20, k=6, batch_size=20), **stream_cfg}), **model)
    if name == "facts":
        m = dict(dim=192, layers=6, heads=6, lr=5e-5) if paper else {}
        base = dict(num_subjects=100, batch_size=64) if paper else dict(num_subjects=100, batch_size=64, k_noise=2)
        return facts_task(Facts(**{**base, **stream_cfg}), **{**m, **model})
    raise ValueError(f"unknown task {name!r}; expected icl_regression, sparse_parity or facts")
