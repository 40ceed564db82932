"""Data-uniformity selection: pick a subset with a large minimum pairwise distance.

"Data Uniformity Improves Training Efficiency and More, with a Convergence Framework Beyond the
NTK Regime" (arXiv:2506.24120) shows that a more uniform subset — a larger ``h_min``, the
smallest distance between two selected points — speeds up gradient descent, and selects data
"by maximizing pairwise distance". Exact max-min subset selection is NP-hard; we use greedy
farthest-point selection (Gonzalez), a 2-approximation of the optimal ``h_min``: start from one
point, repeatedly add the point farthest from the selected set. Works on any features
(embeddings, raw inputs, task vectors); the chosen indices become the training subset (uniform
weights over them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def h_min(features_NF: Array) -> Array:
    """Smallest Euclidean distance between two distinct rows of ``features_NF: [N, F]``."""
    if features_NF.shape[0] < 2:
        raise ValueError(f"h_min needs >= 2 points, got {features_NF.shape[0]}")
    d_NN = jnp.sqrt(jnp.maximum(_sq_dists(features_NF, features_NF), 0.0))
    return jnp.min(jnp.where(jnp.eye(d_NN.shape[0], dtype=bool), jnp.inf, d_NN))


def _sq_dists(a_NF: Array, b_MF: Array) -> Array:
    return (jnp.sum(a_NF ** 2, 1)[:, None] + jnp.sum(b_MF ** 2, 1)[None, :]
            - 2.0 * a_NF @ b_MF.T)


def max_min_select(features_NF: Array, m: int, first: int | Array = 0) -> Array:
    """Greedy farthest-point selection of ``m`` row indices ``[m]`` int32 (jittable, O(N m F)).

    Args:
      features_NF: ``[N, F]`` float features.
      m: subset size, ``1 <= m <= N``.
      first: index of the first point (e.g. random, from a key).
    Ties go to the lowest index. Returns indices in selection order.
    """
    n = features_NF.shape[0]
    if not 1 <= m <= n:
        raise ValueError(f"m must lie in [1, {n}], got {m}")
    x_NF = jnp.asarray(features_NF, jnp.float32)

    def body(i, carry):
        idx_M, mind_N = carry
        nxt = jnp.argmax(mind_N).astype(jnp.int32)
        d_N = jnp.sum((x_NF - x_NF[nxt]) ** 2, axis=1)
        return idx_M.at[i].set(nxt), jnp.minimum(mind_N, d_N)

    first = jnp.asarray(first, jnp.int32)
    idx_M = jnp.zeros((m,), jnp.int32).at[0].set(first)
    mind_N = jnp.sum((x_NF - x_NF[first]) ** 2, axis=1)
    idx_M, _ = jax.lax.fori_loop(1, m, body, (idx_M, mind_N))
    return idx_M


def selection_weights(num_domains: int, idx_M: Array) -> Array:
    """``[D]`` uniform weights over the selected domains ``idx_M`` (for ``stream.next``)."""
    w_D = jnp.zeros((num_domains,)).at[idx_M].set(1.0)
    return w_D / jnp.sum(w_D)
