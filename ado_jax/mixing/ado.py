"""ADO — "Adaptive Data Optimization: Dynamic Sample Selection with Scaling Laws" (Jiang et al.
2024, arXiv:2410.11820), §3, Alg. 1, App. A.1 and C.

Each domain k gets a scaling law ``L_k(n) = eps_k + beta_k n^-alpha_k`` in the total number of
sequences seen ``n``, refit from the tracked learning curves every ``fit_every`` steps *inside*
the update (``lax.cond``, fixed cost). Each step, with prior ``mu``:

- credit (eq. 2): ``h <- gamma1 pi + (1 - gamma1) h``, ``lambda_k ∝ h_k^s``;
- preference (eq. 3): ``rho_k ∝ mu_k lambda_k alpha_k (L_k(n) - eps_k) / n``;
- policy (eq. 5 + App. C Alg. 2): ``pi = clip(gamma2 rho + (1 - gamma2) pibar, delta_min)``;
- running mean (eq. 4): ``pibar <- rho / (t + 1) + (1 - 1 / (t + 1)) pibar`` (t: policy steps).

Until every domain (with ``mu_k > 0``) has a finite fit, the weights are the prior ``mu``
(Alg. 1's warmup).
Options reproduce the reference code (github.com/yidingjiang/ado): ``credit="reference"``
(h is the EMA of the fractions actually sampled), ``clip="reference"`` (rho is clipped
before mixing), ``alpha_floor=0.05``, ``average_t="global"`` (t is the train step),
``smoothing="savgol"``. The paper's choices are the defaults.
"""

from __future__ import annotations

import dataclasses

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ado_jax.mixing import scaling_law, tracker as tracker_lib
from ado_jax.mixing import ado_policy as policy
from ado_jax.mixing.base import (DomainStats, Mixer, check_choice, check_fraction, check_int, check_num_domains,
                                 check_number, check_weights, normalize)
from ado_jax.mixing.registry import MixerConfig, option, prior_weights, register
from ado_jax.mixing.scaling_law import PowerLaw


class AdoState(NamedTuple):
    """ADO's state: fixed-shape arrays only (jit, scan, orbax-friendly).

    Attributes:
      weights: [D] float32 — mixture for the next batch (pi).
      rho: [D] float32 — latest preference distribution (the prior before the first fit).
      pibar: [D] float32 — running mean of rho (eq. 4).
      h: [D] float32 — credit history EMA (eq. 2).
      policy_steps: [] int32 — steps the policy has run (t in eq. 4).
      tracker: ``TrackerState`` — per-domain EMAs and the history the fitter reads.
      params: ``PowerLaw`` of [D] — latest accepted fit (log_eps, log_beta, alpha).
      objective: [D] float32 — fit objective of ``params`` (inf before the first fit).
      fitted: [D] bool — domain has a finite fit.
      num_fits: [] int32 — fits run so far.
      on_bound: [D] int32 — ``scaling_law.FitInfo.on_bound`` of ``params``: bitmask of the
        parameters on a bound of the fit's box (0: interior; -1: unknown, before a domain's
        first fit or for a fit merged without diagnostics).
      fit_err: [D] float32 — in-sample mean |log residual| of ``params`` (NaN when unknown).
    """

    weights: jax.Array
    rho: jax.Array
    pibar: jax.Array
    h: jax.Array
    policy_steps: jax.Array
    tracker: tracker_lib.TrackerState
    params: PowerLaw
    objective: jax.Array
    fitted: jax.Array
    num_fits: jax.Array
    on_bound: jax.Array
    fit_err: jax.Array


def set_fit(state: AdoState, params: PowerLaw, objective_D, min_points_ok_D=None,
            info: scaling_law.FitInfo | None = None) -> AdoState:
    """Merges a new fit into ``state`` (keeps the old fit per domain where the new is not finite).

    Used inside ``update`` and by ``ado_async.HostFitter`` to feed host-side fits back.

    Args:
      state: the ADO state to update.
      params: ``PowerLaw`` of [D] — the new fit.
      objective_D: [D] its fit objective (non-finite: the domain keeps its old fit).
      min_points_ok_D: optional [D] bool — False for domains with too little data, whose new
        fit is rejected.
      info: optional ``scaling_law.FitInfo`` of [D] — the new fit's diagnostics, kept with
        it (None: recorded as unknown, ``on_bound = -1`` and ``fit_err = NaN``).
    """
    obj_D = jnp.asarray(objective_D, jnp.float32)
    if min_points_ok_D is not None:
        obj_D = jnp.where(min_points_ok_D, obj_D, jnp.nan)
    params = PowerLaw(*(jnp.asarray(p, jnp.float32) for p in params))
    ok_D = jnp.isfinite(obj_D)
    for p in params:
        ok_D = ok_D & jnp.isfinite(p)
    merged, obj_D = scaling_law.keep_finite(params, obj_D, state.params, state.objective)
    if info is None:
        info = scaling_law.FitInfo(jnp.full_like(state.on_bound, -1), jnp.full_like(state.fit_err, jnp.nan))
    on_bound = jnp.where(ok_D, jnp.asarray(info.on_bound, jnp.int32), state.on_bound)
    fit_err = jnp.where(ok_D, jnp.asarray(info.err, jnp.float32), state.fit_err)
    return state._replace(params=merged, objective=obj_D, fitted=state.fitted | ok_D,
                          num_fits=state.num_fits + 1, on_bound=on_bound, fit_err=fit_err)


def fitted_values(state: AdoState) -> dict:
    """[D] float32 values for logging (NaN before a domain's first fit): the law's ``"alpha"``,
    ``"beta"``, ``"eps"``, and its diagnostics ``"on_bound"`` (the ``FitInfo.on_bound``
    bitmask as a float, 0 for an interior fit; NaN when unknown; ``scaling_law.bound_names``
    decodes it) and ``"err"`` (in-sample mean |log residual|)."""
    nan = lambda x: jnp.where(state.fitted, x, jnp.nan)
    on_bound = jnp.where(state.on_bound >= 0, state.on_bound.astype(jnp.float32), jnp.nan)
    return {"alpha": nan(state.params.alpha), "beta": nan(jnp.exp(state.params.log_beta)),
            "eps": nan(jnp.exp(state.params.log_eps)), "on_bound": nan(on_bound),
            "err": nan(state.fit_err)}


def fit_metrics(state: AdoState) -> dict:
    """What the train loop logs about ADO, [D] each: ``fit_<name>`` for each of ``fitted_values``,
    and the policy's inputs (the ADO paper's Figs. 5, 10, 11): ``ado_h``, the credit history h
    (eq. 2); ``ado_rho``, the preference rho (eq. 3); ``ado_slope``, the fitted law's learning
    speed ``-dL/dn = alpha beta n^(-alpha-1)`` at the sequences seen so far (NaN before a fit)."""
    p = state.params
    log_n = jnp.log(jnp.maximum(jnp.asarray(state.tracker.n, jnp.float32), 1.0))
    slope_D = jnp.exp(jnp.log(jnp.maximum(p.alpha, 1e-30)) + p.log_beta - (p.alpha + 1.0) * log_n)
    return {**{f"fit_{k}": v for k, v in fitted_values(state).items()}, "ado_h": state.h, "ado_rho": state.rho,
            "ado_slope": jnp.where(state.fitted, slope_D, jnp.nan)}


def ado(prior=None, *, gamma1: float = 0.1, gamma2: float = 0.1, s: float = 0.5,
        delta_min: float = 0.01, fit_every: int = 1000, fit_start: int = 5000,
        skip_first: int = 500, subsample_every: int = 10, history_len: int = 512,
        reduce: str = "sample", smoothing: str | None = None, credit: str = "paper",
        clip: str = "paper", average_t: str = "policy", alpha_floor: float | None = None,
        min_fit_points: int = 8, fit_in_step: bool = True, fit_kwargs: dict | None = None,
        bounds="data", warm_start: bool = True, seed_axis: str | None = None) -> Mixer:
    """The complete ADO mixer (defaults: the paper's).

    Args:
      prior: mu — [D] weights or domain sizes (normalized; natural proportions as in the
        paper), or None for uniform.
      gamma1: credit EMA coefficient (eq. 2).
      gamma2: weight of rho vs pibar (eq. 5).
      s: credit exponent (eq. 2).
      delta_min: minimum probability (App. C Alg. 2).
      fit_every: refit every ``fit_every`` steps (paper: 1000).
      fit_start: first fit at this step (paper: 5000; the prior is used before it).
      skip_first: history starts after this many steps (``tracker.loss_tracker``; paper 500).
      subsample_every: keep every k-th step in the history (paper: 10).
      history_len: history capacity in points.
      reduce: ``"sample"`` (paper: one step per history slot) or ``"mean"`` (slot average).
      smoothing: None (paper) or ``"savgol"`` (the reference's Savitzky–Golay filter).
      credit: "paper" (h = EMA of pi, lambda = h^s), "reference" (h = EMA of the sampled
        fractions ``count / sum(count)``, lambda = h^s, the reference's current code) or
        "reference_v0" (sampled h, lambda = (h (1 - h))^s, the reference's first release).
      clip: "paper" (clip after mixing) or "reference" (clip rho before mixing).
      average_t: "policy" (paper Alg. 1: t counts policy steps from 0) or "global" (reference:
        t is the train step, so pibar starts close to the prior and moves slowly).
      alpha_floor: None (paper) or e.g. 0.05 (reference: ``max(alpha, 0.05)`` in rho).
      min_fit_points: a domain's fit is rejected with fewer valid history points.
      fit_in_step: False leaves fitting to the caller (``set_fit``, ``ado_async.HostFitter``).
      fit_kwargs: forwarded to ``scaling_law.fit_power_law`` (solver, grid, maxiter, ...;
        not ``bounds``).
      bounds: the fit's box on (log_eps, log_beta, alpha) (``fit_power_law``'s ``bounds``):
        ``"data"`` (default) per domain from its own history: 0 < eps at most its smallest
        observed loss, 0 <= alpha <= 0.8, log_beta wide, so a bound holds a fit only where
        the data put it (the paper calls its bounds "purely preventative ... almost never
        saturated"); ``"reference"``: the reference code's (and the paper's stated) box
        ``log_eps >= 0.5, log_beta <= 6.5, 0 <= alpha <= 0.8``, which assumes GPT-2-token
        losses of 2-4 nats and clamps eps at 1.65 below that; or a ``scaling_law.FitBounds``.
        Each fit's diagnostics (``on_bound``, ``fit_err``) are kept in the state.
      warm_start: refit each domain from its previous fit (``fit_power_law(init=...)``: the
        previous fit refined until it converges, two guard starts, and a cold fit only where
        there is no previous fit or the guard says the optimum moved); the first fit is cold.
        The previous fit is ``state.params``, so a resumed run refits exactly as an
        uninterrupted one. False: every fit is cold (the paper's).
      seed_axis: the ``axis_name`` of a ``jax.vmap`` over seeds (or any batch of ADO states
        that share the schedule), e.g. ``jax.vmap(run, axis_name="seeds")``. The fit's
        schedule depends only on ``stats.step``; when that step is batched (per-seed states
        stacked), the fit's ``lax.cond`` would become a select that fits at every step. With
        ``seed_axis`` the decision is taken jointly over the axis (``lax.pmax``) and stays a
        real ``cond`` (as does the warm refit's cold fallback). Not needed when the step is
        not batched (``simulator.run`` vmapped over keys: its step counter is shared), but
        the warm refit's cold fallback still needs it to stay a ``switch``.

    Raises:
      ValueError: naming a bad hyperparameter, or at ``init`` a prior whose length is not D
        or ``delta_min * D > 1``.
    """
    g1 = check_fraction("gamma1", gamma1, low_open=True)
    g2 = check_fraction("gamma2", gamma2)
    s = check_number("s", s, low=0.0)
    dmin = check_fraction("delta_min", delta_min)
    every, start = check_int("fit_every", fit_every, low=1), check_int("fit_start", fit_start, low=0)
    min_pts = check_int("min_fit_points", min_fit_points, low=1)
    credit = check_choice("credit", credit, ("paper", "reference", "reference_v0"))
    clip = check_choice("clip", clip, ("paper", "reference"))
    average_t = check_choice("average_t", average_t, ("policy", "global"))
    if alpha_floor is not None:
        alpha_floor = check_fraction("alpha_floor", alpha_floor)
    mu = None if prior is None else check_weights(prior, name="ado prior")
    tracker = tracker_lib.loss_tracker(history_len=history_len, skip_first=skip_first,
                                       subsample_every=subsample_every, reduce=reduce,
                                       smoothing=smoothing)
    fit_kwargs = dict(fit_kwargs or {})
    if "bounds" in fit_kwargs:
        raise ValueError("pass the fit's box as ado(bounds=...), not in fit_kwargs")
    fit_kwargs["bounds"] = scaling_law.check_bounds(bounds)
    if not isinstance(warm_start, bool):
        raise ValueError(f"warm_start={warm_start!r}: expected True or False")
    if seed_axis is not None and not isinstance(seed_axis, str):
        raise ValueError(f"seed_axis={seed_axis!r}: expected None or an axis name (str)")
    if seed_axis is not None:
        fit_kwargs["axis_name"] = seed_axis

    def prior_of(d: int) -> jax.Array:
        return jnp.full((d,), 1.0 / d, jnp.float32) if mu is None else jnp.asarray(mu)

    def init(num_domains) -> AdoState:
        d = check_num_domains(num_domains)
        if mu is not None and mu.size != d:
            raise ValueError(f"ado prior has {mu.size} entries but init got num_domains={d}")
        if dmin * d > 1.0 + 1e-6:
            raise ValueError(f"delta_min={dmin} is infeasible for {d} domains (delta_min * D > 1)")
        mu_D = prior_of(d)
        z_D = jnp.zeros((d,), jnp.float32)
        zero = jnp.zeros((), jnp.int32)
        return AdoState(weights=mu_D, rho=mu_D, pibar=mu_D, h=mu_D, policy_steps=zero,
                        tracker=tracker.init(d), params=PowerLaw(z_D, z_D, z_D),
                        objective=jnp.full((d,), jnp.inf, jnp.float32),
                        fitted=jnp.zeros((d,), bool), num_fits=zero,
                        on_bound=jnp.full((d,), -1, jnp.int32),
                        fit_err=jnp.full((d,), jnp.nan, jnp.float32))

    def fit(state: AdoState) -> AdoState:
        n_DT, loss_DT, mask_DT = tracker_lib.fit_data(state.tracker)
        warm = {}
        if warm_start:    # the previous accepted fit per domain (NaN: none yet, a cold fit)
            prev = PowerLaw(*(jnp.where(state.fitted, p, jnp.nan) for p in state.params))
            warm = dict(init=prev, init_objective=jnp.where(state.fitted, state.objective, jnp.inf))
        new, obj_D, info = scaling_law.fit_power_law(n_DT, loss_DT, mask_DT, return_info=True,
                                                     **warm, **fit_kwargs)
        return set_fit(state, new, obj_D, jnp.sum(mask_DT, axis=1) >= min_pts, info)

    def update(stats: DomainStats, state: AdoState):
        prior_D = prior_of(state.weights.shape[-1])
        state = state._replace(tracker=tracker.update(stats, state.tracker))
        step = jnp.asarray(stats.step, jnp.int32)
        if fit_in_step:
            due = (step >= start) & ((step - start) % every == 0)
            if seed_axis is not None:     # unbatched under vmap(axis_name=seed_axis): a real cond
                due = jax.lax.pmax(due, seed_axis)
            state = jax.lax.cond(due, fit, lambda st: st, state)

        count_D = jnp.where(jnp.isfinite(stats.count) & (stats.count > 0), stats.count, 0.0)
        total = jnp.sum(count_D)
        sampled_h_D = g1 * count_D / jnp.maximum(total, 1.0) + (1.0 - g1) * state.h
        h_now_D = state.h if credit == "paper" else jnp.where(total > 0, sampled_h_D, state.h)
        lam_D = policy.credit(h_now_D, s, credit)
        rho_D = policy.preference(state.params, state.tracker.n, prior_D, lam_D, alpha_floor)
        pi_D, rho_mean_D = policy.mix(rho_D, state.pibar, g2, dmin, clip)
        t = state.policy_steps if average_t == "policy" else step + 1
        pibar_D = policy.running_mean(state.pibar, rho_mean_D, t)

        active = jnp.all(state.fitted | (prior_D == 0))  # a zero-prior domain has rho = 0 anyway
        w_D = normalize(jnp.where(active, pi_D, prior_D))
        h_D = normalize(g1 * w_D + (1.0 - g1) * state.h) if credit == "paper" else h_now_D
        state = state._replace(
            weights=w_D, rho=jnp.where(active, rho_D, prior_D), h=h_D,
            pibar=jnp.where(active, pibar_D, state.pibar),
            policy_steps=state.policy_steps + active.astype(jnp.int32))
        return w_D, state

    return Mixer(init, update, fit_metrics)


@register("ado")
@dataclasses.dataclass
class AdoConfig(MixerConfig):
    """ADO (arXiv:2410.11820); defaults are the paper's (Alg. 1, App. A.1 and C)."""

    prior: str = option("natural", "prior mu: natural (domain sizes) | uniform")
    gamma1: float = option(0.1, "EMA rate of the credit history h (eq. 2)")
    gamma2: float = option(0.1, "weight of the new preference rho against the running mean (eq. 5)")
    s: float = option(0.5, "credit exponent in lambda ~ h^s (eq. 2)")
    delta_min: float = option(0.01, "minimum probability per domain (App. C clipping)")
    fit_every: int = option(1000, "refit the scaling laws every N steps")
    fit_start: int = option(500, "first fit at this step (the prior is used before)")
    skip_first: int = option(500, "steps left out of the fitter's history (paper: 500)")
    subsample_every: int = option(10, "keep every N-th step in the history (paper: 10)")
    history_len: int = option(512, "history slots per domain (stride doubles when full)")
    smoothing: str = option("none", "none (paper) | savgol (reference: Savitzky-Golay 101/3)")
    credit: str = option("paper", "paper | reference | reference_v0 credit assignment")
    clip: str = option("paper", "paper (clip after mixing) | reference (clip rho first)")
    bounds: str = option("data", "fit box: data (eps below each domain's smallest loss, alpha <= 0.8, beta wide) "
                                 "| reference (the reference code's log eps >= 0.5, log beta < 6.5, alpha < 0.8)")
    warm_start: bool = option(True, "refit each domain from its previous fit (+ 2 guard starts; cold only where "
                                    "the optimum moved or there is no fit yet); false: every fit cold (the paper's)")

    def build(self, sizes_D, total_steps: int | None = None, seed: int = 0) -> Mixer:
        """The ADO mixer with this config's hyperparameters and prior over ``sizes_D: [D]``."""
        del total_steps, seed
        return ado(prior_weights(self.prior, sizes_D), gamma1=self.gamma1, gamma2=self.gamma2, s=self.s,
                   delta_min=self.delta_min, fit_every=self.fit_every, fit_start=self.fit_start,
                   skip_first=self.skip_first, subsample_every=self.subsample_every, history_len=self.history_len,
                   smoothing=None if self.smoothing == "none" else self.smoothing, credit=self.credit, clip=self.clip,
                   bounds=self.bounds, warm_start=self.warm_start)
