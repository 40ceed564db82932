"""Builds the mixer a run's ``MixerConfig`` names (used by the CLI and the train loop)."""

from __future__ import annotations

import numpy as np

from ado_jax.mixing.base import Mixer

MIXERS = ("static", "natural", "balanced", "ado", "aioli", "doremi", "odm", "skill_it")


def build_mixer(mcfg, sizes_D, total_steps: int | None = None, seed: int = 0) -> Mixer:
    """Returns the configured ``Mixer`` for domains of sizes ``sizes_D: [D]`` (tokens per domain).

    ``total_steps``: the run's planned length (``train.decay_steps``), for round-based mixers;
    ``seed``: for mixers with randomness of their own (Aioli's interleaving order).
    """
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
    if mcfg.prior not in ("natural", "uniform"):
        raise ValueError(f"mixer.prior={mcfg.prior!r}: expected natural | uniform")
    prior = sizes_D / sizes_D.sum() if mcfg.prior == "natural" else None
    from ado_jax import mixing

    if mcfg.name == "aioli":
        if mcfg.variant not in ("full", "static", "diagonal"):
            raise ValueError(f"mixer.variant={mcfg.variant!r}: expected full | static | diagonal")
        return mixing.aioli(total_steps, rounds=mcfg.rounds, sweeps=mcfg.sweeps, delta=mcfg.delta,
                            eps=mcfg.aioli_eps, eta=mcfg.eta, gamma=None if mcfg.gamma < 0 else mcfg.gamma,
                            static=mcfg.variant == "static", diagonal=mcfg.variant == "diagonal",
                            init_steps=mcfg.init_steps or None, p_init=prior if mcfg.init_steps else None,
                            seed=seed)
    if mcfg.name == "doremi":
        if len(mcfg.reference_losses) != sizes_D.size:
            raise ValueError(f"mixer.reference_losses={mcfg.reference_losses}: doremi needs one reference loss per "
                             f"domain ({sizes_D.size}), e.g. the eval_loss of a run with --mixer balanced")
        return mixing.doremi(mcfg.reference_losses, eta=mcfg.doremi_eta, smoothing=mcfg.doremi_smoothing,
                             use_heldout=mcfg.use_heldout)
    if mcfg.name == "odm":
        return mixing.odm(reward=mcfg.odm_reward, alpha=mcfg.odm_alpha, p_init=prior)
    if mcfg.name == "skill_it":
        graph = np.asarray(mcfg.graph, np.float64)
        if graph.shape != (sizes_D.size, sizes_D.size):
            raise ValueError(f"mixer.graph has shape {graph.shape}: skill_it needs a [{sizes_D.size}, {sizes_D.size}] "
                             "skills graph (see ado_jax.mixing.skills_graph)")
        return mixing.skill_it(graph, total_steps, rounds=mcfg.rounds, eta=mcfg.eta, p_init=prior)
    raise ValueError(f"mixer.name={mcfg.name!r}: expected one of {MIXERS}")


def mixer_metrics(mixer_state) -> dict:
    """Per-domain quantities worth logging from a mixer's state (``[D]``, or ``[D, D]``).

    ADO states give each domain's fitted scaling law ``fit_alpha``, ``fit_beta``, ``fit_eps``
    (NaN before that domain's first fit). Aioli states give ``aioli_a_colsum`` [D] (column sums
    of the normalized Ā: how much training on j helps all domains) and ``aioli_A`` [D, D], the
    last estimated A per train step (row i: held-out domain, column j: trained-on domain; the
    loop logs a [D, D] metric only when it changes).
    """
    from ado_jax.mixing.ado import AdoState, fitted_values
    from ado_jax.mixing.aioli import AioliState

    if isinstance(mixer_state, AdoState):
        return {f"fit_{k}": v for k, v in fitted_values(mixer_state).items()}
    if isinstance(mixer_state, AioliState):  # how much training on j helps every domain (A's column sums)
        return {"aioli_a_colsum": mixer_state.a_bar.sum(axis=0), "aioli_A": mixer_state.a_raw}
    return {}
