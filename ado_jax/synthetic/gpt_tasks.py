"""A compact GPT-2-style causal transformer for the synthetic tasks (App. B of
"Lowering Data Diversity can Accelerate Training: Case Studies in Synthetic Tasks").

Differences from the paper's GPT-2 (HuggingFace) models, on purpose and documented in
docs/synthetic.md: no dropout, no weight tying, pre-LayerNorm blocks with learned absolute
positions (as GPT-2), Equinox-default (PyTorch-like) init instead of GPT-2's N(0, 0.02); sizes
are set per run (paper: ICL 256 x 12 layers x 8 heads; facts 192 x 6 x 6 — CPU runs use less).

Two input kinds:
* tokens (``vocab_size`` given): ``tokens [T] int32 -> logits [T, V]`` (fact memorization);
* continuous (``input_dim`` given): ``vectors [T, d] -> outputs [T, out_size]`` (ICL regression,
  where ``icl_predict`` interleaves ``[x_1, y_1, ...]`` and reads ``y_i`` off at ``x_i``).
The readout layer is the field ``readout`` (the frozen-readout intervention masks it).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

Array = jax.Array


class Block(eqx.Module):
    """Pre-LN causal self-attention + GELU MLP block on ``[T, E]``."""

    ln1: eqx.nn.LayerNorm
    qkv: eqx.nn.Linear
    proj: eqx.nn.Linear
    ln2: eqx.nn.LayerNorm
    fc: eqx.nn.Linear
    out: eqx.nn.Linear
    num_heads: int = eqx.field(static=True)

    def __init__(self, dim: int, num_heads: int, key: Array):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.ln1, self.ln2 = eqx.nn.LayerNorm(dim), eqx.nn.LayerNorm(dim)
        self.qkv = eqx.nn.Linear(dim, 3 * dim, key=k1)
        self.proj = eqx.nn.Linear(dim, dim, key=k2)
        self.fc = eqx.nn.Linear(dim, 4 * dim, key=k3)
        self.out = eqx.nn.Linear(4 * dim, dim, key=k4)
        self.num_heads = num_heads

    def __call__(self, x_TE: Array) -> Array:
        t, e = x_TE.shape
        h = self.num_heads
        q_THK, k_THK, v_THK = jnp.split(jax.vmap(self.qkv)(jax.vmap(self.ln1)(x_TE)), 3, axis=-1)
        q_THK, k_THK, v_THK = (a.reshape(t, h, e // h) for a in (q_THK, k_THK, v_THK))
        att_HTS = jnp.einsum("thk,shk->hts", q_THK, k_THK) / jnp.sqrt(e // h)
        att_HTS = jnp.where(jnp.tril(jnp.ones((t, t), bool))[None], att_HTS, -jnp.inf)
        y_TE = jnp.einsum("hts,shk->thk", jax.nn.softmax(att_HTS, axis=-1), v_THK).reshape(t, e)
        x_TE = x_TE + jax.vmap(self.proj)(y_TE)
        return x_TE + jax.vmap(self.out)(jax.nn.gelu(jax.vmap(self.fc)(jax.vmap(self.ln2)(x_TE))))


class TaskGPT(eqx.Module):
    """Causal transformer over tokens (``vocab_size``) or vectors (``input_dim``)."""

    embed: eqx.Module
    pos: Array
    blocks: list
    ln_f: eqx.nn.LayerNorm
    readout: eqx.nn.Linear
    tokens: bool = eqx.field(static=True)

    def __init__(self, key: Array, *, max_len: int, dim: int = 64, num_layers: int = 2,
                 num_heads: int = 4, vocab_size: int | None = None, input_dim: int | None = None,
                 out_size: int | None = None):
        if (vocab_size is None) == (input_dim is None):
            raise ValueError(f"give exactly one of vocab_size={vocab_size}, input_dim={input_dim}")
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        ke, kp, kb, kr = jax.random.split(key, 4)
        self.tokens = vocab_size is not None
        self.embed = (eqx.nn.Embedding(vocab_size, dim, key=ke) if self.tokens
                      else eqx.nn.Linear(input_dim, dim, key=ke))
        self.pos = 0.02 * jax.random.normal(kp, (max_len, dim))
        self.blocks = [Block(dim, num_heads, k) for k in jax.random.split(kb, num_layers)]
        self.ln_f = eqx.nn.LayerNorm(dim)
        out = out_size if out_size is not None else (vocab_size if self.tokens else 1)
        self.readout = eqx.nn.Linear(dim, out, key=kr)

    def __call__(self, x: Array) -> Array:
        """``tokens [T] int32`` or ``vectors [T, d]`` -> ``[T, out]``."""
        x_TE = jax.vmap(self.embed)(x) + self.pos[: x.shape[0]]
        for block in self.blocks:
            x_TE = block(x_TE)
        return jax.vmap(self.readout)(jax.vmap(self.ln_f)(x_TE))


def interleave(xs_ND: Array, ys_N: Array) -> Array:
    """``[x_1, y_1, ..., x_N, y_N]`` as ``[2N, d]``; each y right-padded with d - 1 zeros."""
    n, d = xs_ND.shape
    y_ND = jnp.zeros((n, d)).at[:, 0].set(ys_N)
    return jnp.stack([xs_ND, y_ND], axis=1).reshape(2 * n, d)


def icl_predict(model: TaskGPT, xs_ND: Array, ys_N: Array) -> Array:
    """``[N]`` predictions of ``y_i``, read at the position of ``x_i`` (causal: sees j < i)."""
    return model(interleave(xs_ND, ys_N))[0::2, 0]
