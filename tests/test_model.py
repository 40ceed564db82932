"""The Llama model: shapes, tied embeddings, causality, GQA, remat and dtype options."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ado_jax.config import ModelConfig
from ado_jax.models.llama import Llama, count_params, flops_per_token, sequence_losses

CFG = ModelConfig(vocab_size=50, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, compute_dtype="float32",
                  remat="none", max_seq_len=64)


def _tokens(key, B=3, T=12, V=50):
    return jax.random.randint(key, (B, T), 0, V)


def test_logits_shape_and_stacked_layers():
    model = Llama(CFG, jax.random.PRNGKey(0))
    logits = model(_tokens(jax.random.PRNGKey(1)))
    assert logits.shape == (3, 12, 50) and logits.dtype == jnp.float32
    assert model.blocks.wq.shape == (2, 32, 32)
    assert model.blocks.wk.shape == (2, 32, 16)  # 2 kv heads x head dim 8: grouped-query attention


def test_tied_embedding_is_one_array_and_gets_both_gradients():
    tied = Llama(CFG, jax.random.PRNGKey(0))
    untied = Llama(dataclasses.replace(CFG, tie_embeddings=False), jax.random.PRNGKey(0))
    assert tied.unembed is None and untied.unembed.shape == (32, 50)
    assert count_params(untied) - count_params(tied) == 32 * 50
    toks = _tokens(jax.random.PRNGKey(1))
    # Only token 0..4 appear as inputs, yet every vocab row gets gradient through the output projection.
    toks = toks % 5
    g = eqx.filter_grad(lambda m: jnp.mean(sequence_losses(m(toks), toks)))(tied)
    assert np.all(np.abs(np.asarray(g.embed[10:])).sum(axis=1) > 0)


def test_causal_future_tokens_do_not_change_past_logits():
    model = Llama(dataclasses.replace(CFG, qk_norm=True), jax.random.PRNGKey(0))
    a = _tokens(jax.random.PRNGKey(1))
    b = a.at[:, 8:].set((a[:, 8:] + 7) % 50)
    la, lb = model(a), model(b)
    np.testing.assert_allclose(la[:, :8], lb[:, :8], rtol=1e-5, atol=1e-5)
    assert not np.allclose(la[:, 8:], lb[:, 8:])


@pytest.mark.parametrize("remat", ["full", "dots", "dots_no_batch"])
def test_remat_policies_give_same_gradients(remat):
    toks = _tokens(jax.random.PRNGKey(2))
    loss = lambda m: jnp.mean(sequence_losses(m(toks), toks))
    base = eqx.filter_grad(loss)(Llama(CFG, jax.random.PRNGKey(0)))
    other = eqx.filter_grad(loss)(Llama(dataclasses.replace(CFG, remat=remat), jax.random.PRNGKey(0)))
    for x, y in zip(jax.tree.leaves(base), jax.tree.leaves(other)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_bfloat16_compute_keeps_float32_params_and_close_loss():
    toks = _tokens(jax.random.PRNGKey(3))
    m32 = Llama(CFG, jax.random.PRNGKey(0))
    m16 = Llama(dataclasses.replace(CFG, compute_dtype="bfloat16"), jax.random.PRNGKey(0))
    assert m16.embed.dtype == jnp.float32
    l32 = sequence_losses(m32(toks), toks)
    l16 = sequence_losses(m16(toks), toks)
    assert l16.dtype == jnp.float32
    np.testing.assert_allclose(l16, l32, rtol=2e-2)


def test_sequence_losses_match_manual_cross_entropy_and_mask():
    logits = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 7))
    targets = jax.random.randint(jax.random.PRNGKey(1), (2, 5), 0, 7)
    p = np.exp(np.asarray(logits)) / np.exp(np.asarray(logits)).sum(-1, keepdims=True)
    nll = -np.log(np.take_along_axis(p, np.asarray(targets)[..., None], -1)[..., 0])
    np.testing.assert_allclose(sequence_losses(logits, targets), nll.mean(1), rtol=1e-5)
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    np.testing.assert_allclose(sequence_losses(logits, targets, mask)[0], nll[0, :2].mean(), rtol=1e-5)


def test_flops_per_token_counts_six_n():
    cfg = ModelConfig(vocab_size=50304, d_model=768, n_layers=12, n_heads=12, n_kv_heads=12, d_ff=3072)
    n_matmul = 12 * (4 * 768 * 768 + 3 * 768 * 3072) + 768 * 50304
    assert flops_per_token(cfg, 1024) == pytest.approx(6 * n_matmul + 6 * 12 * 2 * 1024 * 768)


def _reference_logits(model: Llama, tokens_BT) -> np.ndarray:
    """The Llama forward written out in float64 numpy, as Hugging Face's LlamaModel computes it
    (rotate-half RoPE, explicit causal softmax, GQA by repeating kv heads, SwiGLU)."""
    cfg = model.cfg
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), eqx.filter(model, eqx.is_array))
    B, T = tokens_BT.shape
    H, K = cfg.n_heads, cfg.n_kv_heads
    E = cfg.d_model // H

    def norm(x, w):
        return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + cfg.norm_eps) * w

    inv = 1.0 / cfg.rope_theta ** (np.arange(0, E, 2) / E)
    ang = np.arange(T)[:, None] * inv[None]
    sin, cos = np.sin(ang)[None, :, None], np.cos(ang)[None, :, None]

    def rope(x):
        x1, x2 = x[..., : E // 2], x[..., E // 2:]
        return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)

    x = p.embed[np.asarray(tokens_BT)]
    for layer in range(cfg.n_layers):
        w = jax.tree.map(lambda a: a[layer], p.blocks)
        h = norm(x, w.attn_norm)
        q = (h @ w.wq).reshape(B, T, H, E)
        k = (h @ w.wk).reshape(B, T, K, E)
        v = (h @ w.wv).reshape(B, T, K, E)
        if cfg.qk_norm:
            q, k = norm(q, w.q_norm), norm(k, w.k_norm)
        q, k = rope(q), rope(k)
        k, v = np.repeat(k, H // K, axis=2), np.repeat(v, H // K, axis=2)
        scores = np.einsum("bqhe,bkhe->bhqk", q, k) / np.sqrt(E)
        scores = np.where(np.tril(np.ones((T, T), bool)), scores, -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        x = x + np.einsum("bhqk,bkhe->bqhe", probs, v).reshape(B, T, -1) @ w.wo
        h = norm(x, w.mlp_norm)
        gate = h @ w.w_gate
        x = x + (gate / (1 + np.exp(-gate)) * (h @ w.w_up)) @ w.w_down
    out = p.embed.T if p.unembed is None else p.unembed
    return norm(x, p.final_norm) @ out


@pytest.mark.parametrize("qk_norm, tied", [(False, True), (True, False)])
def test_logits_match_a_reference_llama_forward(qk_norm, tied):
    cfg = dataclasses.replace(CFG, qk_norm=qk_norm, tie_embeddings=tied)
    model = Llama(cfg, jax.random.PRNGKey(3))
    tokens = _tokens(jax.random.PRNGKey(4))
    np.testing.assert_allclose(np.asarray(model(tokens)), _reference_logits(model, tokens), atol=1e-4, rtol=0)


def test_attention_kinds_agree_on_cpu_and_a_bad_kind_names_itself():
    toks = _tokens(jax.random.PRNGKey(3))
    base = Llama(CFG, jax.random.PRNGKey(0))(toks)               # "auto": XLA on CPU
    xla = Llama(dataclasses.replace(CFG, attention="xla"), jax.random.PRNGKey(0))(toks)
    np.testing.assert_array_equal(base, xla)
    with pytest.raises(ValueError, match="model.attention='flash'"):
        Llama(dataclasses.replace(CFG, attention="flash"), jax.random.PRNGKey(0))(toks)


def _packed_ids(rng, B, T):
    """``(group_BT, segment_BT)`` of rows packed as the harness packs them: contiguous groups of a
    prefix (segment 0) and 1-3 branches (segments 1, 2, ...), padding (-1) at the end."""
    group, segment = np.full((B, T), -1, np.int32), np.zeros((B, T), np.int32)
    for b in range(B):
        at, g = 0, 0
        while True:
            prefix, branches = int(rng.integers(3, 40)), rng.integers(1, 15, int(rng.integers(1, 4)))
            if at + prefix + branches.sum() > T - 3:
                break
            group[b, at:at + prefix], at = g, at + prefix
            for i, n in enumerate(branches, start=1):
                group[b, at:at + n], segment[b, at:at + n], at = g, i, at + n
            g += 1
    return jnp.asarray(group), jnp.asarray(segment)


@pytest.mark.parametrize("shards,block", [(1, 16), (2, 32), (3, 64)])
def test_attention_by_blocks_equals_xla_with_packed_dense_and_causal_masks(shards, block):
    from ado_jax.models import attention as attn

    B, T, H, K, E = 6, 100, 4, 2, 8  # T is no multiple of the block: the kernel pads
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    q = jax.random.normal(keys[0], (B, T, H, E))
    k, v = (jax.random.normal(x, (B, T, K, E)) for x in keys[1:3])
    packed = attn.SegmentMask(*_packed_ids(np.random.default_rng(shards), B, T))
    dense = jax.random.bernoulli(keys[3], 0.7, (B, T, T)) | jnp.eye(T, dtype=bool)
    dense = dense.at[0, 5].set(False)  # query 5 of row 0 reads no key: 0
    blocks = jax.jit(lambda q, k, v, m: attn.attention_by_blocks(q, k, v, m, block=block, shards=shards))
    real = np.asarray(packed.group_BT >= 0)  # padding: whatever it reads, never read by a real token
    reads = np.ones((B, T), bool)
    reads[0, 5] = False
    for mask, rows in ((packed, real), (dense, reads), (None, np.ones((B, T), bool))):
        want = attn.attention(q, k, v, "xla", mask)
        got = blocks(q, k, v, mask)
        assert np.isfinite(got).all()
        np.testing.assert_allclose(np.where(rows[..., None, None], got, 0), np.where(rows[..., None, None], want, 0),
                                   rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(blocks(q, k, v, dense)[0, 5], 0.0)
    # attention(kind="xla_blocks") is this kernel with its default block and one shard
    np.testing.assert_allclose(attn.attention(q, k, v, "xla_blocks", packed),
                               attn.attention_by_blocks(q, k, v, packed), rtol=1e-6, atol=1e-6)


def test_attention_by_blocks_keeps_batch_sharded_rows_on_their_devices():
    from ado_jax import sharding
    from ado_jax.config import MeshConfig
    from ado_jax.models import attention as attn
    from jax.sharding import NamedSharding, PartitionSpec as P

    mesh = sharding.make_mesh(MeshConfig(data=len(jax.devices())))
    B, T, H, E = 2 * mesh.size, 64, 2, 8
    rows = NamedSharding(mesh, P(sharding.BATCH_AXES))
    q, k, v = (jax.device_put(jax.random.normal(jax.random.PRNGKey(i), (B, T, H, E)), rows) for i in range(3))
    ids = jax.device_put(jnp.zeros((B, T), jnp.int32), rows)
    for shards, gathers in ((mesh.size, False), (1, True)):  # one row per device per step; else all rows everywhere
        f = jax.jit(lambda q, k, v, m: attn.attention_by_blocks(q, k, v, m, block=16, shards=shards))
        assert ("all-gather" in f.lower(q, k, v, attn.SegmentMask(ids, ids)).compile().as_text()) is gathers
    out = f(q, k, v, attn.SegmentMask(ids, ids))
    np.testing.assert_allclose(out, attn.attention(q, k, v, "xla"), rtol=1e-5, atol=1e-5)
