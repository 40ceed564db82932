"""Per-domain loss tracker: segment sums of per-sequence losses by domain id (jittable).

Correct when the batch is sharded: ``jax.ops.segment_sum`` over the global batch array lets
XLA insert the cross-device reduction.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ado_jax.mixing.base import DomainStats


def domain_stats(loss_B: jax.Array, domain_B: jax.Array, num_domains: int, step) -> DomainStats:
    """Reduces per-sequence losses to per-domain sums and counts.

    Args:
      loss_B: [B] float — each sequence's mean token loss.
      domain_B: [B] int32 — each sequence's domain id in ``[0, num_domains)``.
      num_domains: D.
      step: [] int — the step these losses belong to.

    Returns:
      ``DomainStats`` with ``loss_sum: [D]`` and ``count: [D]``; non-finite losses are left out
      of both (they never reach a mixer).
    """
    loss_B = loss_B.astype(jnp.float32)
    ok_B = jnp.isfinite(loss_B)
    loss_sum_D = jax.ops.segment_sum(jnp.where(ok_B, loss_B, 0.0), domain_B, num_segments=num_domains)
    count_D = jax.ops.segment_sum(ok_B.astype(jnp.float32), domain_B, num_segments=num_domains)
    return DomainStats.create(loss_sum_D, count_D, step)
