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
        return ado(prior, gamma1=mcfg.gamma1, gamma2=mcfg.gamma2, s=mcfg.s, delta_min=mcfg.delta_min,
                   fit_every=mcfg.fit_every, fit_start=mcfg.fit_start)
    raise ValueError(f"mixer.name={mcfg.name!r}: expected one of {MIXERS}")
