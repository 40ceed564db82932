"""Causal attention kernels for the Llama (``ModelConfig.attention``, or a per-call override).

Shape names: B batch, T time, H query heads, K kv heads, E head dim.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
ATTENTION = ("auto", "xla", "cudnn", "xla_rows")
ROWS_SCORES_BYTES = 4 << 20  # the float32 scores one step of the ``xla_rows`` loop holds


def attention(q_BTHE: Array, k_BTKE: Array, v_BTKE: Array, kind: str = "auto", mask_BTT: Array | None = None) -> Array:
    """[B, T, H, E] causal attention by ``jax.nn.dot_product_attention`` (GQA: its K kv heads
    are broadcast over the H query heads). ``mask_BTT`` (bool, optional): query t may also read
    key s only where ``mask_BTT[b, t, s]`` (AND-ed with the causal mask).

    ``kind``: ``"xla"``; ``"cudnn"`` (the fused cuDNN kernel, GPU and bfloat16/float16 only;
    raises where cuDNN does not support the shapes); ``"auto"``: cuDNN on a GPU backend in
    bfloat16/float16, falling back to XLA where cuDNN rejects the call (at trace time), else XLA;
    ``"xla_rows"``: XLA in a loop over groups of rows (``attention_by_rows``), the same numbers.
    """
    if kind not in ATTENTION:
        raise ValueError(f"model.attention={kind!r}: expected one of {ATTENTION}")
    if kind == "xla_rows":
        return attention_by_rows(q_BTHE, k_BTKE, v_BTKE, mask_BTT)
    mask = None if mask_BTT is None else mask_BTT[:, None]  # [B, 1, T, T]: every head
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


def attention_by_rows(q_BTHE: Array, k_BTKE: Array, v_BTKE: Array, mask_BTT: Array | None = None) -> Array:
    """``attention(kind="xla")``, computed in a ``lax.map`` over groups of rows whose float32
    scores fit ``ROWS_SCORES_BYTES``; every row's numbers are the same to the bit.

    XLA:CPU writes the [B, H, T, T] scores out and passes over them several times (mask, max,
    exp, sum, normalize, the values' product), at memory speed once they outgrow the caches; a
    group's scores stay in cache. The harness scores long rows with it on CPU: 1.24x to
    1.40-1.58x the requests/s of lm-eval's hf backend (``benchmarks/harness_bench.py``). Not for
    training: the loop's backward made CPU train steps no faster (demo, gpt2-124m). Row
    ``j * groups + i`` goes to step ``i``, so rows sharded over devices stay sharded in every step.
    """
    B, T, H, _ = q_BTHE.shape
    per_step = max(1, ROWS_SCORES_BYTES // (H * T * k_BTKE.shape[1] * 4))
    groups = next(g for g in range(-(-B // per_step), B + 1) if B % g == 0)
    rows = lambda a: attention(a[0], a[1], a[2], "xla", a[3])  # each group: the xla kernel itself
    if groups == 1:
        return rows((q_BTHE, k_BTKE, v_BTKE, mask_BTT))
    split = lambda x: None if x is None else jnp.swapaxes(x.reshape(B // groups, groups, *x.shape[1:]), 0, 1)
    out = jax.lax.map(rows, (split(q_BTHE), split(k_BTKE), split(v_BTKE), split(mask_BTT)))
    return jnp.swapaxes(out, 0, 1).reshape(q_BTHE.shape)
