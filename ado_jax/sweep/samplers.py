"""Mixtures for a proxy sweep: RegMix's Dirichlet sampler, a simplex grid, a Dirichlet cover, or given rows.

Every sampler returns ``[K, D]`` float32 rows on the simplex and draws from an explicit JAX
PRNG key, so a sweep's mixtures are a function of its seed.

- ``regmix_mixtures``: the proxy-config sampler of "RegMix: Data Mixture as Regression for
  Language Model Pre-training" (Liu et al. 2024, arXiv:2407.01492, §3 and its released
  ``synthesize_mixture`` script): ``Dirichlet(alpha)`` with ``alpha = prior^0.5 / Σ prior^0.5 ×
  strength``, the strength drawn per row from a log-spaced set (``np.geomspace(0.1, 5, 15)``),
  weights below ``min_weight`` (2e-4) zeroed and the row renormalized, and rows rejected that
  would sample a domain beyond ``max_epochs`` epochs of its tokens in the proxy run.
- ``grid_mixtures`` / ``dirichlet_mixtures``: the grid search of "Aioli: A Unified Optimization
  Framework for Language Model Data Mixing" (Chen et al. 2024, arXiv:2411.05735, §6): the regular
  simplex grid, or Dirichlet(alpha · 1) draws when the grid is too large
  (``ado_jax.mixing.grid_search``).
- ``given_mixtures``: rows the user wrote, checked against the run's domain names.
"""

from __future__ import annotations

import jax
import numpy as np

from ado_jax.mixing.base import check_weights
from ado_jax.mixing.grid_search import dirichlet_points, simplex_grid

REGMIX_STRENGTHS = tuple(float(s) for s in np.geomspace(0.1, 5.0, 15))
SAMPLERS = ("regmix", "grid", "dirichlet", "given")


def _check_num(num) -> int:
    if int(num) != num or int(num) < 1:
        raise ValueError(f"number of proxies K={num!r}: must be an integer >= 1")
    return int(num)


def epoch_caps(sizes_D, run_tokens: float, max_epochs: float | None) -> np.ndarray:
    """``[D]`` the largest weight each domain may get: ``max_epochs × sizes_D / run_tokens``
    (capped at 1), so that ``weight × run_tokens`` never exceeds ``max_epochs`` passes over the
    domain's ``sizes_D`` tokens; all ones when ``max_epochs`` is None.

    Raises:
      ValueError: when the caps sum below 1 (no mixture can satisfy them), naming the values.
    """
    sizes = np.asarray(sizes_D, np.float64)
    if max_epochs is None:
        return np.ones_like(sizes)
    if not max_epochs > 0 or not run_tokens > 0:
        raise ValueError(f"max_epochs={max_epochs!r} and run tokens={run_tokens!r} must be > 0")
    caps = np.minimum(float(max_epochs) * sizes / float(run_tokens), 1.0)
    if caps.sum() < 1.0:
        raise ValueError(f"max_epochs={max_epochs}: the domains hold {sizes.sum():.0f} tokens, so {max_epochs} "
                         f"epochs ({max_epochs * sizes.sum():.0f}) cannot fill a proxy run of {run_tokens:.0f} "
                         "tokens; raise max_epochs or shorten the proxies")
    return caps


def regmix_mixtures(key, sizes_D, num: int, *, run_tokens: float, strengths=REGMIX_STRENGTHS,
                    temperature: float = 0.5, min_weight: float = 2e-4, max_epochs: float | None = 15.0,
                    max_tries: int = 1000) -> np.ndarray:
    """``[K, D]`` RegMix proxy mixtures (module doc), ``K = num``.

    Args:
      key: a JAX PRNG key ([2] uint32 or typed).
      sizes_D: [D] tokens per domain: the prior (the natural distribution) and the epoch cap.
      num: K, rows returned.
      run_tokens: tokens one proxy run trains on (``steps × batch_size × seq_len``).
      strengths: the Dirichlet strengths; each row draws one uniformly.
      temperature: the prior is raised to this power and renormalized (RegMix: 0.5).
      min_weight: entries below it are zeroed and the row renormalized (RegMix: 2e-4).
      max_epochs: no domain gets more than ``max_epochs`` passes over its tokens
        (``epoch_caps``); None disables the cap. RegMix used 15 over its corpus.
      max_tries: rounds of ``2K`` draws before giving up on a too-tight cap.
    """
    num = _check_num(num)
    prior = np.asarray(sizes_D, np.float64)
    if prior.ndim != 1 or prior.size == 0 or np.any(~np.isfinite(prior)) or np.any(prior <= 0):
        raise ValueError(f"domain sizes must be [D] positive and finite, got {np.asarray(sizes_D).tolist()}")
    caps = epoch_caps(prior, run_tokens, max_epochs)
    alpha_D = prior ** temperature
    alpha_D = alpha_D / alpha_D.sum()
    strengths_S = np.asarray(strengths, np.float64).reshape(-1)
    if strengths_S.size == 0 or np.any(strengths_S <= 0):
        raise ValueError(f"Dirichlet strengths must be positive, got {strengths_S.tolist()}")
    out, have = [], 0
    for _ in range(max_tries):
        key, k_s, k_d = jax.random.split(key, 3)
        s_N = strengths_S[np.asarray(jax.random.randint(k_s, (2 * num,), 0, strengths_S.size))]
        x_ND = np.asarray(jax.random.dirichlet(k_d, alpha_D[None, :] * s_N[:, None]), np.float64)
        x_ND = np.where(x_ND < min_weight, 0.0, x_ND)
        x_ND = x_ND[np.isfinite(x_ND).all(axis=1) & (x_ND.sum(axis=1) > 0)]
        x_ND = x_ND / x_ND.sum(axis=1, keepdims=True)
        x_ND = x_ND[np.all(x_ND <= caps[None, :] * (1 + 1e-6), axis=1)]  # renormalized rows must respect the cap
        out.append(x_ND)
        have += len(x_ND)
        if have >= num:
            return np.concatenate(out)[:num].astype(np.float32)
    raise ValueError(f"regmix sampler: only {have} of {num} draws respected the epoch cap (max_epochs={max_epochs}, "
                     f"caps {np.round(caps, 4).tolist()}) after {max_tries} rounds; raise max_epochs")


def grid_mixtures(num_domains: int, resolution: int) -> np.ndarray:
    """``[K, D]`` every mixture whose entries are multiples of ``1 / resolution`` (the Aioli
    paper's grid; ``K = C(resolution + D - 1, D - 1)``)."""
    return simplex_grid(num_domains, resolution, max_points=4096)


def dirichlet_mixtures(key, num_domains: int, num: int, alpha: float = 1.0) -> np.ndarray:
    """``[K, D]`` mixtures drawn from ``Dirichlet(alpha · 1)`` (a cover of the simplex where the grid is too large)."""
    return dirichlet_points(key, num_domains, _check_num(num), alpha)


def given_mixtures(rows, names) -> np.ndarray:
    """``[K, D]`` user mixtures, normalized: each row a list of ``D`` weights in ``names`` order, or a
    ``{domain: weight}`` dict (missing domains get 0).

    Raises:
      ValueError: naming the row with a wrong length, an unknown domain name, or a bad weight.
    """
    names = tuple(names)
    if not isinstance(rows, (list, tuple)) or not rows:
        raise ValueError(f"mixtures: expected a non-empty list of rows, got {rows!r}")
    out = []
    for k, row in enumerate(rows):
        if isinstance(row, dict):
            unknown = sorted(set(row) - set(names))
            if unknown:
                raise ValueError(f"mixture {k}: unknown domain(s) {unknown}; the sweep's domains are {list(names)}")
            row = [row.get(n, 0.0) for n in names]
        out.append(check_weights(row, len(names), name=f"mixture {k} {list(row)}"))
    return np.stack(out)


def sample(sampler: str, key, names, sizes_D, *, num: int, run_tokens: float, resolution: int = 4,
           alpha: float = 1.0, max_epochs: float | None = 15.0, rows=None) -> np.ndarray:
    """``[K, D]`` the sweep's mixtures from the sampler named ``sampler`` (one of ``SAMPLERS``).

    ``names``: the D domain names; ``sizes_D``: [D] tokens per domain; ``num``: K (regmix,
    dirichlet); ``resolution``: grid; ``alpha``: dirichlet; ``max_epochs``, ``run_tokens``:
    regmix's cap; ``rows``: the given mixtures."""
    if sampler == "regmix":
        return regmix_mixtures(key, sizes_D, num, run_tokens=run_tokens, max_epochs=max_epochs)
    if sampler == "grid":
        return grid_mixtures(len(names), resolution)
    if sampler == "dirichlet":
        return dirichlet_mixtures(key, len(names), num, alpha)
    if sampler == "given":
        return given_mixtures(rows, names)
    raise ValueError(f"sampler {sampler!r}: expected one of {', '.join(SAMPLERS)}")
