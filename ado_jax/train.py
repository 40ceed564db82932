"""The train state and the single jitted, sharded train step (mixer and tracker inside).

``step(state, data) -> (state, metrics)``: ``data`` is a stream (``ado_jax.data.base``) whose pure
``data.next(state.stream_state, state.mixer_state.weights) -> (batch, stream_state)`` runs in
the step: an in-step stream such as ``InMemoryDomains`` samples there with the current mixture;
a batch drawn on the host arrives as ``FixedBatch(batch)``. The loop that drives it, through one
``Loader`` for either kind, lives in ``ado_jax.loop``.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ado_jax.mixing import tracker
from ado_jax.checkpoint import is_leaf_array
from ado_jax.config import ModelConfig, TrainConfig
from ado_jax.mixing import wants_heldout
from ado_jax.mixing.base import wants_grad_dot
from ado_jax.mixing.base import Mixer
from ado_jax.models.llama import Llama, sequence_losses
from ado_jax.optimizer import lr_schedule
from ado_jax.sharding import batch_sharding, tree_shardings

Array = jax.Array
# The train state's own tracker only keeps per-domain loss EMAs for logging (a mixer that needs a
# learning-curve history, like ADO, keeps its own); two history slots make it nearly free.
LOG_TRACKER = tracker.loss_tracker(ema_decay=0.9, history_len=2, skip_first=0, subsample_every=1)


class TrainState(eqx.Module):
    """Everything a run needs to continue exactly: checkpointed as a whole.

    Attributes:
      model: the Llama (float32 params).
      opt_state: ``ado_jax.optimizer.make_optimizer``'s state (AdamW, skipped steps counted).
      mixer_state: the mixer's pytree; ``mixer_state.weights: [D]`` is the next batch's mixture.
      tracker_state: per-domain loss EMAs (``ado_jax.mixing.tracker``).
      stream_state: the data stream's state (its PRNG key / position).
      step: [] int32, optimizer steps taken.
    """

    model: Llama
    opt_state: Any
    mixer_state: Any
    tracker_state: Any
    stream_state: Any
    step: Array


def init_state(model_cfg: ModelConfig, optimizer, mixer: Mixer, stream_state, num_domains: int,
               key: Array) -> TrainState:
    """A fresh TrainState (traceable: ``create_state`` runs it under jit with sharded outputs).

    ``model_cfg`` (with ``vocab_size`` resolved) shapes the Llama initialised from ``key``
    ([2] uint32); ``mixer.init(num_domains)`` gives ``mixer_state.weights: [D]``; ``stream_state``
    is the loader's fresh state (``Loader.init_state``)."""
    model = Llama(model_cfg, key)
    return TrainState(model=model, opt_state=optimizer.init(eqx.filter(model, eqx.is_array)),
                      mixer_state=mixer.init(num_domains), tracker_state=LOG_TRACKER.init(num_domains),
                      stream_state=stream_state, step=jnp.zeros((), jnp.int32))


def state_shardings(abstract_state, mesh):
    """NamedShardings for every array of a (possibly abstract) TrainState."""
    return tree_shardings(eqx.filter(abstract_state, is_leaf_array), mesh)


def create_state(model_cfg: ModelConfig, optimizer, mixer: Mixer, stream_state, num_domains: int, key: Array,
                 mesh):
    """``init_state``'s TrainState, initialised directly into its sharded layout on ``mesh`` (no
    full copy on one device)."""
    abstract = eqx.filter_eval_shape(init_state, model_cfg, optimizer, mixer, stream_state, num_domains, key)
    make = lambda k: eqx.filter(init_state(model_cfg, optimizer, mixer, stream_state, num_domains, k), eqx.is_array)
    arrays = jax.jit(make, out_shardings=state_shardings(abstract, mesh))(key)
    return eqx.combine(arrays, eqx.filter(abstract, is_leaf_array, inverse=True))


def _grads(params, static, batch: dict, grad_accum: int):
    """Mean loss, per-sequence losses ``[B]`` and gradients, over ``grad_accum`` micro-batches."""
    def loss_fn(p, mb):
        loss_B = sequence_losses(eqx.combine(p, static)(mb["inputs"]), mb["targets"], mb.get("mask"))
        return jnp.mean(loss_B), loss_B

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if grad_accum == 1:
        (loss, loss_B), grads = grad_fn(params, batch)
        return loss, loss_B, grads
    micro = jax.tree.map(lambda x: x.reshape(grad_accum, -1, *x.shape[1:]), batch)

    def body(acc, mb):
        (loss, loss_b), g = grad_fn(params, mb)
        return jax.tree.map(jnp.add, acc, g), (loss, loss_b)

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, (loss_A, loss_Ab) = jax.lax.scan(body, zeros, micro)
    return jnp.mean(loss_A), loss_Ab.reshape(-1), jax.tree.map(lambda g: g / grad_accum, grads)


def _domain_grads(params, static, batch: dict, grad_accum: int, num_domains: int):
    """``_grads``'s (loss, losses ``[B]``, mean gradient), plus ``grad_dot: [D, D]``, the inner
    products ``<g_i, g_j>`` of the per-domain mean gradients ``g_i`` (mean over domain i's
    sequences of the batch; 0 for a domain absent from it), for ``DomainStats.grad_dot`` (DoGE).

    One forward pass per micro-batch and D + 1 backward passes, all from one ``jax.vjp`` mapped
    over the cotangent rows (``lax.map``): row i selects domain i's sequences, row D is the batch
    mean (the update's gradient). Memory: D + 1 gradient-sized buffers."""
    size = batch["inputs"].shape[0]

    def per_micro(p, mb):
        loss_fn = lambda q: sequence_losses(eqx.combine(q, static)(mb["inputs"]), mb["targets"], mb.get("mask"))
        loss_b, vjp = jax.vjp(loss_fn, p)
        onehot_Db = jax.nn.one_hot(mb["domain"], num_domains, dtype=loss_b.dtype, axis=0)
        cot = jnp.concatenate([onehot_Db, jnp.full((1, loss_b.shape[0]), 1.0 / size, loss_b.dtype)])
        # lax.map, not vmap: jax.vmap of this vjp gave wrong rows (batch-mean gradient norm 0.34
        # instead of 0.17 for a [16, 64] batch of a 1-layer Llama; right at [12, 64] and [16, 32]),
        # so DoGE's proxy trained on a wrong gradient. A regression of jaxlib 0.10.2 on CPU (0.10.1
        # is right): experiments/jax_repro/ reproduces it without ado_jax; tests/test_doge.py pins it.
        # Same FLOPs; the D + 1 backward passes run one after another.
        return loss_b, jax.lax.map(lambda row: vjp(row)[0], cot)

    if grad_accum == 1:
        loss_B, sums = per_micro(params, batch)
    else:
        micro = jax.tree.map(lambda x: x.reshape(grad_accum, -1, *x.shape[1:]), batch)

        def body(acc, mb):
            loss_b, g = per_micro(params, mb)
            return jax.tree.map(jnp.add, acc, g), loss_b

        zeros = jax.tree.map(lambda x: jnp.zeros((num_domains + 1, *x.shape), x.dtype), params)
        sums, loss_Ab = jax.lax.scan(body, zeros, micro)
        loss_B = loss_Ab.reshape(-1)
    count_D = jax.ops.segment_sum(jnp.ones_like(loss_B), batch["domain"], num_segments=num_domains)
    scale_D = 1.0 / jnp.maximum(count_D, 1.0)
    grad_dot = sum(
        (lambda g: g @ g.T)(x[:num_domains].reshape(num_domains, -1).astype(jnp.float32) * scale_D[:, None])
        for x in jax.tree.leaves(sums))
    return jnp.mean(loss_B), loss_B, jax.tree.map(lambda x: x[num_domains], sums), grad_dot


def heldout_losses(model: Llama, batches: dict) -> Array:
    """Per-domain held-out loss ``[D]`` of ``model`` over fixed batches shaped ``[D, n, B, T]``."""
    def per_batch(_, mb):
        return None, jnp.mean(sequence_losses(model(mb["inputs"]), mb["targets"]))

    def per_domain(_, dom):
        return None, jnp.mean(jax.lax.scan(per_batch, None, dom)[1])

    return jax.lax.scan(per_domain, None, batches)[1]


def make_train_step(train_cfg: TrainConfig, optimizer, mixer: Mixer, mesh, shardings, num_domains: int):
    """Builds the jitted ``step(state, data, heldout=None) -> (state, metrics)``.

    ``train_cfg`` gives the learning-rate schedule (logged as ``lr``) and ``grad_accum``;
    ``shardings`` are the state's (``state_shardings``). ``data``: a stream whose pure
    ``data.next(state.stream_state, weights_D) -> (batch, stream_state)`` gives this step's
    batch (``inputs``/``targets`` int32[B, T], ``domain`` int32[B]) inside the step: an in-step
    stream (``InMemoryDomains``) samples with ``weights_D = state.mixer_state.weights``; a host
    batch comes as ``ado_jax.data.base.FixedBatch(batch)``, leaving the stream state as is.

    ``heldout``: fixed per-domain batches ``[D, n, B, T]``. When given, the updated model is
    evaluated on them inside the step, under ``lax.cond``, at the steps the mixer asks for
    (``wants_heldout(mixer_state)``: Aioli's LearnParams rounds, held-out DoReMi), and the losses
    reach the mixer as ``DomainStats.heldout_loss``; other steps skip the evaluation entirely.
    Likewise, a mixer whose state asks for gradient inner products (``wants_grad_dot``: DoGE)
    gets ``DomainStats.grad_dot [D, D]`` of this batch's per-domain mean gradients, computed
    under ``lax.cond`` (D + 1 backward passes) at the steps it asks; for any other mixer the
    step's program is unchanged.

    Metrics (device arrays): ``loss`` [], ``grad_norm`` [], ``lr`` [], ``skipped`` [] (1 when the
    gradient or update was not finite and therefore not applied), ``skipped_in_row`` [] (steps
    skipped in a row, this one included), ``domain_loss`` [D] (NaN where absent),
    ``domain_count`` [D], ``weights`` [D] (the mixture this batch was drawn with),
    ``heldout_eval`` [] (1 when held-out losses were evaluated this step).
    """
    schedule = lr_schedule(train_cfg)

    def step(data, heldout, state: TrainState):
        weights_D = state.mixer_state.weights
        batch, stream_state = data.next(state.stream_state, weights_D)
        batch = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, batch_sharding(mesh, x.ndim)), batch)
        params, static = eqx.partition(state.model, eqx.is_array)
        want_gd = wants_grad_dot(state.mixer_state)
        if want_gd is False:  # every mixer but DoGE: the step as it always was
            loss, loss_B, grads = _grads(params, static, batch, train_cfg.grad_accum)
        else:  # per-domain gradients only at the steps the mixer asks for them
            loss, loss_B, grads, grad_dot = jax.lax.cond(
                want_gd, lambda: _domain_grads(params, static, batch, train_cfg.grad_accum, num_domains),
                lambda: (*_grads(params, static, batch, train_cfg.grad_accum),
                         jnp.zeros((num_domains, num_domains), jnp.float32)))
        updates, opt_state = optimizer.update(grads, state.opt_state, params)
        model = eqx.combine(optax.apply_updates(params, updates), static)

        stats = tracker.domain_stats(loss_B, batch["domain"], num_domains, state.step)
        if want_gd is not False:
            stats = stats._replace(grad_dot=grad_dot)
        want = wants_heldout(state.mixer_state) if heldout is not None else False
        if want is not False:  # a mixer that can ask: evaluate under lax.cond only when it does
            held_D = jax.lax.cond(want, lambda: heldout_losses(model, heldout), lambda: jnp.zeros(num_domains))
            stats = stats._replace(heldout_loss=held_D, heldout_valid=want)
        _, mixer_state = mixer.update(stats, state.mixer_state)
        new_state = TrainState(model, opt_state, mixer_state, LOG_TRACKER.update(stats, state.tracker_state),
                               stream_state, state.step + 1)
        new_state = eqx.filter_shard(new_state, shardings)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step),
                   "skipped": (~opt_state.last_finite).astype(jnp.int32),
                   "skipped_in_row": opt_state.notfinite_count, "domain_loss": stats.mean_loss(),
                   "domain_count": stats.count, "weights": weights_D,
                   "domain_loss_ema": tracker.ema_loss(new_state.tracker_state),
                   "heldout_eval": jnp.asarray(want, jnp.int32),
                   **mixer.metrics(mixer_state)}
        return new_state, metrics

    # Donate the state but never the data or held-out batches: they are reused every step.
    jitted = eqx.filter_jit(lambda inputs, state: step(*inputs, state), donate="all-except-first")
    return lambda state, data, heldout=None: jitted((data, heldout), state)


# Jitted per-domain held-out loss: ``evaluate(model, batches) -> [D]`` over ``[D, n, B, T]`` batches.
evaluate = eqx.filter_jit(heldout_losses)
