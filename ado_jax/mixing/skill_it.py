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

Without a graph (``graph=None``, the CLI's default) the graph is estimated from the run itself,
the Aioli paper's view of Skill-It as a method whose A comes from training on each domain. The run
first trains ``graph_warmup_steps`` on ``p_init`` (past the first steps' fast, shared drop), whose
last held-out loss is the baseline; then ``graph_sweeps`` sweeps of D segments of
``graph_segment_steps``, each segment trained on one domain alone, the domains of each sweep in a
seeded random order (as Aioli's LEARNPARAMS orders its segments). ``A^SG[:, j]`` is the relative
held-out drop over domain j's segments, averaged over the sweeps; the rounds then split the remaining
steps. This differs from Skill-It's D separate runs from one checkpoint: a segment starts where the
one before it ended, so segments early in the estimation see larger drops. A fixed order gives that
bias to the first domains (an earlier version did: on the known-answer ``noise`` suite the first
domain got 0.6-0.7 of the mixture); random orders over several sweeps spread it over the domains
and the warm-up shrinks it. The segments also cost the run: training on one domain alone at the
peak learning rate set the known-answer runs back by 0.06-0.25 nats at the end (docs/results.md).
Give ``graph`` (or ``mixer.graph_from=RUN``, a graph another run estimated) for the paper's
separate graph runs.
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
    wants_heldout: [] bool; graph: [D, D] the skills graph (estimated in the run, or given);
    base_loss: [D] held-out loss at the start of the current estimation segment."""

    weights: jax.Array
    losses: jax.Array
    filled: jax.Array
    rounds_done: jax.Array
    step: jax.Array
    wants_heldout: jax.Array
    graph: jax.Array
    base_loss: jax.Array


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


class SkillItSchedule(NamedTuple):
    """Steps of a Skill-It run with D domains: ``graph_steps`` estimating the graph (0 when
    given: ``warmup_steps`` + ``sweeps`` · D · ``segment_steps``), then ``rounds`` rounds of
    ``round_steps``."""

    graph_steps: int
    segment_steps: int
    rounds: int
    round_steps: int
    warmup_steps: int = 0
    sweeps: int = 0


def skill_it_schedule(d: int, total_steps: int | None, rounds: int, round_steps: int | None, estimate: bool,
                      segment_steps: int | None = None, graph_fraction: float = 0.1, sweeps: int = 2,
                      warmup_steps: int | None = None, warmup_fraction: float = 0.1) -> SkillItSchedule:
    """The schedule for ``d`` domains. Estimating with sizes left to their defaults, a budget too
    small for them gets fewer sweeps, then a shorter warm-up (down to 1 and 1); ``rounds`` is lowered
    to the steps left after the estimation (at least one step a round). ValueError naming the
    smallest ``total_steps`` that fits."""
    seg = warm = 0
    if estimate:
        if total_steps is None and (segment_steps is None or warmup_steps is None):
            raise ValueError("skill_it estimating its graph needs total_steps, or graph_segment_steps and "
                             "graph_warmup_steps")
        sweeps = check_int("graph_sweeps", sweeps, low=1)
        warm = check_int("graph_warmup_steps", warmup_steps if warmup_steps is not None
                         else max(1, int(warmup_fraction * total_steps)), low=1)
        seg = check_int("graph_segment_steps", segment_steps if segment_steps is not None
                        else max(1, int(graph_fraction * total_steps / (d * sweeps))), low=1)
        if total_steps is not None and warm + sweeps * d * seg >= total_steps:  # too small: fewer sweeps, warm-up
            if segment_steps is None:
                sweeps = max(1, (int(total_steps) - 1 - warm) // (d * seg))
            if warmup_steps is None:
                warm = max(1, min(warm, int(total_steps) - 1 - sweeps * d * seg))
    graph_steps = warm + sweeps * d * seg if estimate else 0
    if round_steps is None:
        if total_steps is None:
            raise ValueError("skill_it needs total_steps or round_steps, got neither")
        left = int(total_steps) - graph_steps
        if left < 1:
            raise ValueError(f"skill_it estimating a [{d}, {d}] skills graph needs total_steps >= {graph_steps + 1} "
                             f"(warm-up + sweeps*D*graph_segment_steps = {graph_steps} to estimate, then a round), "
                             f"got {total_steps}: raise train.decay_steps or give mixer.graph")
        rounds = min(rounds, left)
        round_steps = left // rounds
    return SkillItSchedule(graph_steps, seg, rounds, check_int("round_steps", round_steps, low=1), warm,
                           sweeps if estimate else 0)


def skill_it(graph=None, total_steps: int | None = None, *, rounds: int = 10, round_steps: int | None = None,
             eta: float = 0.2, window: int | None = 3, p_init=None, graph_segment_steps: int | None = None,
             graph_fraction: float = 0.1, graph_sweeps: int = 2, graph_warmup_steps: int | None = None,
             graph_warmup_fraction: float = 0.1, seed: int = 0) -> Mixer:
    """The Skill-It online mixer.

    Args:
      graph: [D, D] skills graph ``A^SG[i, j]`` (effect of training on j on domain i), e.g.
        from ``skills_graph``; must be finite. None: estimated in the run (module docstring).
      total_steps: train steps S, split into ``rounds`` rounds (or give ``round_steps``), after
        the estimation when there is one.
      rounds: T; after T rounds the last mixture is kept. Lowered to the steps left when fewer.
      eta: η.
      window: w rounds of losses in the exponent (None: all, = Aioli's EGD form).
      p_init: [D] p^0 (default uniform).
      graph_segment_steps: steps of one segment when estimating (default ``graph_fraction · S /
        (D · graph_sweeps)``, ≥ 1).
      graph_fraction: share of S spent in the segments, when ``graph_segment_steps`` is None.
      graph_sweeps: sweeps over the D domains when estimating, each in a random order; column j
        is the mean of its sweeps' drops. Lowered (to 1) when the defaults do not fit S.
      graph_warmup_steps: steps on ``p_init`` before the segments (default
        ``graph_warmup_fraction · S``, ≥ 1; the first is step 0).
      graph_warmup_fraction: share of S in the warm-up, when ``graph_warmup_steps`` is None.
      seed: seeds the segments' domain orders.
    """
    estimate = graph is None
    g_DD = None
    if not estimate:
        g_DD = np.asarray(graph, np.float32)
        if g_DD.ndim != 2 or g_DD.shape[0] != g_DD.shape[1] or not np.all(np.isfinite(g_DD)):
            raise ValueError(f"graph must be a finite [D, D] matrix, got shape {g_DD.shape}")
    rounds = check_int("rounds", rounds, low=1)
    if window is not None:
        check_int("window (or None)", window, low=1)
    check_number("eta", eta, low=0.0, finite=True)
    check_number("graph_fraction", graph_fraction, low=0.0, finite=True)
    check_number("graph_warmup_fraction", graph_warmup_fraction, low=0.0, finite=True)
    slots = int(window) if window is not None else 1  # window None: one slot holds the running sum
    p_init = None if p_init is None else np.asarray(p_init, np.float32)
    if g_DD is not None:  # fail at construction when the sizes are known
        skill_it_schedule(g_DD.shape[0], total_steps, rounds, round_steps, False)
        if p_init is not None:
            check_weights(p_init, g_DD.shape[0], "p_init")

    def schedule(d) -> SkillItSchedule:
        return skill_it_schedule(d, total_steps, rounds, round_steps, estimate, graph_segment_steps, graph_fraction,
                                 graph_sweeps, graph_warmup_steps, graph_warmup_fraction)

    def order(d, sch):  # [sweeps * D] the domain of each segment: a seeded permutation per sweep
        rng = np.random.default_rng(seed)
        return jnp.asarray(np.concatenate([rng.permutation(d) for _ in range(max(sch.sweeps, 1))]), jnp.int32)

    def segment_domain(step, d, sch):
        s = jnp.clip((step - sch.warmup_steps) // max(sch.segment_steps, 1), 0, max(sch.sweeps, 1) * d - 1)
        return order(d, sch)[s]

    def prior(d):
        p0 = np.full((d,), 1.0 / d, np.float32) if p_init is None else check_weights(p_init, d, "p_init")
        return jnp.asarray(p0, jnp.float32)

    def in_segments(step, sch):  # steps trained on one domain alone while estimating
        return (step >= sch.warmup_steps) & (step < sch.graph_steps)

    def round_end(step, sch):
        rel = step + 1 - sch.graph_steps
        return (rel > 0) & (rel % sch.round_steps == 0) & (rel // sch.round_steps <= sch.rounds)

    def wants(step, sch):
        seg_end = in_segments(step, sch) & ((step - sch.warmup_steps + 1) % max(sch.segment_steps, 1) == 0)
        return (estimate & ((step == sch.warmup_steps - 1) | seg_end)) | round_end(step, sch)

    def next_weights(step, p_D, sch):
        d = p_D.shape[0]
        one_hot = jax.nn.one_hot(segment_domain(step, d, sch), d, dtype=jnp.float32)
        return jnp.where(in_segments(step, sch), one_hot, p_D)

    def init(num_domains) -> SkillItState:
        d = check_num_domains(num_domains)
        if g_DD is not None and d != g_DD.shape[0]:
            raise ValueError(f"graph is [{g_DD.shape[0]}, {g_DD.shape[0]}] but init got num_domains={d}")
        sch = schedule(d)
        zero = jnp.zeros((), jnp.int32)
        graph0 = jnp.zeros((d, d), jnp.float32) if g_DD is None else jnp.asarray(g_DD)
        return SkillItState(next_weights(zero, prior(d), sch), jnp.zeros((slots, d), jnp.float32),
                            jnp.zeros((slots,), bool), zero, zero, wants(zero, sch), graph0,
                            jnp.zeros((d,), jnp.float32))

    def update(stats: DomainStats, state: SkillItState):
        d = state.weights.shape[0]
        sch = schedule(d)
        step = state.step
        held_D = jnp.asarray(stats.heldout_loss, jnp.float32)
        meas_ok = state.wants_heldout & stats.heldout_valid & jnp.all(jnp.isfinite(held_D))
        graph, base = state.graph, state.base_loss
        if estimate:  # a segment on domain j ends: its relative held-out drop is 1/sweeps of column j
            seg_ok = meas_ok & in_segments(step, sch) & jnp.all(base > 0)
            drop_D = (base - held_D) / jnp.maximum(base, 1e-30) / sch.sweeps
            graph = graph.at[:, segment_domain(step, d, sch)].add(jnp.where(seg_ok, drop_D, 0.0))
            base = jnp.where(meas_ok, held_D, base)
        graph_done = estimate & (step + 1 == sch.graph_steps)  # the last segment's loss is round 0's
        ok = meas_ok & (round_end(step, sch) | graph_done)
        if window is None:
            losses = state.losses.at[0].add(jnp.where(ok, held_D, 0.0))
            filled = state.filled | ok
        else:
            slot = state.rounds_done % slots
            losses = state.losses.at[slot].set(jnp.where(ok, held_D, state.losses[slot]))
            filled = state.filled.at[slot].set(state.filled[slot] | ok)
        total_D = jnp.sum(jnp.where(filled[:, None], losses, 0.0), axis=0)
        p0 = prior(d)
        logits = jnp.log(jnp.maximum(p0, 1e-30)) + eta * (graph.T @ total_D)
        p_D = jnp.where(ok, jax.nn.softmax(logits), jnp.where(graph_done, p0, state.weights))
        nxt = step + 1
        w = normalize(next_weights(nxt, p_D, sch))
        return w, SkillItState(w, losses, filled, state.rounds_done + ok.astype(jnp.int32), nxt, wants(nxt, sch),
                               graph, base)

    return Mixer(init, update, skill_it_metrics)


def skill_it_metrics(state: SkillItState) -> dict:
    """What the train loop logs: ``skills_graph`` [D, D] (written when it changes), the graph a
    later run reads with ``mixer.graph_from``."""
    return {"skills_graph": state.graph}


@register("skill_it")
@dataclasses.dataclass
class SkillItConfig(MixerConfig):
    """Skill-It (arXiv:2307.14430): mirror descent over a skills graph, in rounds. The graph:
    ``graph`` typed in, else the last ``skills_graph`` logged by the run at ``graph_from``, else
    estimated in this run (after a warm-up of ``graph_warmup`` of the steps, ``graph_fraction`` of
    them in segments on one domain alone)."""

    prior: str = option("natural", "initial mixture: natural | uniform")
    graph: list = option([], "[D, D] skills graph as a JSON list of rows (ado_jax.mixing.skills_graph); empty: "
                             "from graph_from, else estimated in the run")
    graph_from: str = option("", "run directory (local or gs://) whose last logged skills_graph is the graph "
                                 "(matched by domain name)")
    graph_fraction: float = option(0.1, "share of train.decay_steps spent in the graph's estimation segments "
                                        "(graph_sweeps x one segment per domain, trained on that domain alone)")
    graph_sweeps: int = option(2, "sweeps over the domains when estimating the graph, each in a seeded random "
                                  "order (lowered to fit a small budget)")
    graph_warmup: float = option(0.1, "share of train.decay_steps trained on the prior before estimating the graph "
                                      "(at least 1 step)")
    rounds: int = option(20, "rounds T over train.decay_steps (after the estimation; lowered when fewer steps "
                             "are left)")
    eta: float = option(0.2, "exponentiated-gradient step size eta")

    def resolve(self, domains, run_dir: str) -> "SkillItConfig":
        """With ``graph`` read from ``graph_from``'s last logged ``skills_graph`` (rows, columns by name)."""
        if self.graph or not self.graph_from:
            return self
        from ado_jax.mixing.run_inputs import last_record_with, per_domain_matrix

        rec = last_record_with(self.graph_from, "skills_graph", "mixer.graph_from")
        graph = per_domain_matrix(rec["skills_graph"], domains, "mixer.graph_from", self.graph_from)
        return dataclasses.replace(self, graph=graph.tolist())

    def describe(self, sizes_D, total_steps: int | None = None) -> str:
        """Says when the graph is estimated in the run, over which steps."""
        if self.graph or self.graph_from or total_steps is None:
            return ""
        sch = skill_it_schedule(len(sizes_D), total_steps, self.rounds, None, True, None, self.graph_fraction,
                                self.graph_sweeps, None, self.graph_warmup)
        return (f"mixer skill_it: {sch.warmup_steps} warm-up step(s) on the prior, then estimating the "
                f"[{len(sizes_D)}, {len(sizes_D)}] skills graph in steps {sch.warmup_steps}-{sch.graph_steps - 1} "
                f"({sch.sweeps} sweep(s) of {sch.segment_steps} step(s) on each domain alone, in random orders), "
                f"then {sch.rounds} rounds of {sch.round_steps} steps")

    def build(self, sizes_D, total_steps: int | None = None, seed: int = 0) -> Mixer:
        """The Skill-It mixer for ``sizes_D: [D]`` (``seed`` orders the estimation's segments);
        ValueError unless ``graph`` is empty or ``[D, D]``."""
        graph = np.asarray(self.graph, np.float64) if self.graph else None
        if graph is not None and graph.shape != (len(sizes_D), len(sizes_D)):
            raise ValueError(f"mixer.graph has shape {graph.shape}: skill_it needs a [{len(sizes_D)}, {len(sizes_D)}] "
                             "skills graph (see ado_jax.mixing.skills_graph), or none to estimate it in the run")
        if self.graph_from and graph is None:
            raise ValueError("mixer.graph_from is set but not read: call resolve(domains, run_dir) before build")
        return skill_it(graph, total_steps, rounds=self.rounds, eta=self.eta, p_init=prior_weights(self.prior, sizes_D),
                        graph_fraction=self.graph_fraction, graph_sweeps=self.graph_sweeps,
                        graph_warmup_fraction=self.graph_warmup, seed=seed)
