"""ADO's policy arithmetic as pure functions on [D] arrays.

From §3.2–3.3, Alg. 1 and App. C of "Adaptive Data Optimization: Dynamic Sample Selection with
Scaling Laws" (Jiang et al. 2024, arXiv:2410.11820; "ADO" below).

Kept apart from ``ado.py`` (state, fitting schedule) so each piece can be tested alone.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ado_jax.mixing.base import normalize


def clip_min_probability(p_D: jax.Array, min_prob: float) -> jax.Array:
    """The ADO paper's App. C Algorithm 2 ("Clip Minimum Probability"), as written.

    ``deficit = max(min_prob * D - sum p, 0)``; ``scaled = p * (1 - deficit) / sum p``;
    ``clipped = max(scaled, min_prob)``; return ``clipped / sum clipped``. On a simplex input
    the deficit is 0 (unless ``min_prob * D > 1``), so this floors at ``min_prob`` and
    renormalizes: entries can end slightly *below* ``min_prob`` after the renormalization (by a
    factor ``1 / sum clipped``). ``combinators.floor_probability`` is the exact floor.

    Args:
      p_D: [D] probabilities (projected with ``normalize`` first, so NaN/inf are safe).
      min_prob: delta_min in [0, 1].

    Returns:
      [D] float32 on the simplex.
    """
    p_D = normalize(p_D)
    d = p_D.shape[-1]
    deficit = jnp.maximum(min_prob * d - jnp.sum(p_D), 0.0)
    scaled_D = p_D * (1.0 - deficit) / jnp.sum(p_D)
    return normalize(jnp.maximum(scaled_D, min_prob))


def credit(h_D: jax.Array, s: float, variant: str) -> jax.Array:
    """Credit assignment lambda (eq. 2), unnormalized (only ratios matter in eq. 3).

    Args:
      h_D: [D] EMA of the policy (paper) or of the sampled fractions (reference).
      s: smoothing exponent (paper: 0.5).
      variant: "paper" / "reference": ``h^s`` (the reference's current code, commit bc3d8d0);
        "reference_v0": ``(h (1 - h))^s`` (the reference's first release, later reverted).

    Returns:
      [D] float32, >= 0.
    """
    h_D = jnp.clip(jnp.where(jnp.isfinite(h_D), h_D, 0.0), 0.0, 1.0)
    if variant == "reference_v0":
        h_D = h_D * (1.0 - h_D)
    return jnp.power(h_D, s)


def preference(params, n, mu_D: jax.Array, lambda_D: jax.Array,
               alpha_floor: float | None = None) -> jax.Array:
    """Preference distribution rho (eq. 3): ``rho_k ∝ mu_k lambda_k alpha_k (L_k(n) - eps_k) / n``.

    With ``L_k(n) - eps_k = beta_k n^-alpha_k`` it is computed in log space, so huge or tiny
    ``beta`` and ``n`` cannot overflow; the common ``1/n`` cancels in the normalization.

    Args:
      params: a fitted ``PowerLaw`` (``log_eps, log_beta, alpha``: [D]).
      n: [] total sequences seen so far (all domains).
      mu_D: [D] prior. lambda_D: [D] credit.
      alpha_floor: if set, ``alpha <- max(alpha, alpha_floor)`` (the reference uses 0.05).

    Returns:
      [D] float32 on the simplex (uniform if every score is 0 or non-finite).
    """
    alpha_D = params.alpha if alpha_floor is None else jnp.maximum(params.alpha, alpha_floor)
    alpha_D = jnp.maximum(alpha_D, 0.0)  # the fit's bounds are soft penalties; rho must be >= 0
    log_n = jnp.log(jnp.maximum(jnp.asarray(n, jnp.float32), 1.0))
    log_rho_D = (jnp.log(mu_D) + jnp.log(lambda_D) + jnp.log(alpha_D)
                 + params.log_beta - alpha_D * log_n)
    log_rho_D = jnp.where(jnp.isnan(log_rho_D), -jnp.inf, log_rho_D)
    top = jnp.max(log_rho_D)
    return normalize(jnp.exp(log_rho_D - jnp.where(jnp.isfinite(top), top, 0.0)))


def mix(rho_D: jax.Array, pibar_D: jax.Array, gamma2: float, delta_min: float, clip: str):
    """Policy (eq. 5 + App. C): returns ``(pi_D, rho_for_mean_D)``.

    "paper": ``pi = clip(gamma2 rho + (1 - gamma2) pibar, delta_min)`` and pibar averages rho.
    "reference": rho is clipped first, ``pi = gamma2 clip(rho) + (1 - gamma2) pibar`` (no clip
    after mixing), and pibar averages the clipped rho.
    """
    if clip == "reference":
        rho_D = clip_min_probability(rho_D, delta_min)
        return normalize(gamma2 * rho_D + (1.0 - gamma2) * pibar_D), rho_D
    return clip_min_probability(gamma2 * rho_D + (1.0 - gamma2) * pibar_D, delta_min), rho_D


def running_mean(pibar_D: jax.Array, rho_D: jax.Array, t) -> jax.Array:
    """Eq. 4: ``pibar(t) = rho(t) / (t + 1) + (1 - 1 / (t + 1)) pibar(t - 1)``; t: [] int >= 0."""
    w = 1.0 / (jnp.asarray(t, jnp.float32) + 1.0)
    return normalize(w * rho_D + (1.0 - w) * pibar_D)
