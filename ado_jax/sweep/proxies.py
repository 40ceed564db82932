"""K proxy runs as one stacked state, trained side by side in one jitted, vmapped step.

Each proxy is an ordinary static-mixture run (``ado_jax.train``): the same Llama, AdamW and
learning-rate schedule, its own model key, its own data key and its own mixture. Their states
are stacked on a leading ``K`` axis (``ProxyState``), and one ``eqx.filter_jit`` of an
``eqx.filter_vmap`` advances all of them: each proxy draws its batch from the shared in-memory
stream (``ado_jax.data.in_memory.InMemoryDomains.next``) with its own key and weights, takes the
gradient of its mean sequence loss and applies its own optimizer update. On several devices the
K axis is sharded over a one-axis mesh (``proxy``), so each device trains its slice of the
proxies; the token arrays are replicated. ``chunk`` sets how many proxies a device computes at
once: on CPU the default is one at a time (a ``lax.scan`` over the proxies inside the same
jitted step), because all K vmapped is ~1.3x slower there (benchmarks/sweep_bench.py says why);
on an accelerator all K at once.

Proxy ``k`` computes exactly what ``ado-jax train`` with ``mixer.name=static``,
``mixer.weights=mixtures[k]`` and ``train.seed=seeds[k]`` computes (up to float rounding: a
batched program may sum in another order); tests/test_sweep.py checks it.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ado_jax import train
from ado_jax.optimizer import lr_schedule
from ado_jax.checkpoint import is_leaf_array
from ado_jax.config import ModelConfig
from ado_jax.data.in_memory import StreamState
from ado_jax.models.llama import Llama, sequence_losses

Array = jax.Array
AXIS = "proxy"


class ProxyState(eqx.Module):
    """The stacked state of K proxies (every array has a leading ``K`` axis).

    Attributes:
      model: the K Llamas (each parameter ``[K, ...]``).
      opt_state: the K optimizer states (``ado_jax.optimizer.make_optimizer``'s, stacked).
      stream_state: ``StreamState(key [K, 2])``: each proxy's data PRNG key.
      weights: [K, D] float32, each proxy's mixture.
      step: [K] int32, optimizer steps taken (the same for every proxy).
    """

    model: Llama
    opt_state: object
    stream_state: StreamState
    weights: Array
    step: Array


def proxy_mesh(num_proxies: int, devices=None) -> Mesh:
    """A one-axis mesh ``("proxy",)`` over the most devices that divide ``num_proxies`` evenly."""
    devices = jax.devices() if devices is None else list(devices)
    n = max(d for d in range(1, len(devices) + 1) if num_proxies % d == 0)
    return Mesh(np.asarray(devices[:n]), (AXIS,))


def _shardings(tree, mesh: Mesh):
    """``NamedSharding`` with the leading (K) axis over ``proxy`` for every array leaf of ``tree``."""
    return jax.tree.map(lambda x: NamedSharding(mesh, P(AXIS, *([None] * (x.ndim - 1)))), tree)


def state_shardings(state: ProxyState, mesh: Mesh):
    """The shardings of every array of a (possibly abstract) ``ProxyState``, for restoring it."""
    return _shardings(eqx.filter(state, is_leaf_array), mesh)


def vmap_arrays(fn, tree):
    """``fn`` vmapped over the leading axis of every array of the pytree ``tree`` (its non-array
    leaves, and anything ``fn`` closes over, are shared); ``fn``'s output arrays get a leading
    axis, its non-array leaves are returned as they are."""
    arrays, static = eqx.partition(tree, eqx.is_array)
    out_static = []

    def inner(a):
        out_arrays, s = eqx.partition(fn(eqx.combine(a, static)), eqx.is_array)
        out_static.append(s)
        return out_arrays

    out = jax.vmap(inner)(arrays)
    return eqx.combine(out, out_static[-1])


def map_arrays(fn, tree, chunk: int, groups: int = 1):
    """``vmap_arrays(fn, tree)`` computed ``chunk`` proxies at a time: ``jax.lax.map`` over the
    leading (K) axis with ``batch_size=chunk`` (a ``lax.scan`` over chunks, each chunk vmapped).
    ``chunk`` >= K (or <= 0) is ``vmap_arrays`` itself. With ``groups`` > 1 (the K axis sharded
    over that many devices) the K axis is split ``[groups, K / groups]`` and the chunks run within
    each group, so every device maps over its own slice. The same per-proxy arithmetic as
    ``vmap_arrays``; only the batching differs (float rounding of a batched dot may)."""
    arrays, static = eqx.partition(tree, eqx.is_array)
    k = jax.tree.leaves(arrays)[0].shape[0]
    if chunk <= 0 or chunk >= k // groups:
        return vmap_arrays(fn, tree)
    out_static = []

    def inner(a):
        out_arrays, s = eqx.partition(fn(eqx.combine(a, static)), eqx.is_array)
        out_static.append(s)
        return out_arrays

    # chunk 1: a plain scan over the proxies, each step the ordinary (unbatched) program
    lmap = (lambda a: jax.lax.map(inner, a)) if chunk == 1 else (lambda a: jax.lax.map(inner, a, batch_size=chunk))
    if groups == 1:
        out = lmap(arrays)
    else:
        split = jax.tree.map(lambda x: x.reshape(groups, k // groups, *x.shape[1:]), arrays)
        out = jax.vmap(lmap)(split)
        out = jax.tree.map(lambda x: x.reshape(k, *x.shape[2:]), out)
    return eqx.combine(out, out_static[-1])


def default_chunk(num_proxies: int, backend: str | None = None) -> int:
    """The ``chunk`` of ``make_sweep_step`` when none is given: 1 on CPU (one proxy at a time in a
    scan: all K vmapped at once spills the caches and is ~1.3x slower there at K=16,
    benchmarks/sweep_bench.py), else all K at once (an accelerator wants the wide batch)."""
    backend = jax.default_backend() if backend is None else backend
    return 1 if backend == "cpu" else num_proxies


def init_proxies(model_cfg: ModelConfig, optimizer, seeds_K, weights_KD, mesh: Mesh) -> ProxyState:
    """K fresh proxies, initialised directly into their sharded layout on ``mesh``.

    Proxy ``k`` draws its model from ``key_model`` and its batches from ``key_data`` of
    ``jax.random.split(jax.random.PRNGKey(seeds_K[k]))``, as ``ado_jax.loop.run`` does for
    ``train.seed``. ``seeds_K``: [K] ints; ``weights_KD``: [K, D] mixtures (float32, on the simplex)."""
    keys_K2 = jnp.stack([jax.random.split(jax.random.PRNGKey(int(s))) for s in np.asarray(seeds_K)])
    weights_KD = jnp.asarray(weights_KD, jnp.float32)

    def one(keys, w_D):
        model = Llama(model_cfg, keys[0])
        return ProxyState(model, optimizer.init(eqx.filter(model, eqx.is_array)), StreamState(keys[1]), w_D,
                          jnp.zeros((), jnp.int32))

    make = lambda k, w: vmap_arrays(lambda kw: one(*kw), (k, w))
    abstract = eqx.filter_eval_shape(make, keys_K2, weights_KD)
    arrays = jax.jit(lambda k, w: eqx.filter(make(k, w), eqx.is_array),
                     out_shardings=state_shardings(abstract, mesh))(keys_K2, weights_KD)
    return eqx.combine(arrays, eqx.filter(abstract, is_leaf_array, inverse=True))


def _proxy_step(optimizer, schedule, data, state: ProxyState):
    """One proxy's step (run under vmap): its batch, gradient and update; ``(state, metrics)``."""
    batch, stream_state = data.next(state.stream_state, state.weights)
    params, static = eqx.partition(state.model, eqx.is_array)

    def loss_fn(p):
        return jnp.mean(sequence_losses(eqx.combine(p, static)(batch["inputs"]), batch["targets"], batch.get("mask")))

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, state.opt_state, params)
    model = eqx.combine(optax.apply_updates(params, updates), static)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step),
               "skipped": (~opt_state.last_finite).astype(jnp.int32)}
    return ProxyState(model, opt_state, stream_state, state.weights, state.step + 1), metrics


def make_sweep_step(train_cfg, optimizer, mesh: Mesh, shardings, chunk: int | None = None):
    """The jitted ``step(state, data) -> (state, metrics)`` over all K proxies.

    ``data``: the in-memory stream (``InMemoryDomains``), shared by the proxies (its arrays are
    arguments, not constants); ``shardings``: ``state_shardings(state, mesh)``; ``chunk``: how
    many proxies each device computes at once (``map_arrays``; 0 or >= K: all of them, one
    vmap; None: ``default_chunk``). Metrics: ``loss``, ``grad_norm``, ``lr``, ``skipped``, each
    ``[K]``. The state is donated."""
    if train_cfg.grad_accum != 1:
        raise ValueError(f"train.grad_accum={train_cfg.grad_accum}: a sweep's proxies take one micro-batch per step "
                         "(set train.grad_accum=1; lower train.batch_size if memory is short)")
    if chunk is not None and chunk < 0:
        raise ValueError(f"chunk={chunk}: expected >= 0 (0: all proxies at once)")
    schedule = lr_schedule(train_cfg)
    groups = mesh.devices.size

    def step(data, state):  # ``data`` (closed over) is broadcast to every proxy
        c = default_chunk(state.step.shape[0]) if chunk is None else chunk
        new_state, metrics = map_arrays(lambda s: _proxy_step(optimizer, schedule, data, s), state, c, groups)
        return eqx.filter_shard(new_state, shardings), metrics

    jitted = eqx.filter_jit(step, donate="all-except-first")  # the state is donated, never the data
    return lambda state, data: jitted(data, state)


def _heldout_all(state: ProxyState, batches: dict) -> Array:
    return vmap_arrays(lambda model: train.heldout_losses(model, batches), state.model)


# ``evaluate(state, batches) -> [K, M]``: every proxy's held-out loss over fixed ``[M, n, B, T]`` batches.
evaluate = eqx.filter_jit(_heldout_all)
