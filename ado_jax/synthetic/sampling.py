"""Drawing domain ids from mixture weights by inverse CDF (cheap for 50k domains)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sample_domains(key: jax.Array, weights_D: jax.Array, shape=()) -> jax.Array:
    """int32 ids of ``shape`` drawn from ``Categorical(weights_D)`` (unnormalized, >= 0).

    Inverse-CDF sampling: one uniform per draw and a binary search, instead of ``D`` Gumbels per
    draw (``jax.random.categorical``). Zero-weight domains are never drawn.
    """
    cdf_D = jnp.cumsum(jnp.maximum(jnp.asarray(weights_D, jnp.float32), 0.0))
    u = jax.random.uniform(key, shape) * cdf_D[-1]
    idx = jnp.searchsorted(cdf_D, u, side="right")
    return jnp.minimum(idx, cdf_D.shape[0] - 1).astype(jnp.int32)
