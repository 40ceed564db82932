"""Reference solutions and metrics for the synthetic tasks (eqs. 3 and 6 of
"Lowering Data Diversity can Accelerate Training: Case Studies in Synthetic Tasks").

All ICL estimators predict every position of a sequence from its *prefix*: the prediction for
``y_i`` uses ``(x_1, y_1) .. (x_{i-1}, y_{i-1})`` and ``x_i`` (prompt lengths 0..N-1, eq. 2).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array


def ridge_predict(xs_BND: Array, ys_BN: Array, noise_std: float = 1.0,
                  prior_cov_DD: Array | None = None) -> Array:
    """Posterior-mean predictions ``[B, N]`` for a Gaussian prior ``w ~ N(0, prior_cov)``.

    With ``prior_cov = tau^2 I`` this is ridge regression, eq. 3:
    ``w* = (X^T X + sigma^2 / tau^2 I)^-1 X^T y``; in general
    ``w* = (X^T X + sigma^2 Sigma^-1)^-1 X^T y`` (Bayes-optimal under squared loss).
    ``prior_cov_DD`` must be positive definite (``cov_beta < 1``); inputs ``xs: [B, N, d]``,
    ``ys: [B, N]``.
    """
    _, n, d = xs_BND.shape
    prior_cov_DD = jnp.eye(d) if prior_cov_DD is None else jnp.asarray(prior_cov_DD)
    reg_DD = noise_std ** 2 * jnp.linalg.inv(prior_cov_DD)
    mask_NN = jnp.tril(jnp.ones((n, n)), k=-1)  # row i: points j < i are visible

    def one(xs_ND, ys_N):
        def at(i):
            m_N = mask_NN[i]
            a_DD = jnp.einsum("n,nd,ne->de", m_N, xs_ND, xs_ND) + reg_DD
            w_D = jnp.linalg.solve(a_DD, jnp.einsum("n,nd,n->d", m_N, xs_ND, ys_N))
            return xs_ND[i] @ w_D
        return jax.vmap(at)(jnp.arange(n))

    return jax.vmap(one)(xs_BND, ys_BN)


def discrete_bayes_predict(xs_BND: Array, ys_BN: Array, pool_KD: Array, noise_std: float = 1.0,
                           prior_K: Array | None = None) -> Array:
    """Bayes-optimal predictions ``[B, N]`` when ``w`` is drawn from the finite pool (eq. 6).

    ``w*_i = sum_k p_k w_k phi((y_<i - X_<i w_k)/sigma) / sum_k p_k phi(...)``, with prior
    ``prior_K`` (uniform when None; a Zipf prior gives the Bayes estimator for §4.2's
    training distribution). Computed in log space with a cumulative sum over positions.
    """
    k = pool_KD.shape[0]
    prior_K = jnp.full((k,), 1.0 / k) if prior_K is None else jnp.asarray(prior_K, jnp.float32)
    preds_BNK = jnp.einsum("bnd,kd->bnk", xs_BND, pool_KD)
    sq_BNK = (ys_BN[:, :, None] - preds_BNK) ** 2 / (2.0 * noise_std ** 2)
    seen_BNK = jnp.cumsum(sq_BNK, axis=1) - sq_BNK  # exclusive prefix sums: points j < i
    logpost_BNK = jnp.log(jnp.maximum(prior_K, 1e-30))[None, None, :] - seen_BNK
    post_BNK = jax.nn.softmax(logpost_BNK, axis=-1)
    return jnp.sum(post_BNK * preds_BNK, axis=-1)


def mse(pred_BN: Array, ys_BN: Array) -> Array:
    """Mean squared error over all sequences and prompt lengths (eq. 2 up to a constant)."""
    return jnp.mean((pred_BN - ys_BN) ** 2)


def parity_accuracy(pred_B: Array, target_B: Array) -> Array:
    """Fraction of examples with ``sign(pred) == sign(target)`` (targets are +-1)."""
    return jnp.mean(jnp.sign(pred_B) == jnp.sign(target_B))


def fact_accuracy(logits_fn: Callable[[Array], Array], prompts_PT: Array, answers_P: Array) -> Array:
    """Exact-match accuracy of greedy decoding of the answer token over all (s, r) prompts.

    Args:
      logits_fn: ``tokens [P, T] -> logits [P, T, V]``.
      prompts_PT: int32 ``[P, T]`` = ``[s, r, n_1..n_k]`` (``Facts.all_pairs``).
      answers_P: int32 ``[P]`` ground-truth ``phi(s, r)``.

    The answer is a single token, so greedy decoding is the argmax at the last position.
    """
    pred_P = jnp.argmax(logits_fn(prompts_PT)[:, -1, :], axis=-1)
    return jnp.mean(pred_P == answers_P)
