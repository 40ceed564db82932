"""Greedy generation with a key/value cache: ``prefill`` a batch of contexts once, then
``decode_step`` one token per row at a time, each attending to the cached keys and values instead
of running the whole sequence again (the harness's ``generate_until``, ``ado_jax.harness``).

Rows are right-padded: row b holds its context in slots ``0..lengths_B[b]-1`` and its next token
goes to slot ``lengths_B[b]``, at that rotary position, as in ``Llama.__call__``. Slots past a row's
length hold padding's keys until the row reaches them, and no query reads them: each query sees
the slots up to its own position. Both functions are pure and jit under ``eqx.filter_jit``.

Shape names as in ``ado_jax.models.llama``: B rows, S cache slots (the padded length), L layers,
K kv heads, E head dim, D d_model, V vocab.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ado_jax.models.attention import Kernel, attention
from ado_jax.models.llama import Llama, rms_norm, rotary_tables

Array = jax.Array


class KVCache(NamedTuple):
    """Every layer's rotated keys and its values, in the compute dtype."""

    k_LBSKE: Array
    v_LBSKE: Array


def prefill(model: Llama, tokens_BS: Array, lengths_B: Array,
            kind: str | Kernel | None = None) -> tuple[Array, KVCache]:
    """Runs ``model`` once over ``tokens_BS`` (int, right-padded; ``lengths_B`` int [B], each in
    ``1..S``), with the attention kernel ``kind`` (a name or a function; default
    ``model.cfg.attention``); returns the float32 logits ``[B, V]`` of each row's last token (at
    ``lengths_B - 1``: they choose the next token) and the cache of all S slots."""
    cfg = model.cfg
    S = tokens_BS.shape[1]
    sin_SE, cos_SE = rotary_tables(S, cfg.d_model // cfg.n_heads, cfg.rope_theta)
    x_BSD = jnp.take(model.embed, tokens_BS, axis=0).astype(jnp.dtype(cfg.compute_dtype))

    def layer(x_BSD, block):
        q_BSHE, k_BSKE, v_BSKE = block.qkv(x_BSD, sin_SE, cos_SE, cfg)
        return block.finish(x_BSD, attention(q_BSHE, k_BSKE, v_BSKE, kind or cfg.attention), cfg), (k_BSKE, v_BSKE)

    x_BSD, (k_LBSKE, v_LBSKE) = jax.lax.scan(layer, x_BSD, model.blocks)
    last_B1D = jnp.take_along_axis(x_BSD, (lengths_B - 1)[:, None, None], axis=1)
    logits_BV = model.logits(rms_norm(last_B1D, model.final_norm, cfg.norm_eps))[:, 0]
    return logits_BV, KVCache(k_LBSKE, v_LBSKE)


def decode_step(model: Llama, cache: KVCache, tokens_B: Array, positions_B: Array) -> tuple[Array, KVCache]:
    """Feeds one token per row (``tokens_B`` int [B]) at slot and rotary position ``positions_B``
    (int [B], each < S): its key and value are written to the cache there, and its query reads the
    slots ``0..positions_B[b]``. Returns the float32 logits ``[B, V]`` of the next token and the
    updated cache."""
    cfg = model.cfg
    S = cache.k_LBSKE.shape[2]
    rows_B = jnp.arange(tokens_B.shape[0])
    sin_B1E, cos_B1E = rotary_tables(positions_B[:, None], cfg.d_model // cfg.n_heads, cfg.rope_theta)
    x_B1D = jnp.take(model.embed, tokens_B[:, None], axis=0).astype(jnp.dtype(cfg.compute_dtype))
    visible_B11S = (jnp.arange(S)[None, :] <= positions_B[:, None])[:, None, None, :]

    def layer(x_B1D, inputs):
        block, k_BSKE, v_BSKE = inputs
        q_B1HE, k_B1KE, v_B1KE = block.qkv(x_B1D, sin_B1E, cos_B1E, cfg)
        k_BSKE = k_BSKE.at[rows_B, positions_B].set(k_B1KE[:, 0])
        v_BSKE = v_BSKE.at[rows_B, positions_B].set(v_B1KE[:, 0])
        # One query against S keys: no causal mask (it would align at slot 0), the visible slots instead.
        attn_B1HE = jax.nn.dot_product_attention(q_B1HE, k_BSKE, v_BSKE, mask=visible_B11S, implementation="xla")
        return block.finish(x_B1D, attn_B1HE, cfg), (k_BSKE, v_BSKE)

    x_B1D, (k_LBSKE, v_LBSKE) = jax.lax.scan(layer, x_B1D, (model.blocks, cache.k_LBSKE, cache.v_LBSKE))
    logits_BV = model.logits(rms_norm(x_B1D, model.final_norm, cfg.norm_eps))[:, 0]
    return logits_BV, KVCache(k_LBSKE, v_LBSKE)
