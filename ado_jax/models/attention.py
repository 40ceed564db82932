"""Causal attention kernels for the Llama (``ModelConfig.attention``, or a per-call override).

Shape names: B batch, T time, H query heads, K kv heads, G = H / K query heads per kv head,
E head dim; n blocks of b positions.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
ATTENTION = ("auto", "xla", "cudnn", "xla_blocks")
BLOCK = 64  # positions per query and key block of ``xla_blocks``


class SegmentMask(NamedTuple):
    """Which keys each query reads in rows that pack several sequences with shared prefixes
    (``ado_jax.harness.packing``): query t reads key s (s <= t, the kernel's causal mask) when
    ``group_BT[b, t] == group_BT[b, s]`` and key s is on the shared prefix
    (``segment_BT[b, s] == 0``) or on t's own branch (``segment_BT[b, s] == segment_BT[b, t]``).
    A group's tokens are contiguous and groups come in increasing order along a row; group -1 is
    padding. ``xla_blocks`` skips the key blocks no query of a block reads; the other kernels
    read ``dense()``."""

    group_BT: Array  # int [B, T]
    segment_BT: Array  # int [B, T]

    def dense(self) -> Array:
        """``[B, T, T]`` bool: the rule above (causal mask not included); padding reads padding."""
        g, s = self.group_BT, self.segment_BT
        key_segment = s[:, None, :]
        return (g[:, :, None] == g[:, None, :]) & ((key_segment == 0) | (key_segment == s[:, :, None]))


Kernel = Callable[..., Array]  # (q_BTHE, k_BTKE, v_BTKE, mask) -> [B, T, H, E]: a per-call kernel


def check_kind(kind: str) -> None:
    """ValueError naming ``kind`` unless it is one of ``ATTENTION`` (``config.validate`` checks
    ``model.attention`` with it before a run; ``attention`` at trace time)."""
    if kind not in ATTENTION:
        raise ValueError(f"model.attention={kind!r}: expected one of {ATTENTION}")


def attention(q_BTHE: Array, k_BTKE: Array, v_BTKE: Array, kind: str | Kernel = "auto",
              mask: Array | SegmentMask | None = None) -> Array:
    """[B, T, H, E] causal attention by ``jax.nn.dot_product_attention`` (GQA: its K kv heads
    are broadcast over the H query heads). ``mask`` (optional): a ``[B, T, T]`` bool array
    (query t may also read key s only where ``mask[b, t, s]``, AND-ed with the causal mask) or
    a ``SegmentMask``.

    ``kind``: ``"xla"``; ``"cudnn"`` (the fused cuDNN kernel, GPU and bfloat16/float16 only;
    raises where cuDNN does not support the shapes); ``"auto"``: cuDNN on a GPU backend in
    bfloat16/float16, falling back to XLA where cuDNN rejects the call (at trace time), else XLA;
    ``"xla_blocks"``: blocks of queries against only the key blocks they read, inference only
    (``attention_by_blocks``); or a kernel ``kind(q, k, v, mask)`` itself (the harness passes
    ``attention_by_blocks`` with its mesh's ``shards``).
    """
    if callable(kind):
        return kind(q_BTHE, k_BTKE, v_BTKE, mask)
    check_kind(kind)
    if kind == "xla_blocks":
        return attention_by_blocks(q_BTHE, k_BTKE, v_BTKE, mask)
    if isinstance(mask, SegmentMask):
        mask = mask.dense()
    mask = None if mask is None else mask[:, None]  # [B, 1, T, T]: every head
    attend = lambda impl: jax.nn.dot_product_attention(q_BTHE, k_BTKE, v_BTKE, mask=mask, is_causal=True,
                                                       implementation=impl)
    if kind == "auto":
        if jax.default_backend() == "gpu" and q_BTHE.dtype in (jnp.bfloat16, jnp.float16):
            try:
                return attend("cudnn")
            except (ValueError, NotImplementedError, RuntimeError, TypeError):
                return attend("xla")
        return attend("xla")
    return attend(kind)


def first_key_blocks(group_BT: Array, block: int) -> Array:
    """``[B, n]`` int: per row and query block i (of ``block`` positions; T a multiple of it), the
    first key block holding a token of the query block's first group (``SegmentMask``: groups
    contiguous and increasing along a row, -1 padding); ``i + 1`` for an all-padding block, which
    reads none. ``attention_by_blocks`` reads key blocks ``first..i`` of query block i."""
    B, T = group_BT.shape
    n = T // block
    never = jnp.iinfo(jnp.int32).max
    group_Bnb = group_BT.reshape(B, n, block)
    first_Bn = jnp.min(jnp.where(group_Bnb < 0, never, group_Bnb), axis=-1)  # never: all padding
    last_Bn = jnp.max(group_Bnb, axis=-1)
    earlier_nn = jnp.arange(n)[None, :] < jnp.arange(n)[:, None]  # [i, j]: j < i
    j0_Bn = jnp.sum(earlier_nn & (last_Bn[:, None, :] < first_Bn[:, :, None]), axis=-1)
    return jnp.where(first_Bn == never, jnp.arange(n) + 1, j0_Bn)


def attention_by_blocks(q_BTHE: Array, k_BTKE: Array, v_BTKE: Array, mask: Array | SegmentMask | None = None,
                        block: int = BLOCK, shards: int = 1) -> Array:
    """Causal attention ``[B, T, H, E]`` by blocks of ``block`` queries, each against only the
    key blocks it reads, with the online softmax of FlashAttention (Dao et al., "FlashAttention:
    Fast and Memory-Efficient Exact Attention with IO-Awareness", arXiv:2205.14135): the same
    numbers as ``attention(kind="xla")`` up to float rounding (1e-6 in float32).

    A query block reads the key blocks from the first that holds a token of its first group
    (``SegmentMask``; with no mask or a dense one, the row's first) up to its own: the upper
    triangle is skipped, and so are the other sequences of a packed row, row by row. On CPU a
    block's scores stay in cache; XLA's kernel writes the ``[B, H, T, T]`` scores out and passes
    over them at memory speed: 3.0x faster on a packed ``[32, 1024]`` batch of the harness
    benchmark, 1.9x on causal ``[32, 512]`` rows (``benchmarks/attention_bench.py``). Computes in
    float32 (a bfloat16 model's attention is the more exact for it).

    Inference only (its loops have data-dependent bounds: no reverse-mode gradient). A query
    that reads no key gets 0, and so does every query of a block that is all padding (group -1;
    where a block is partly padding, padding reads padding, as in ``SegmentMask.dense``).
    ``shards``: rows come in that many contiguous
    runs (the devices of a batch-sharded array), and each loop step takes one row of every run,
    so the rows stay where they are; those rows run in lockstep (each step reads the key blocks
    of any of them).
    """
    B, T, H, E = q_BTHE.shape
    K = k_BTKE.shape[2]
    G, b = H // K, block
    if B % shards:
        raise ValueError(f"shards={shards} must divide the batch of {B} rows")
    n = -(-T // b)
    pad = lambda x, value=0: jnp.pad(x, [(0, 0), (0, n * b - T)] + [(0, 0)] * (x.ndim - 2), constant_values=value)
    dense_BTT = None
    if isinstance(mask, SegmentMask):
        group_BT, segment_BT = mask
    else:
        group_BT = segment_BT = jnp.zeros((B, T), jnp.int32)
        if mask is not None:
            dense_BTT = jnp.pad(mask, [(0, 0), (0, n * b - T), (0, n * b - T)])
    group_BT, segment_BT = pad(group_BT, -1), pad(segment_BT)  # padding: no real query reads it

    j0_Bn = first_key_blocks(group_BT, b)

    # Head-major blocks, so that a step is two plain batched matmuls: [K, G*b, E] @ [K, E, b] @ [K, b, E].
    S, R = shards, B // shards
    q_SRnKQE = (q_BTHE * E ** -0.5).astype(jnp.float32)
    q_SRnKQE = pad(q_SRnKQE).reshape(S, R, n, b, K, G, E).transpose(0, 1, 2, 4, 5, 3, 6).reshape(S, R, n, K, G * b, E)
    kT_SRnKEb = pad(k_BTKE.astype(jnp.float32)).reshape(S, R, n, b, K, E).transpose(0, 1, 2, 4, 5, 3)
    v_SRnKbE = pad(v_BTKE.astype(jnp.float32)).reshape(S, R, n, b, K, E).transpose(0, 1, 2, 4, 3, 5)
    group_SRnb, segment_SRnb = group_BT.reshape(S, R, n, b), segment_BT.reshape(S, R, n, b)
    j0_SRn = j0_Bn.reshape(S, R, n)
    dense_SRnbT = None if dense_BTT is None else dense_BTT.reshape(S, R, n, b, n * b)

    def query_block(rows, r, i):
        """[K, G*b, E]: query block i of row r of ``rows`` (one run's arrays; a head's G*b queries
        are contiguous: head-major)."""
        q_RnKQE, kT_RnKEb, v_RnKbE, group_Rnb, segment_Rnb, j0_Rn, dense_RnbT = rows
        group_Q, segment_Q = jnp.tile(group_Rnb[r, i], G), jnp.tile(segment_Rnb[r, i], G)
        t_Q = jnp.tile(i * b + jnp.arange(b), G)

        def step(j, carry):
            max_KQ, sum_KQ, out_KQE = carry
            group_k, segment_k = group_Rnb[r, j], segment_Rnb[r, j]
            reads_Qk = ((group_Q[:, None] == group_k[None]) & (t_Q[:, None] >= j * b + jnp.arange(b)[None])
                        & ((segment_k[None] == 0) | (segment_k[None] == segment_Q[:, None])))
            if dense_RnbT is not None:
                reads_Qk &= jnp.tile(jax.lax.dynamic_slice_in_dim(dense_RnbT[r, i], j * b, b, axis=1), (G, 1))
            scores_KQk = jnp.where(reads_Qk, q_RnKQE[r, i] @ kT_RnKEb[r, j], -jnp.inf)
            new_max_KQ = jnp.maximum(max_KQ, jnp.max(scores_KQk, axis=-1))
            shift_KQ = jnp.where(new_max_KQ > -jnp.inf, new_max_KQ, 0.0)  # no key read yet: exp(-inf) = 0
            p_KQk = jnp.exp(scores_KQk - shift_KQ[..., None])
            rescale_KQ = jnp.exp(max_KQ - shift_KQ)
            return (new_max_KQ, sum_KQ * rescale_KQ + jnp.sum(p_KQk, axis=-1),
                    out_KQE * rescale_KQ[..., None] + p_KQk @ v_RnKbE[r, j])

        start = (jnp.full((K, G * b), -jnp.inf), jnp.zeros((K, G * b)), jnp.zeros((K, G * b, E)))
        _, sum_KQ, out_KQE = jax.lax.fori_loop(j0_Rn[r, i], i + 1, step, start)
        return jnp.where(sum_KQ[..., None] > 0, out_KQE / jnp.where(sum_KQ > 0, sum_KQ, 1.0)[..., None], 0.0)

    runs = (q_SRnKQE, kT_SRnKEb, v_SRnKbE, group_SRnb, segment_SRnb, j0_SRn, dense_SRnbT)

    def item(ri):
        r, i = ri // n, ri % n
        if S == 1:  # no vmap: its loop would run with a batched predicate
            return query_block(jax.tree.map(lambda x: x[0], runs), r, i)[None]
        return jax.vmap(query_block, in_axes=(0, None, None))(runs, r, i)

    out = jax.lax.map(item, jnp.arange(R * n))  # [R*n, S, K, G*b, E]
    out = out.reshape(R, n, S, K, G, b, E).transpose(2, 0, 1, 5, 3, 4, 6).reshape(B, n * b, H, E)
    return out[:, :T].astype(q_BTHE.dtype)
