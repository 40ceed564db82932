"""A midGPT-style Llama: RMSNorm, rotary embeddings, SwiGLU, GQA, optional QK-norm.

Blocks are stacked (every weight has a leading ``[L]`` axis) and run with ``lax.scan`` under a
configurable ``jax.checkpoint`` policy. Parameters are stored in ``param_dtype`` (float32) and
cast to ``compute_dtype`` (bfloat16 by default) for the forward pass; the loss is in float32.

Shape names: B batch, T time, N = B*T rows, D d_model, H query heads, K kv heads, E head dim,
F ff width, V vocab, L layers.

Training calls ``model(tokens_BT)``: positions 0..T-1 and causal attention. The harness
(ado_jax/harness/packing.py) also passes per-token ``positions_BT`` and an attention mask, to
score several sequences that share a prefix in one row; neither changes the default path.
Greedy generation with a key/value cache is ``ado_jax.models.decode``.
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp

from ado_jax.models.attention import Kernel, SegmentMask, attention
from ado_jax.options import option

Array = jax.Array


@dataclasses.dataclass
class ModelConfig:
    """The Llama transformer's shape and numerics."""

    vocab_size: int = option(256, "vocabulary size; 0 = take it from the data (builtin bytes 256, corpus tokenizer)")
    d_model: int = option(64, "residual stream width")
    n_layers: int = option(2, "number of transformer blocks (stacked and scanned)")
    n_heads: int = option(4, "query heads")
    n_kv_heads: int = option(4, "key/value heads (grouped-query attention when < n_heads)")
    d_ff: int = option(0, "SwiGLU hidden width; 0 means 8/3*d_model rounded up to a multiple of 64")
    max_seq_len: int = option(2048, "longest sequence the rotary table covers")
    rope_theta: float = option(10000.0, "rotary embedding base")
    qk_norm: bool = option(False, "RMS-normalize queries and keys per head")
    tie_embeddings: bool = option(True, "share one [vocab, d_model] array for input embedding and output projection")
    norm_eps: float = option(1e-5, "RMSNorm epsilon")
    init_std: float = option(0.02, "stddev of the normal initialisation of weight matrices")
    param_dtype: str = option("float32", "dtype parameters are stored and updated in")
    compute_dtype: str = option("bfloat16", "dtype of activations and matmuls (float32 for exact CPU runs)")
    remat: str = option("full", "jax.checkpoint policy per block: none | full | dots | dots_no_batch")
    attention: str = option("auto", "attention kernel: auto (cuDNN's fused kernel on GPU in bfloat16/float16 where "
                                    "jax.nn.dot_product_attention offers it, else XLA) | xla | cudnn | xla_blocks "
                                    "(query blocks against only the key blocks they read; inference only: the "
                                    "harness uses it on CPU)")

    @property
    def ff_dim(self) -> int:
        """The SwiGLU hidden width F: ``d_ff``, or 8/3 * d_model rounded up to a multiple of 64."""
        return self.d_ff or 64 * math.ceil(8 * self.d_model / 3 / 64)


REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def rms_norm(x: Array, weight: Array, eps: float) -> Array:
    """RMSNorm over the last axis, computed in float32; returns x's dtype."""
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (x32 * weight.astype(jnp.float32)).astype(x.dtype)


def rotary_tables(seq_len: int | Array, head_dim: int, theta: float) -> tuple[Array, Array]:
    """Returns ``(sin, cos)``: each [T, E/2] float32 for positions 0..T-1 (``seq_len`` = T), or
    [B, T, E/2] for per-token positions (``seq_len`` an integer array ``positions_BT``)."""
    inv_freq_E = 1.0 / theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    pos = jnp.arange(seq_len, dtype=jnp.float32) if isinstance(seq_len, int) else seq_len.astype(jnp.float32)
    angles_TE = pos[..., None] * inv_freq_E[None, :]
    return jnp.sin(angles_TE), jnp.cos(angles_TE)


def apply_rotary(x_BTHE: Array, sin_TE: Array, cos_TE: Array) -> Array:
    """Rotates pairs (first half, second half) of the head dim by position-dependent angles
    (``rotary_tables``: [T, E/2] shared by every row, or [B, T, E/2] per row)."""
    x1, x2 = jnp.split(x_BTHE.astype(jnp.float32), 2, axis=-1)
    if sin_TE.ndim == 2:
        sin, cos = sin_TE[None, :, None, :], cos_TE[None, :, None, :]
    else:
        sin, cos = sin_TE[:, :, None, :], cos_TE[:, :, None, :]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BTHE.dtype)


class Block(eqx.Module):
    """One pre-norm transformer block's weights (stacked over L when inside ``Llama``)."""

    attn_norm: Array  # [D]
    wq: Array  # [D, H*E]
    wk: Array  # [D, K*E]
    wv: Array  # [D, K*E]
    wo: Array  # [H*E, D]
    q_norm: Array  # [E] (unused unless qk_norm)
    k_norm: Array  # [E]
    mlp_norm: Array  # [D]
    w_gate: Array  # [D, F]
    w_up: Array  # [D, F]
    w_down: Array  # [F, D]

    @staticmethod
    def init(cfg: ModelConfig, key: Array) -> "Block":
        d, e, f = cfg.d_model, cfg.d_model // cfg.n_heads, cfg.ff_dim
        dtype = jnp.dtype(cfg.param_dtype)
        ks = jax.random.split(key, 7)
        normal = lambda k, shape, std=cfg.init_std: (std * jax.random.normal(k, shape)).astype(dtype)
        out_std = cfg.init_std / (2 * cfg.n_layers) ** 0.5  # GPT-2 style scaled residual init
        ones = lambda n: jnp.ones((n,), dtype)
        return Block(
            attn_norm=ones(d), wq=normal(ks[0], (d, cfg.n_heads * e)), wk=normal(ks[1], (d, cfg.n_kv_heads * e)),
            wv=normal(ks[2], (d, cfg.n_kv_heads * e)), wo=normal(ks[3], (cfg.n_heads * e, d), out_std),
            q_norm=ones(e), k_norm=ones(e), mlp_norm=ones(d), w_gate=normal(ks[4], (d, f)),
            w_up=normal(ks[5], (d, f)), w_down=normal(ks[6], (f, d), out_std))

    def __call__(self, x_BTD: Array, sin_TE: Array, cos_TE: Array, cfg: ModelConfig,
                 mask_BTT: Array | SegmentMask | None = None, kind: str | Kernel | None = None) -> Array:
        q_BTHE, k_BTKE, v_BTKE = self.qkv(x_BTD, sin_TE, cos_TE, cfg)
        return self.finish(x_BTD, attention(q_BTHE, k_BTKE, v_BTKE, kind or cfg.attention, mask_BTT), cfg)

    def qkv(self, x_BTD: Array, sin_TE: Array, cos_TE: Array, cfg: ModelConfig) -> tuple[Array, Array, Array]:
        """The attention's inputs: queries ``[B, T, H, E]``, keys and values ``[B, T, K, E]``
        (normed and rotated; ``ado_jax.models.decode`` caches the keys and values)."""
        B, T, D = x_BTD.shape
        E = D // cfg.n_heads
        w = jax.tree.map(lambda a: a.astype(x_BTD.dtype), self)
        # Weight matmuls run on [N = B*T, D] rows: with 2-D operands the backward's weight
        # gradients (x^T g) contract over one row axis, and XLA needs no transpose + copy of the
        # activations to feed them (benchmarks/remat_bench.py; docs/training.md).
        h_ND = rms_norm(x_BTD, self.attn_norm, cfg.norm_eps).reshape(B * T, D)
        q_BTHE = (h_ND @ w.wq).reshape(B, T, cfg.n_heads, E)
        k_BTKE = (h_ND @ w.wk).reshape(B, T, cfg.n_kv_heads, E)
        v_BTKE = (h_ND @ w.wv).reshape(B, T, cfg.n_kv_heads, E)
        if cfg.qk_norm:
            q_BTHE = rms_norm(q_BTHE, self.q_norm, cfg.norm_eps)
            k_BTKE = rms_norm(k_BTKE, self.k_norm, cfg.norm_eps)
        return apply_rotary(q_BTHE, sin_TE, cos_TE), apply_rotary(k_BTKE, sin_TE, cos_TE), v_BTKE

    def finish(self, x_BTD: Array, attn_BTHE: Array, cfg: ModelConfig) -> Array:
        """The block's output ``[B, T, D]`` from its input and the attention's ``[B, T, H, E]``."""
        B, T, D = x_BTD.shape
        w = jax.tree.map(lambda a: a.astype(x_BTD.dtype), self)
        x_BTD = x_BTD + (attn_BTHE.reshape(B * T, D) @ w.wo).reshape(B, T, D)
        h_ND = rms_norm(x_BTD, self.mlp_norm, cfg.norm_eps).reshape(B * T, D)
        ff_NF = jax.nn.silu(h_ND @ w.w_gate) * (h_ND @ w.w_up)
        return x_BTD + (ff_NF @ w.w_down).reshape(B, T, D)


class Llama(eqx.Module):
    """The language model: ``model(tokens_BT) -> logits_BTV`` (float32)."""

    embed: Array  # [V, D]; also the output projection when tied
    blocks: Block  # every field stacked: [L, ...]
    final_norm: Array  # [D]
    unembed: Array | None  # [D, V] when untied, else None
    cfg: ModelConfig = eqx.field(static=True)

    def __init__(self, cfg: ModelConfig, key: Array):
        k_embed, k_blocks, k_out = jax.random.split(key, 3)
        dtype = jnp.dtype(cfg.param_dtype)
        self.cfg = cfg
        self.embed = (cfg.init_std * jax.random.normal(k_embed, (cfg.vocab_size, cfg.d_model))).astype(dtype)
        self.blocks = jax.vmap(lambda k: Block.init(cfg, k))(jax.random.split(k_blocks, cfg.n_layers))
        self.final_norm = jnp.ones((cfg.d_model,), dtype)
        self.unembed = None if cfg.tie_embeddings else (
            cfg.init_std * jax.random.normal(k_out, (cfg.d_model, cfg.vocab_size))).astype(dtype)

    def __call__(self, tokens_BT: Array, positions_BT: Array | None = None,
                 mask_BTT: Array | SegmentMask | None = None, attention: str | Kernel | None = None) -> Array:
        return self.logits(self.features(tokens_BT, positions_BT, mask_BTT, attention))

    def features(self, tokens_BT: Array, positions_BT: Array | None = None,
                 mask_BTT: Array | SegmentMask | None = None, attention: str | Kernel | None = None) -> Array:
        """The final RMS-normalized residual stream ``[B, T, D]`` (compute dtype) that the output
        projection reads: ``model(tokens) == model.logits(model.features(tokens))``.

        Optional: ``positions_BT`` (int) the rotary position of each token (default 0..T-1 in
        every row); ``mask_BTT`` (bool) which keys s each query t may read, AND-ed with the causal
        mask (default: the causal mask alone), or a ``SegmentMask`` (packed rows); ``attention`` a
        kernel name or function for this call in place of ``cfg.attention``
        (``ado_jax.models.attention``)."""
        cfg = self.cfg
        dt = jnp.dtype(cfg.compute_dtype)
        T = tokens_BT.shape[1]
        sin_TE, cos_TE = rotary_tables(T if positions_BT is None else positions_BT, cfg.d_model // cfg.n_heads,
                                       cfg.rope_theta)
        x_BTD = jnp.take(self.embed, tokens_BT, axis=0).astype(dt)

        def layer(x, block):
            return block(x, sin_TE, cos_TE, cfg, mask_BTT, attention), None

        policy = REMAT_POLICIES[cfg.remat]
        if cfg.remat != "none":
            layer = jax.checkpoint(layer, policy=policy)
        x_BTD, _ = jax.lax.scan(layer, x_BTD, self.blocks)
        return rms_norm(x_BTD, self.final_norm, cfg.norm_eps)

    def logits(self, x_BTD: Array) -> Array:
        """``[B, T, V]`` float32 logits of ``features`` rows ``x_BTD`` (any subset of positions:
        the harness projects only the positions it scores)."""
        B, T, D = x_BTD.shape
        out_DV = self.embed.T if self.unembed is None else self.unembed
        logits_NV = jnp.matmul(x_BTD.reshape(B * T, D), out_DV.astype(jnp.dtype(self.cfg.compute_dtype)),
                               preferred_element_type=jnp.float32)
        return logits_NV.reshape(B, T, -1)


def sequence_losses(logits_BTV: Array, targets_BT: Array, mask_BT: Array | None = None) -> Array:
    """Per-sequence mean next-token cross-entropy ``[B]`` float32 (what the tracker consumes)."""
    logp_BTV = jax.nn.log_softmax(logits_BTV.astype(jnp.float32), axis=-1)
    nll_BT = -jnp.take_along_axis(logp_BTV, targets_BT[..., None], axis=-1)[..., 0]
    if mask_BT is None:
        return jnp.mean(nll_BT, axis=-1)
    mask_BT = mask_BT.astype(jnp.float32)
    return jnp.sum(nll_BT * mask_BT, axis=-1) / jnp.maximum(jnp.sum(mask_BT, axis=-1), 1.0)


def count_params(model: Llama) -> int:
    """Number of parameters (the tied embedding counted once)."""
    return sum(x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_array)))


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward = 3x forward), PaLM-style with attention."""
    d, L, f, V = cfg.d_model, cfg.n_layers, cfg.ff_dim, cfg.vocab_size
    kv = cfg.n_kv_heads * (d // cfg.n_heads)
    matmul_params = L * (d * d * 2 + 2 * d * kv + 3 * d * f) + d * V
    attention = L * 2 * seq_len * d  # QK^T and AV, causal not discounted (as PaLM's MFU)
    return 6.0 * matmul_params + 6.0 * attention
