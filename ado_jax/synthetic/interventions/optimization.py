"""Optimization interventions, Optax-style.

From §3 / App. C of "Lowering Data Diversity can Accelerate Training: Case Studies in Synthetic
Tasks" (the data-diversity paper) and, for SAM, "Data Distribution as a Lever for Guiding
Optimizers Toward Superior Generalization in LLMs" (Gangavarapu et al.).

* ``gradient_bias(gamma, every)`` — step with ``g_t + gamma * g_bias``, ``g_bias`` = the batch
  gradient stored every ``every`` steps (paper: n = 100 ICL / parity, 25 facts). Chain it before
  the optimizer: ``optax.chain(gradient_bias(0.1, 100), optax.sgd(0.1))``.
* ``pcgrad(grads_B, key)`` — PCGrad (Yu et al. 2020) over per-example gradients: each ``g_i`` is
  projected off every other ``g_j`` (random order) it conflicts with (``g_i . g_j < 0``), then
  averaged. The data-diversity paper's text writes the projection without the conflict test;
  ``always=True`` projects unconditionally.
* ``sam(optimizer, rho)`` — SAM through ``optax.contrib.sam`` in opaque mode (one call = ascent
  + descent); call ``update(g, state, params, grad_fn=lambda p, _: grad(p))``.
* ``freeze(optimizer, params, pred)`` — zero updates for leaves whose path matches (frozen
  readout, App. C.5), via ``optax.multi_transform``.
* ``scale_by_path(params, fn)`` — per-layer learning rates: multiply each leaf's update by
  ``fn(path)`` (Fig. 12's "different layers, different learning rates").
* ``cosine(g1, g2)`` / ``leaf_cosines(g1, g2)`` — gradient similarity of distinct batches (App. C.1).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

Array = jax.Array


class GradientBiasState(NamedTuple):
    """``bias``: the stored gradient (params-shaped); ``count: []`` int32 steps seen."""

    bias: optax.Updates
    count: Array


def gradient_bias(gamma: float, every: int) -> optax.GradientTransformation:
    """``g -> g + gamma * g_bias``; ``g_bias`` refreshed to the current ``g`` every ``every`` steps."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")

    def init(params):
        return GradientBiasState(jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        refresh = state.count % every == 0
        bias = jax.tree.map(lambda g, b: jnp.where(refresh, g, b), updates, state.bias)
        out = jax.tree.map(lambda g, b: g + gamma * b, updates, bias)
        return out, GradientBiasState(bias, state.count + 1)

    return optax.GradientTransformation(init, update)


def pcgrad(grads_B, key: Array, always: bool = False):
    """PCGrad-combined gradient (params-shaped) from per-example ``grads_B`` (leading axis B).

    For each ``i`` and ``j != i`` in a random order: ``g_i <- g_i - (g_i . g_j / |g_j|^2) g_j``
    when ``g_i . g_j < 0`` (always when ``always``). Returns the mean over ``i``. O(B^2 P).
    """
    g0 = jax.tree.map(lambda x: x[0], grads_B)
    _, unravel = ravel_pytree(g0)
    flat_BP = jax.vmap(lambda g: ravel_pytree(g)[0])(grads_B)
    b = flat_BP.shape[0]
    norms_B = jnp.maximum(jnp.sum(flat_BP ** 2, axis=1), 1e-30)

    def project(i, k):
        order_B = jax.random.permutation(k, b)

        def body(t, g_P):
            j = order_B[t]
            dot = g_P @ flat_BP[j]
            do = (j != i) & (always | (dot < 0))
            return jnp.where(do, g_P - dot / norms_B[j] * flat_BP[j], g_P)

        return jax.lax.fori_loop(0, b, body, flat_BP[i])

    pc_BP = jax.vmap(project)(jnp.arange(b), jax.random.split(key, b))
    return unravel(jnp.mean(pc_BP, axis=0))


def sam(optimizer: optax.GradientTransformation, rho: float = 0.05) -> optax.GradientTransformationExtraArgs:
    """SAM (Foret et al. 2021) via ``optax.contrib.sam``: ascend ``rho * g / |g|``, take the
    gradient there, apply ``optimizer``. ``update`` needs ``grad_fn(params, step) -> grads``."""
    adv = optax.chain(optax.contrib.normalize(), optax.sgd(rho))
    return optax.contrib.sam(optimizer, adv, sync_period=2, opaque_mode=True)


def path_labels(params, pred: Callable[[str], bool], yes: str, no: str):
    """Pytree of labels: ``yes`` where ``pred(keystr(path))``, else ``no`` (for multi_transform)."""
    return jax.tree_util.tree_map_with_path(
        lambda p, _: yes if pred(jax.tree_util.keystr(p)) else no, params)


def freeze(optimizer: optax.GradientTransformation, params, pred: Callable[[str], bool]):
    """``optimizer`` on every leaf except those whose path string satisfies ``pred`` (zeroed)."""
    del params  # labels are computed from the params optax passes (a callable module would be called)
    labels = lambda p: path_labels(p, pred, "frozen", "train")
    return optax.multi_transform({"train": optimizer, "frozen": optax.set_to_zero()}, labels)


def readout_pred(params) -> Callable[[str], bool]:
    """Path predicate for the readout of ``TaskGPT`` (``.readout``) or ``eqx.nn.MLP`` (last layer)."""
    last = f".layers[{len(params.layers) - 1}]" if hasattr(params, "layers") else ".readout"
    return lambda path: path.startswith(last) or path.startswith(".readout")


def scale_by_path(params, fn: Callable[[str], float]) -> optax.GradientTransformation:
    """Multiplies each leaf's update by ``fn(keystr(path))`` (per-layer learning-rate factors)."""
    scales = jax.tree_util.tree_map_with_path(lambda p, _: float(fn(jax.tree_util.keystr(p))), params)

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, s: u * s, updates, scales), state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def cosine(g1, g2) -> Array:
    """Cosine similarity ``[]`` of two gradient pytrees (flattened)."""
    a, _ = ravel_pytree(g1)
    b, _ = ravel_pytree(g2)
    return a @ b / jnp.maximum(jnp.linalg.norm(a) * jnp.linalg.norm(b), 1e-30)


def leaf_cosines(g1, g2) -> Array:
    """``[L]`` cosine similarity per leaf (layer weight / bias), in ``jax.tree.leaves`` order."""
    return jnp.stack([jnp.sum(a * b) / jnp.maximum(jnp.linalg.norm(a) * jnp.linalg.norm(b), 1e-30)
                      for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2))])
