"""Skill-It (Chen et al. 2023, "Skill-it! A data-driven skills framework for understanding and
training language models"), online data selection, as framed in the Aioli paper (Chen et al.
2024, "Aioli: A Unified Optimization Framework for Language Model Data Mixing", arXiv:2411.05735,
§3.3.2).

A skills graph ``A^SG [D, D]`` is learned beforehand from D extra runs, run j trained on
domain j only (Aioli paper, §3.3.2):

    A^SG_ij = (L^1_val,i(1_j) − L^{T+1}_val,i(1_j)) / L^1_val,i(1_j)

the relative decrease of domain i's validation loss when training on domain j (``skills_graph``
below; the Aioli paper prints the numerator as L^{T+1} − L^1 while calling it a decrease; we use
the positive decrease, as Skill-It does). Training then runs in ``rounds`` rounds; after each
round the mixture becomes (Skill-It Alg. 1, multiplicative weights over a window of w rounds)::

    p^{t+1}_j ∝ p^0_j exp(η Σ_{τ=t−w+1}^{t} Σ_i A^SG_ij L^τ_val,i)

With ``window=None`` the sum runs over all rounds, which is exactly Aioli's EGD form
``p^{t+1}_j ∝ p^t_j exp(η Σ_i A^SG_ij L^t_val,i)`` (Theorem 1, Prop. 1). Table 13's values:
T = 10 rounds, η = 0.2, window 3 (the default). The held-out losses are requested at the last
step of every round through ``state.wants_heldout`` (see ``ado_jax.mixing.aioli.wants_heldout``).
"""

from __future__ import annotations

import dataclasses

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ado_jax.mixing.registry import MixerConfig, option, prior_weights, register
from ado_jax.mixing.base import DomainStats, Mixer, check_int, check_num_domains, check_number, check_weights, normalize


class SkillItState(NamedTuple):
    """weights: [D] next mixture; losses: [W, D] last W rounds' held-out losses (ring buffer);
    filled: [W] bool which slots hold a loss; rounds_done: [] int32; step: [] int32;
    wants_heldout: [] bool."""

    weights: jax.Array
    losses: jax.Array
    filled: jax.Array
    rounds_done: jax.Array
    step: jax.Array
    wants_heldout: jax.Array


def skills_graph(loss_start, loss_end) -> np.ndarray:
    """The skills graph from D single-domain runs.

    Args:
      loss_start: [D_run, D] validation losses at the start of run j (row) on domain i
        (column); or [D] when all runs start from the same model.
      loss_end: [D_run, D] validation losses at the end of run j on domain i.

    Returns:
      [D, D] float32 ``A[i, j] = (start[j, i] − end[j, i]) / start[j, i]``.
    """
    end = np.asarray(loss_end, np.float64)
    if end.ndim != 2 or end.shape[0] != end.shape[1]:
        raise ValueError(f"loss_end must be [D, D] (run j, domain i), got shape {end.shape}")
    start = np.broadcast_to(np.asarray(loss_start, np.float64), end.shape)
    if not (np.all(np.isfinite(start)) and np.all(np.isfinite(end)) and np.all(start > 0)):
        raise ValueError("skills_graph needs finite losses and positive start losses")
    return ((start - end) / start).T.astype(np.float32)


def skill_it(graph, total_steps: int | None = None, *, rounds: int = 10, round_steps: int | None = None,
             eta: float = 0.2, window: int | None = 3, p_init=None) -> Mixer:
    """The Skill-It online mixer.

    Args:
      graph: [D, D] skills graph ``A^SG[i, j]`` (effect of training on j on domain i), e.g.
        from ``skills_graph``; must be finite.
      total_steps: train steps S, split into ``rounds`` rounds (or give ``round_steps``).
      rounds: T; after T rounds the last mixture is kept.
      eta: η.
      window: w rounds of losses in the exponent (None: all, = Aioli's EGD form).
      p_init: [D] p^0 (default uniform).
    """
    g_DD = np.asarray(graph, np.float32)
    if g_DD.ndim != 2 or g_DD.shape[0] != g_DD.shape[1] or not np.all(np.isfinite(g_DD)):
        raise ValueError(f"graph must be a finite [D, D] matrix, got shape {g_DD.shape}")
    d_graph = g_DD.shape[0]
    rounds = check_int("rounds", rounds, low=1)
    if round_steps is None:
        if total_steps is None:
            raise ValueError("skill_it needs total_steps or round_steps, got neither")
        round_steps = int(total_steps) // rounds
    round_steps = check_int("round_steps (total_steps // rounds)", round_steps, low=1)
    if window is not None:
        check_int("window (or None)", window, low=1)
    check_number("eta", eta, low=0.0, finite=True)
    slots = int(window) if window is not None else 1  # window None: one slot holds the running sum
    p0 = np.full((d_graph,), 1.0 / d_graph, np.float32) if p_init is None else check_weights(p_init, d_graph, "p_init")
    log_p0 = jnp.log(jnp.maximum(jnp.asarray(p0), 1e-30))

    def wants(step):
        return ((step + 1) % round_steps == 0) & ((step + 1) // round_steps <= rounds)

    def init(num_domains) -> SkillItState:
        d = check_num_domains(num_domains)
        if d != d_graph:
            raise ValueError(f"graph is [{d_graph}, {d_graph}] but init got num_domains={d}")
        zero = jnp.zeros((), jnp.int32)
        return SkillItState(jnp.asarray(p0), jnp.zeros((slots, d), jnp.float32), jnp.zeros((slots,), bool),
                            zero, zero, wants(zero))

    def update(stats: DomainStats, state: SkillItState):
        held_D = jnp.asarray(stats.heldout_loss, jnp.float32)
        ok = state.wants_heldout & stats.heldout_valid & jnp.all(jnp.isfinite(held_D))
        if window is None:
            losses = state.losses.at[0].add(jnp.where(ok, held_D, 0.0))
            filled = state.filled | ok
        else:
            slot = state.rounds_done % slots
            losses = state.losses.at[slot].set(jnp.where(ok, held_D, state.losses[slot]))
            filled = state.filled.at[slot].set(state.filled[slot] | ok)
        total_D = jnp.sum(jnp.where(filled[:, None], losses, 0.0), axis=0)
        logits = log_p0 + eta * (jnp.asarray(g_DD).T @ total_D)
        w = normalize(jnp.where(ok, jax.nn.softmax(logits), state.weights))
        step = state.step + 1
        return w, SkillItState(w, losses, filled, state.rounds_done + ok.astype(jnp.int32), step, wants(step))

    return Mixer(init, update)


@register("skill_it")
@dataclasses.dataclass
class SkillItConfig(MixerConfig):
    """Skill-It (arXiv:2307.14430): mirror descent over a skills graph, in rounds."""

    prior: str = option("natural", "initial mixture: natural | uniform")
    graph: list = option([], "[D, D] skills graph as a JSON list of rows (ado_jax.mixing.skills_graph)")
    rounds: int = option(20, "rounds T over train.decay_steps")
    eta: float = option(0.2, "exponentiated-gradient step size eta")

    def build(self, sizes_D, total_steps: int | None = None, seed: int = 0) -> Mixer:
        """The Skill-It mixer; ValueError unless ``graph`` is ``[D, D]`` for ``sizes_D: [D]``."""
        del seed
        graph = np.asarray(self.graph, np.float64)
        if graph.shape != (len(sizes_D), len(sizes_D)):
            raise ValueError(f"mixer.graph has shape {graph.shape}: skill_it needs a [{len(sizes_D)}, {len(sizes_D)}] "
                             "skills graph (see ado_jax.mixing.skills_graph)")
        return skill_it(graph, total_steps, rounds=self.rounds, eta=self.eta, p_init=prior_weights(self.prior, sizes_D))
