"""Builds the mixer a run's ``MixerConfig`` names (used by the CLI and the train loop)."""

from __future__ import annotations

import numpy as np

from ado_jax.mixing.base import Mixer

MIXERS = ("static", "natural", "balanced", "ado")


def build_mixer(mcfg, sizes_D) -> Mixer:
    """Returns the configured ``Mixer`` for domains of sizes ``sizes_D: [D]`` (tokens per domain)."""
    from ado_jax.mixing import basic

    sizes_D = np.asarray(sizes_D, np.float64)
    if mcfg.name == "static":
        if len(mcfg.weights) != sizes_D.size:
            raise ValueError(f"mixer.weights={mcfg.weights} must have one entry per domain ({sizes_D.size})")
        return basic.static(mcfg.weights)
    if mcfg.name == "natural":
        return basic.natural(sizes_D)
    if mcfg.name == "balanced":
        return basic.balanced()
    if mcfg.name == "ado":
        from ado_jax.mixing.ado import ado

        if mcfg.prior not in ("natural", "uniform"):
            raise ValueError(f"mixer.prior={mcfg.prior!r}: expected natural | uniform")
        prior = sizes_D / sizes_D.sum() if mcfg.prior == "natural" else None
        smoothing = None if mcfg.smoothing == "none" else mcfg.smoothing
        return ado(prior, gamma1=mcfg.gamma1, gamma2=mcfg.gamma2, s=mcfg.s, delta_min=mcfg.delta_min,
                   fit_every=mcfg.fit_every, fit_start=mcfg.fit_start, skip_first=mcfg.skip_first,
                   subsample_every=mcfg.subsample_every, history_len=mcfg.history_len, smoothing=smoothing,
                   credit=mcfg.credit, clip=mcfg.clip)
    raise ValueError(f"mixer.name={mcfg.name!r}: expected one of {MIXERS}")


def mixer_metrics(mixer_state) -> dict:
    """Per-domain quantities worth logging from a mixer's state (each ``[D]``).

    ADO states give each domain's fitted scaling law ``fit_alpha``, ``fit_beta``, ``fit_eps``
    (NaN before that domain's first fit).
    """
    from ado_jax.mixing.ado import AdoState, fitted_values

    if isinstance(mixer_state, AdoState):
        return {f"fit_{k}": v for k, v in fitted_values(mixer_state).items()}
    return {}
