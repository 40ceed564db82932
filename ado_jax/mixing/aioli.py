"""Aioli (Chen et al. 2024, "Aioli: A Unified Optimization Framework for Language Model Data
Mixing", arXiv:2411.05735, §5).

Aioli assumes the linear dynamic mixing law ``L^{t+1}_i = L^t_i - sum_j A^t_ij p^t_j`` (eq. 2,
σ = Id), estimates ``A^t`` each round from the training run itself (LEARNPARAMS, Alg. 2), and
updates the mixture by exponentiated gradient (Alg. 1, line 6)::

    p^t_j ∝ p^{t-1}_j exp(η Σ_i Ā^t_ij)

Schedule, in train steps: ``init_steps`` on ``p_init`` (or on another mixer: Aioli+method), then
``rounds`` rounds of ``round_steps``. Each round starts with LEARNPARAMS — K = D·k segments of
``segment_steps``, segment c trained on ``P[I_c] = (1-ε) onehot_{I_c} + ε/D`` in a random
interleaved order I — and trains on ``p^t`` for the rest of the round.

Held-out losses (the contract of ``mixing.base.wants_heldout``, shared by all mixers): the state's
``wants_heldout: [] bool`` says that the NEXT ``update`` needs ``stats.heldout_loss``, the
per-domain held-out loss of the model AFTER the train step those stats belong to. Aioli asks at
the end of each LEARNPARAMS segment and at the step before each round.

Where the reference code (HazyResearch/aioli, ``trainer/aioli_trainer.py``) differs from the
paper, both are offered, paper first:
  - smoothed one-hots: paper ``(1-ε) 1_i + ε Unif`` (``eps``); reference ``one_hot_factor`` f on
    the diagonal and ``(1-f)/(D-1)`` elsewhere (equal for D = 2 when f = 1 - ε + ε/2).
  - order: paper shuffles k copies of each index (``order="shuffle"``); the reference
    concatenates k random permutations (``order="sweeps"``).
  - normalization of A: the paper does not specify it; the default is the reference's
    (``"shift_sum"``: subtract min(A) when negative, divide by the sum); ``"none"`` skips it.
  - EMA γ on A (App. D): ``A_ema = (1-γ) Ā^t + γ A_ema``, ``p^t ∝ p^0 exp(η Σ_i A_ema_ij)``.
Our own choices: β is averaged over the segments actually measured (the paper divides by k)
and over the segment length, so ``a_raw`` is A per train step (what the simulator's A means);
a segment without a valid start and end measurement (the first one when ``init_steps = 0``,
or NaN/inf held-out losses) is left out, and a round in which some mixture has no measurement
keeps the previous A and p.
"""

from __future__ import annotations

import dataclasses
import math

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ado_jax.mixing.registry import MixerConfig, option, prior_weights, register
from ado_jax.mixing.base import (DomainStats, Mixer, check_choice, check_fraction, check_int, check_num_domains,
                                 check_number, check_weights, normalize)
from ado_jax.mixing.base import wants_heldout as wants_heldout  # re-exported: defined in mixing.base

Array = jax.Array


class AioliState(NamedTuple):
    """Aioli's state (all fixed shapes; K = D · sweeps).

    weights: [D] mixture for the next batch; step: [] int32 updates done; key: [2] uint32;
    order: [K] int32 mixtures of this round's LEARNPARAMS; logits / log_p0: [D] log p^t, log p^0;
    beta: [D, D] summed held-out drops (row i: domain measured, column j: mixture trained);
    n_seg: [D] segments measured per mixture; base_loss: [D] held-out loss at segment start;
    base_valid: [] bool; a_raw: [D, D] last estimated A (per step); a_bar: [D, D] its normalized (EMA'd)
    form; rounds_done: [] int32; wants_heldout: [] bool; inner: Aioli+method mixer state or ().
    """

    weights: Array
    step: Array
    key: Array
    order: Array
    logits: Array
    log_p0: Array
    beta: Array
    n_seg: Array
    base_loss: Array
    base_valid: Array
    a_raw: Array
    a_bar: Array
    rounds_done: Array
    wants_heldout: Array
    inner: Any


class RoundPhase(NamedTuple):
    """Where a train step falls in Aioli's schedule (all [] arrays).

    Attributes:
      in_learn: bool — the step is in a round's LEARNPARAMS part.
      round_pos: int32 — steps since the start of the round.
      segment: int32 — index of the LEARNPARAMS segment (``round_pos // segment_steps``).
      segment_end: bool — the step is the last of a LEARNPARAMS segment.
      learn_done: bool — the step is the last of the round's LEARNPARAMS.
    """

    in_learn: Array
    round_pos: Array
    segment: Array
    segment_end: Array
    learn_done: Array


def smoothed_onehots(num_domains: int, eps: float = 0.75, one_hot_factor: float | None = None) -> Array:
    """[D, D] matrix P whose row i is the LEARNPARAMS mixture for domain i (see module doc)."""
    d = check_num_domains(num_domains)
    eye = jnp.eye(d, dtype=jnp.float32)
    if one_hot_factor is None or d == 1:
        return (1.0 - eps) * eye + eps / d
    return one_hot_factor * eye + (1.0 - one_hot_factor) / (d - 1) * (1.0 - eye)


def normalize_a(a_DD: Array, method: str = "shift_sum") -> Array:
    """Normalizes an estimated A [D, D]: ``"shift_sum"`` (reference) or ``"none"``."""
    if method == "none":
        return a_DD
    shifted = a_DD - jnp.minimum(jnp.min(a_DD), 0.0)
    return shifted / jnp.sum(shifted)


def aioli_metrics(state: AioliState) -> dict:
    """What the train loop logs about Aioli: ``aioli_a_colsum`` [D], the column sums of the
    normalized Ā (how much training on j helps all domains), and ``aioli_A`` [D, D], the last
    estimated A (row i: held-out domain, column j: trained-on domain)."""
    return {"aioli_a_colsum": state.a_bar.sum(axis=0), "aioli_A": state.a_raw}


def aioli(total_steps: int | None = None, *, rounds: int = 20, round_steps: int | None = None,
          sweeps: int = 4, delta: float = 0.128, segment_steps: int | None = None,
          eps: float = 0.75, one_hot_factor: float | None = None, eta: float = 0.2,
          gamma: float | None = None, normalize_method: str = "shift_sum", order: str = "shuffle",
          diagonal: bool = False, static: bool = False, init_steps: int | None = None, p_init=None,
          init_mixer: Mixer | None = None, restart_uniform: bool = True, seed: int = 0) -> Mixer:
    """The Aioli mixer (Alg. 1–2). Defaults: the paper's m = 2 values (Table 13).

    Args:
      total_steps: train steps S; rounds of ``(S - init_steps) // rounds`` steps. Or give
        ``round_steps``. After ``rounds`` rounds the last mixture is kept.
      rounds: T (20). ``static=True`` is AIOLI-STATIC (T = 1: learn A once, then keep p^1).
      sweeps: k, sweeps over the D mixtures per LEARNPARAMS (paper 2–4).
      delta: fraction δ of a round spent in LEARNPARAMS (0.128 for m = 2, 0.288 for m = 3,
        0.07 for m = 7); segment length ``floor(δ R / (D k))`` unless ``segment_steps`` is given.
      eps: smoothing of the one-hot mixtures (paper ε = 0.75).
      one_hot_factor: the reference's smoothing factor f, used instead of ``eps`` when given.
      eta: EGD step size η (0.1–0.3 in the paper).
      gamma: EMA γ on Ā (None, or 0.1–0.5).
      normalize_method: ``"shift_sum"`` or ``"none"``.
      order: ``"shuffle"`` or ``"sweeps"``.
      diagonal: AIOLI-DIAGONAL, ``A_ii = β_ii / P_ii`` and no cross terms (App. E.2).
      init_steps: Aioli+method — train ``init_steps`` steps first on ``p_init`` or
        ``init_mixer``. None (default) is one step on ``p_init`` (uniform if not given): the
        held-out loss after it is the baseline L^0 of round 1's first segment, which the train
        step cannot measure before step 0. With 0, that segment is unmeasured and, when
        ``sweeps=1``, round 1 is discarded (its A misses a column).
      p_init: [D] static mixture of the init phase.
      init_mixer: a ``Mixer`` followed in the init phase (its updates run inside this state).
      restart_uniform: p^0 = Unif (Alg. 1 line 3, and the reference) or, if False, the mixture
        in use at the end of the init phase.
      seed: seed of the PRNG key for the random interleaved orders.
    """
    if static:
        rounds = 1
    rounds = check_int("rounds", rounds, low=1)
    sweeps = check_int("sweeps", sweeps, low=1)
    init_steps = 1 if init_steps is None else check_int("init_steps", init_steps, low=0)
    check_fraction("delta", delta, low_open=True)
    check_fraction("eps", eps)
    check_number("eta", eta, low=0.0)
    if one_hot_factor is not None:
        check_fraction("one_hot_factor", one_hot_factor)
    if gamma is not None:
        check_fraction("gamma", gamma)
    check_choice("normalize_method", normalize_method, ("shift_sum", "none"))
    check_choice("order", order, ("shuffle", "sweeps"))
    if round_steps is None:
        if total_steps is None:
            raise ValueError("aioli needs total_steps or round_steps, got neither")
        round_steps = (int(total_steps) - init_steps) // rounds
    round_steps = check_int("round_steps (total_steps - init_steps) // rounds", round_steps, low=1)
    if p_init is not None and init_mixer is not None:
        raise ValueError("give p_init or init_mixer, not both")
    p_init_D = None if p_init is None else check_weights(p_init, name="p_init")

    def schedule(d):
        num_seg = d * sweeps
        seg = segment_steps if segment_steps is not None else max(1, int(delta * round_steps / num_seg))
        if seg < 1 or num_seg * seg > round_steps:
            budget = (f"; the smallest train.decay_steps that fits {rounds} rounds is "
                      f"{init_steps + rounds * num_seg * max(seg, 1)}, or lower mixer.rounds / mixer.sweeps, or "
                      "mixer.fit=auto sizes them" if total_steps is not None and segment_steps is None else "")
            raise ValueError(f"LEARNPARAMS needs D*sweeps*segment_steps = {num_seg}*{seg} <= round_steps"
                             f" = {round_steps}; lower delta/sweeps/segment_steps or raise round_steps{budget}")
        return num_seg, seg, num_seg * seg

    def phase(step, d) -> RoundPhase:
        _, seg, learn = schedule(d)
        pos = step - init_steps
        rnd, r = pos // round_steps, pos % round_steps
        in_learn = (pos >= 0) & (rnd < rounds) & (r < learn)
        return RoundPhase(in_learn=in_learn, round_pos=r, segment=r // seg,
                          segment_end=in_learn & ((r + 1) % seg == 0), learn_done=in_learn & (r == learn - 1))

    def wants_at(step, inner, d):
        nxt = step + 1 - init_steps
        pre_round = (nxt >= 0) & (nxt % round_steps == 0) & (nxt // round_steps < rounds)
        inner_wants = (step < init_steps) & wants_heldout(inner) if init_mixer is not None else False
        return phase(step, d).segment_end | pre_round | inner_wants

    def new_order(key, d):
        if order == "sweeps":
            return jax.vmap(lambda k: jax.random.permutation(k, d))(jax.random.split(key, sweeps)).reshape(-1)
        return jax.random.permutation(key, jnp.repeat(jnp.arange(d, dtype=jnp.int32), sweeps))

    def init_weights(inner, d):
        if init_mixer is not None:
            return normalize(inner.weights)
        return jnp.full((d,), 1.0 / d) if p_init_D is None else jnp.asarray(p_init_D)

    def mixture(step, st, d):
        ph = phase(step, d)
        p_DD = smoothed_onehots(d, eps, one_hot_factor)
        learn_w = p_DD[st.order[jnp.minimum(ph.segment, st.order.shape[0] - 1)]]
        w = jnp.where(ph.in_learn, learn_w, jax.nn.softmax(st.logits))
        return jnp.where(step < init_steps, init_weights(st.inner, d), w)

    def init(num_domains) -> AioliState:
        d = check_num_domains(num_domains)
        if p_init_D is not None and p_init_D.size != d:
            raise ValueError(f"p_init has {p_init_D.size} entries but init got num_domains={d}")
        schedule(d)
        inner = init_mixer.init(d) if init_mixer is not None else ()
        key, k_order = jax.random.split(jax.random.PRNGKey(seed))
        start = init_weights(inner, d) if not restart_uniform else jnp.full((d,), 1.0 / d)
        log_p0 = jnp.log(jnp.maximum(start, 1e-30)).astype(jnp.float32)
        zero = jnp.zeros((), jnp.int32)
        z_D, z_DD = jnp.zeros((d,), jnp.float32), jnp.zeros((d, d), jnp.float32)
        st = AioliState(weights=z_D, step=zero, key=key, order=new_order(k_order, d), logits=log_p0,
                        log_p0=log_p0, beta=z_DD, n_seg=z_D, base_loss=z_D, base_valid=jnp.asarray(False),
                        a_raw=z_DD, a_bar=z_DD, rounds_done=zero, wants_heldout=jnp.asarray(False), inner=inner)
        return st._replace(weights=normalize(mixture(zero, st, d)), wants_heldout=wants_at(zero, inner, d))

    def finish_round(st: AioliState, d) -> AioliState:
        """End of LEARNPARAMS: A = P^{-1} β (Alg. 2 line 11), normalize, EMA, EGD step."""
        p_DD = smoothed_onehots(d, eps, one_hot_factor)
        # Mean drop per step of each mixture: A comes out per train step (segment-length free).
        beta_DD = st.beta / (jnp.maximum(st.n_seg, 1.0)[None, :] * schedule(d)[1])
        if diagonal:
            a_DD = jnp.diag(jnp.diag(beta_DD) / jnp.diag(p_DD))
        else:  # beta[i, :] = P @ A[i, :]
            a_DD = jnp.linalg.solve(p_DD, beta_DD.T).T
        a_bar = normalize_a(a_DD, normalize_method)
        if gamma is not None:
            a_bar = jnp.where(st.rounds_done > 0, (1.0 - gamma) * a_bar + gamma * st.a_bar, a_bar)
            logits = st.log_p0 + eta * jnp.sum(a_bar, axis=0)
        else:
            logits = st.logits + eta * jnp.sum(a_bar, axis=0)
        ok = jnp.all(st.n_seg > 0) & jnp.all(jnp.isfinite(a_bar)) & jnp.all(jnp.isfinite(logits))
        key, k_order = jax.random.split(st.key)
        return st._replace(
            key=key, order=new_order(k_order, d), beta=jnp.zeros_like(st.beta), n_seg=jnp.zeros_like(st.n_seg),
            logits=jnp.where(ok, logits - jnp.max(logits), st.logits), a_raw=jnp.where(ok, a_DD, st.a_raw),
            a_bar=jnp.where(ok, a_bar, st.a_bar), rounds_done=st.rounds_done + ok.astype(jnp.int32))

    def update(stats: DomainStats, st: AioliState):
        d = st.weights.shape[0]
        step = st.step
        if init_mixer is not None:
            inner = jax.lax.cond(step < init_steps, lambda i: init_mixer.update(stats, i)[1], lambda i: i, st.inner)
            st = st._replace(inner=inner)
        meas_D = jnp.asarray(stats.heldout_loss, jnp.float32)
        meas_ok = jnp.asarray(stats.heldout_valid, bool) & jnp.all(jnp.isfinite(meas_D))
        ph = phase(step, d)
        j = st.order[jnp.minimum(ph.segment, st.order.shape[0] - 1)]
        ok = ph.segment_end & st.base_valid & meas_ok
        drop_D = jnp.where(ok, st.base_loss - meas_D, 0.0)
        st = st._replace(
            beta=st.beta.at[:, j].add(drop_D), n_seg=st.n_seg.at[j].add(ok.astype(jnp.float32)),
            base_loss=jnp.where(st.wants_heldout & meas_ok, meas_D, st.base_loss),
            base_valid=jnp.where(st.wants_heldout, meas_ok, st.base_valid))
        if not restart_uniform:  # p^0 = the mixture in use when the init phase ends
            log_w = jnp.log(jnp.maximum(init_weights(st.inner, d), 1e-30))
            switch = step + 1 == init_steps
            st = st._replace(logits=jnp.where(switch, log_w, st.logits), log_p0=jnp.where(switch, log_w, st.log_p0))
        st = jax.lax.cond(ph.learn_done, lambda x: finish_round(x, d), lambda x: x, st)
        nxt = step + 1
        w = normalize(mixture(nxt, st, d))
        st = st._replace(weights=w, step=nxt, wants_heldout=wants_at(nxt, st.inner, d))
        return w, st

    return Mixer(init, update, aioli_metrics)


def aioli_sizing(num_domains: int, total_steps: int, rounds: int, sweeps: int, delta: float,
                 init_steps: int = 1) -> tuple[int, int, str]:
    """``(rounds, sweeps, note)`` that fit ``total_steps``: the given ones when LEARNPARAMS, at
    one step a segment at least, stays within ``delta`` of a round (D · sweeps ≤ δ · round_steps,
    as the paper's schedule has it), else the largest sweeps (down to 1) keeping ``rounds``,
    then fewer rounds, each long enough for that; when not even one such round fits, one round
    with one-step segments. ``note`` says what changed ("" when nothing). ValueError, naming
    the smallest ``train.decay_steps``, when fewer steps than D are left after ``init_steps``.
    (A shorter round still runs under ``fit=strict``, LEARNPARAMS then taking more than δ of it.)"""
    d = check_num_domains(num_domains)
    avail = int(total_steps) - init_steps
    if d * sweeps <= delta * (avail // rounds):
        return rounds, sweeps, ""
    if avail < d:
        raise ValueError(f"aioli with {d} domains needs train.decay_steps >= {init_steps + d} (one LEARNPARAMS "
                         f"step per domain after {init_steps} init step(s)), got {total_steps}")
    fits = {k: avail // math.ceil(d * k / delta) for k in range(sweeps, 0, -1)}  # rounds of ceil(D k / δ) steps
    k = next((k for k, r in fits.items() if r >= rounds), 1)
    new_rounds = min(rounds, fits[k]) if fits[k] >= 1 else 1
    round_steps = avail // new_rounds
    learn = d * k * max(1, int(delta * round_steps / (d * k)))
    note = (f"mixer aioli: {rounds} rounds x {sweeps} sweeps over {d} domains do not fit {avail} steps (LEARNPARAMS "
            f"needs D*sweeps = {d * sweeps} steps, delta={delta} of each {avail // rounds}-step round has "
            f"{delta * (avail // rounds):.1f}); sized to {new_rounds} round(s) x "
            f"{k} sweep(s) of {round_steps} steps, LEARNPARAMS {learn} steps ({learn / round_steps:.0%} of a round, "
            f"delta={delta}). The paper's schedule needs train.decay_steps >= "
            f"{init_steps + rounds * math.ceil(d * sweeps / delta)}; mixer.fit=strict keeps the given rounds and "
            "sweeps")
    return new_rounds, k, note


@register("aioli")
@dataclasses.dataclass
class AioliConfig(MixerConfig):
    """Aioli (arXiv:2411.05735); rounds span ``train.decay_steps``, the run's planned length.

    With ``fit="auto"`` (the default) a run too short for ``rounds`` × ``sweeps`` is sized by
    ``aioli_sizing`` and the start-up output says how; ``fit="strict"`` keeps ``rounds`` and
    ``sweeps`` as given, refusing a run whose rounds are shorter than LEARNPARAMS.
    """

    prior: str = option("natural", "mixture of the init_steps before the first round: natural | uniform")
    rounds: int = option(20, "rounds T over train.decay_steps")
    sweeps: int = option(4, "LearnParams sweeps k over the D smoothed one-hot mixtures")
    delta: float = option(0.128, "fraction of each round spent in LearnParams")
    eps: float = option(0.75, "smoothing eps of the one-hot mixtures (1-eps)*onehot + eps*uniform")
    eta: float = option(0.2, "exponentiated-gradient step size eta")
    gamma: float = option(-1.0, "EMA gamma on the normalized A (-1: none)")
    variant: str = option("full", "full | static (AIOLI-STATIC) | diagonal (AIOLI-DIAGONAL)")
    init_steps: int = option(0, "steps on the prior (mixer.prior) before the first round (Aioli+method); "
                                "0: one step on uniform, whose held-out loss is round 1's baseline")
    init_weights: list[float] = option([], "Aioli+method (the paper's restricted setting, Table 3): the init_steps' "
                                           "mixture, one weight per domain, instead of mixer.prior")
    init_weights_from: str = option("", "Aioli+method: the init_steps' mixture from a weights JSON (ado-jax "
                                        "fit-mixture's DML or RegMix fit: Aioli+DML) or a run directory's last "
                                        "*_avg_weights (a DoGE run: Aioli+DoGE; DoReMi)")
    fit: str = option("auto", "auto: a run too short for rounds x sweeps within delta gets fewer sweeps, then fewer "
                              "rounds (said at start) | strict: as given; a round shorter than LEARNPARAMS is refused, "
                              "naming the steps needed")

    def resolve(self, domains, run_dir: str) -> "AioliConfig":
        """With ``init_weights`` read from ``init_weights_from`` (matched by domain name where named)."""
        del run_dir
        if not self.init_weights_from:
            return self
        if self.init_weights:
            raise ValueError("give mixer.init_weights or mixer.init_weights_from, not both")
        from ado_jax.mixing.basic import weights_for_domains

        weights = weights_for_domains(self.init_weights_from, tuple(domains))
        return dataclasses.replace(self, init_weights=weights.tolist(), init_weights_from="")

    def _sized(self, sizes_D, total_steps) -> tuple[int, int, str]:
        if self.fit not in ("auto", "strict"):
            raise ValueError(f"mixer.fit={self.fit!r}: expected auto | strict")
        rounds = 1 if self.variant == "static" else self.rounds
        if total_steps is None or self.fit == "strict" or rounds < 1 or self.sweeps < 1:
            return rounds, self.sweeps, ""  # aioli() checks and explains
        return aioli_sizing(len(sizes_D), total_steps, rounds, self.sweeps, self.delta, self.init_steps or 1)

    def describe(self, sizes_D, total_steps: int | None = None) -> str:
        """The sizing note when ``fit="auto"`` changed the rounds or sweeps, else ""."""
        return self._sized(sizes_D, total_steps)[2]

    def build(self, sizes_D, total_steps: int | None = None, seed: int = 0) -> Mixer:
        """The Aioli mixer over ``total_steps`` for domains of sizes ``sizes_D: [D]``."""
        if self.variant not in ("full", "static", "diagonal"):
            raise ValueError(f"mixer.variant={self.variant!r}: expected full | static | diagonal")
        rounds, sweeps, _ = self._sized(sizes_D, total_steps)
        if self.init_weights_from:
            raise ValueError("mixer.init_weights_from is set but not read: call resolve(domains, run_dir) before build")
        prior = prior_weights(self.prior, sizes_D)
        if self.init_weights:
            if not self.init_steps:
                raise ValueError("mixer.init_weights (Aioli+method) needs mixer.init_steps > 0, the steps on it")
            if len(self.init_weights) != len(sizes_D):
                raise ValueError(f"mixer.init_weights={self.init_weights}: one weight per domain ({len(sizes_D)})")
            prior = check_weights(self.init_weights, name="mixer.init_weights")
        mixer = aioli(total_steps, rounds=rounds, sweeps=sweeps, delta=self.delta, eps=self.eps,
                     eta=self.eta, gamma=None if self.gamma < 0 else self.gamma, static=self.variant == "static",
                     diagonal=self.variant == "diagonal", init_steps=self.init_steps or None,
                     p_init=prior if self.init_steps else None, seed=seed)
        jax.eval_shape(lambda: mixer.init(len(sizes_D)))  # a schedule that does not fit fails here, not in the loop
        return mixer
