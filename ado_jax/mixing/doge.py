"""DoGE (Fan, Pagliardini, Jaggi 2024, "DoGE: Domain Reweighting with Generalization Estimation",
arXiv:2310.15393) as an in-step mixer.

DoGE trains a proxy model while reweighting the domains by how well each domain's gradient
aligns with the gradients of the target domains (its "generalization estimation"); the domain
weights averaged over the proxy run are the mixture of the final run. Each step t, with
``g_j = ∇ℓ_j(θ^t)`` the mean gradient of domain j's part of the batch:

    W^t_j     = <g_j, Σ_{i ∈ targets} g_i>                        (universal generalization:
                                                                    targets = all domains)
    α^{t+1}_j ∝ α^t_j exp(η W^t_j)                                  (η = η_t / μ in DoGE's
                                                                    notation: lr over the
                                                                    Bregman coefficient)
    ᾱ         = (1/T) Σ_t α^t                                       (``state.avg_weights``)

The Aioli paper (Chen et al. 2024, "Aioli: A Unified Optimization Framework for Language Model
Data Mixing", arXiv:2411.05735, Thm. 1 and Prop. 3) states DoGE as an instance of linear mixing
optimization with ``A^t_ij = <∇L_val,i, ∇L_train,j>`` and the EGD step ``p_j ∝ p_j exp(η Σ_i
A^t_ij)``: ``W^t_j`` is the column sum of A. Here the gradients are the training batch's (the
universal-generalization setting, as the DoGE reference code does); the train step
(``ado_jax.train``) computes ``DomainStats.grad_dot[i, j] = <g_i, g_j>`` because the state asks
(``wants_grad_dot``).

Differences from DoGE: it reweights the loss of each step by α^{t+1}; here the batch is *sampled*
with α^t (equal in expectation, Aioli Lemma 3), so the weights lag one step, and a domain can be
absent from a batch. DoGE sees every domain every step; an absent domain has no gradient, and
scoring it ``W = 0`` while every present domain scores ``≥ |g_j|² > 0`` takes weight from it every
step it is absent, the rich-get-richer trap DoReMi had. So with ``absent="last"`` (the default)
each inner product ``<g_i, g_j>`` of a pair with an absent domain keeps its last observed value
(``state.gram``), as the reference code keeps the last gradient of each domain it did not update in
an iteration (``flat_grad_mat`` with its ``domain_update_per_iter``) and scores the target sum with
it; ``absent="zero"`` is the earlier behaviour (absent: ``g = 0``).

The DoGE reference code (github.com/Olivia-fsm/DoGE, ``src/trainer.py``) differs from the paper;
its choices are options (``variant="reference"`` turns on all three): it drops the ``<g_j, g_j>``
term when the targets are the training domains (``exclude_self``), divides W by the mean
per-domain gradient norm (``normalize``) and clips the result to ``[0, 5]`` (``score_clip``).
Both the library function ``doge`` and the CLI's ``mixer.variant`` default to the paper's form.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ado_jax.mixing.base import (DomainStats, Mixer, check_choice, check_fraction, check_int, check_num_domains,
                                 check_number, check_weights, normalize)
from ado_jax.mixing.registry import MixerConfig, option, prior_weights, register

Array = jax.Array


class DoGEState(NamedTuple):
    """DoGE's state. weights: [D] α^t (the next batch's mixture); avg_weights: [D] running mean ᾱ
    of the α^t over the proxy run; score: [D] the last W (NaN before the first update);
    step: [] int32 updates done; updates: [] int32 updates that changed the weights (finite
    gradients); wants_grad_dot: [] bool, whether the next update needs ``stats.grad_dot``;
    gram: [D, D] the last observed ``<g_i, g_j>`` of each pair (NaN before both were in one
    batch; scored with when ``absent="last"``)."""

    weights: Array
    avg_weights: Array
    score: Array
    step: Array
    updates: Array
    wants_grad_dot: Array
    gram: Array


def doge_scores(grad_dot_DD: Array, count_D: Array, targets_D: Array, *, exclude_self: bool = False,
                normalize_norm: bool = False, score_clip: tuple[float, float] | None = None) -> Array:
    """[D] DoGE's generalization estimation ``W_j = Σ_i t_i <g_j, g_i>`` from ``grad_dot_DD: [D, D]``.

    Args:
      grad_dot_DD: [D, D] inner products of the per-domain mean gradients.
      count_D: [D] sequences per domain in the batch; a domain with none has no gradient and
        gets ``W = 0`` (its weight then only moves through the normalization).
      targets_D: [D] 0/1 (or non-negative) target weights t: all ones for DoGE's universal
        generalization.
      exclude_self: the reference's ``W_j - t_j <g_j, g_j>`` (its universal setting).
      normalize_norm: the reference's division by the mean gradient norm of present domains.
      score_clip: the reference's clip of W to ``[low, high]`` (its dw_min, dw_max = 0, 5).
    """
    present_D = count_D > 0
    g_DD = jnp.where(present_D[:, None] & present_D[None, :], grad_dot_DD, 0.0)
    w_D = g_DD @ targets_D
    if exclude_self:
        w_D = w_D - targets_D * jnp.diag(g_DD)
    if normalize_norm:
        norms_D = jnp.sqrt(jnp.maximum(jnp.diag(g_DD), 0.0))
        mean_norm = jnp.sum(norms_D) / jnp.maximum(jnp.sum(present_D), 1)
        w_D = w_D / (mean_norm + 1e-6)
    if score_clip is not None:
        w_D = jnp.clip(w_D, score_clip[0], score_clip[1])
    return jnp.where(present_D, w_D, 0.0)


def doge(eta: float | Callable = 0.01, *, prior=None, targets=None, smoothing: float = 0.0, steps: int | None = None,
         exclude_self: bool = False, normalize_norm: bool = False,
         score_clip: tuple[float, float] | None = None, absent: str = "last") -> Mixer:
    """The DoGE mixer (module doc): EGD on the domain weights from per-domain gradient inner products.

    Needs ``stats.grad_dot: [D, D]`` in every update it asks for (``wants_grad_dot``):
    ``ado_jax.train``'s step computes it; in your own loop compute ``<g_i, g_j>`` of the
    per-domain mean gradients yourself (``DomainStats.create(..., grad_dot=...)``).

    Args:
      eta: the EGD step size η (DoGE's η_t / μ; the Aioli paper tunes η = 0.01–0.1, Tables 13–18),
        or a schedule ``step -> η`` (e.g. the model's learning rate divided by μ, as in DoGE).
      prior: [D] α^0 (default uniform, as DoGE).
      targets: [D] target-domain weights t of ``W_j = Σ_i t_i <g_j, g_i>``, used as given (default: all ones,
        universal generalization). Out-of-domain targets (gradients of domains not trained on)
        are not available in-step.
      smoothing: c, ``α ← (1 - c) α + c / D`` after each step (the reference's reweight_eps, 0).
      steps: the proxy run: after this many updates the weights freeze and the state stops
        asking for gradients (``None``: the whole run). With Aioli+DoGE as ``aioli(...,
        init_mixer=doge(steps=init_steps))`` this stops the per-domain gradients after the init
        phase.
      exclude_self: the reference code's variant (``doge_scores``): drop ``<g_j, g_j>``.
      normalize_norm: the reference code's variant: divide W by the mean per-domain gradient norm.
      score_clip: the reference code's variant: clip W to this ``(low, high)`` range.
      absent: a domain with no sequence in the batch: ``"last"`` keeps the last observed inner
        products of its pairs (0 before it was first seen), ``"zero"`` takes its gradient as 0
        (module doc).
    """
    check_choice("absent", absent, ("last", "zero"))
    if not callable(eta):
        check_number("eta", eta, low=0.0, finite=True)
    check_fraction("smoothing", smoothing)
    steps = None if steps is None else check_int("steps", steps, low=1)
    prior_D = None if prior is None else check_weights(prior, name="prior")
    if targets is not None:
        check_weights(targets, name="targets")  # finite, non-negative, not all zero
    targets_D = None if targets is None else np.asarray(targets, np.float32)
    if score_clip is not None and not float(score_clip[0]) <= float(score_clip[1]):
        raise ValueError(f"score_clip must be (low, high) with low <= high, got {score_clip!r}")

    def wants(step):
        return jnp.asarray(True) if steps is None else step < steps

    def init(num_domains) -> DoGEState:
        d = check_num_domains(num_domains)
        for name, v in (("prior", prior_D), ("targets", targets_D)):
            if v is not None and v.size != d:
                raise ValueError(f"{name} has {v.size} entries but init got num_domains={d}")
        w = jnp.full((d,), 1.0 / d, jnp.float32) if prior_D is None else jnp.asarray(prior_D)
        zero = jnp.zeros((), jnp.int32)
        return DoGEState(w, w, jnp.full((d,), jnp.nan, jnp.float32), zero, zero, wants(zero),
                         jnp.full((d, d), jnp.nan, jnp.float32))

    def update(stats: DomainStats, st: DoGEState):
        if stats.grad_dot is None:
            raise ValueError("doge needs stats.grad_dot (per-domain gradient inner products [D, D]): train with "
                             "ado_jax.train's step, which computes them when the mixer asks, or pass "
                             "DomainStats.create(..., grad_dot=...)")
        d = st.weights.shape[0]
        t_D = jnp.ones((d,), jnp.float32) if targets_D is None else jnp.asarray(targets_D)
        batch_DD, count_D = jnp.asarray(stats.grad_dot, jnp.float32), stats.count
        pair_DD = (count_D > 0)[:, None] & (count_D > 0)[None, :]
        finite = jnp.all(jnp.isfinite(jnp.where(pair_DD, batch_DD, 0.0)))
        last_DD = jnp.where(pair_DD, batch_DD, st.gram)  # each pair's last observed inner product
        if absent == "last":  # score with last_DD; a domain never seen yet counts as absent
            count_D = jnp.where(jnp.isnan(jnp.diag(last_DD)), 0.0, 1.0)
            score_D = doge_scores(jnp.nan_to_num(last_DD), count_D, t_D, exclude_self=exclude_self,
                                  normalize_norm=normalize_norm, score_clip=score_clip)
        else:
            score_D = doge_scores(batch_DD, count_D, t_D, exclude_self=exclude_self, normalize_norm=normalize_norm,
                                  score_clip=score_clip)
        step_size = eta(st.step) if callable(eta) else eta
        new_w = jax.nn.softmax(jnp.log(jnp.maximum(st.weights, 1e-30)) + step_size * score_D)
        new_w = (1.0 - smoothing) * new_w + smoothing / d
        ok = st.wants_grad_dot & finite & jnp.all(jnp.isfinite(new_w)) & jnp.all(jnp.isfinite(score_D))
        w = normalize(jnp.where(ok, new_w, st.weights))
        step = st.step + 1
        in_run = st.wants_grad_dot  # the proxy run: the steps whose weights DoGE averages
        avg = jnp.where(in_run, st.avg_weights + (w - st.avg_weights) / step.astype(jnp.float32), st.avg_weights)
        return w, DoGEState(w, avg, jnp.where(ok, score_D, st.score), step, st.updates + ok.astype(jnp.int32),
                            wants(step), jnp.where(ok, last_DD, st.gram))

    return Mixer(init, update, doge_metrics)


def doge_metrics(state: DoGEState) -> dict:
    """What the train loop logs about DoGE: ``doge_avg_weights`` [D] (ᾱ, the final run's mixture)
    and ``doge_score`` [D] (the last generalization estimation W)."""
    return {"doge_avg_weights": state.avg_weights, "doge_score": state.score}


@register("doge")
@dataclasses.dataclass
class DoGEConfig(MixerConfig):
    """DoGE (arXiv:2310.15393): a proxy run whose ``doge_avg_weights`` metric is the final run's mixture."""

    eta: float = option(0.01, "EGD step size on the gradient-alignment scores (DoGE's lr / mu; Aioli's tuning "
                              "0.01-0.1)")
    prior: str = option("uniform", "initial weights: uniform (DoGE) | natural")
    smoothing: float = option(0.0, "weight of the uniform mixture mixed in each step")
    steps: int = option(0, "proxy-run length: freeze the weights and stop computing per-domain gradients after "
                           "this many steps (0: the whole run)")
    variant: str = option("paper", "paper (raw scores W) | reference (drop <g_j, g_j>, divide by the mean "
                                   "gradient norm, clip to [0, 5], as the DoGE code does: a step moves a "
                                   "log-weight by at most 5 eta)")
    absent: str = option("last", "a domain absent from the batch: last (its gradient inner products keep their "
                                 "last values, as the DoGE code keeps skipped domains' gradients) | zero "
                                 "(gradient 0: starves it)")

    def build(self, sizes_D, total_steps: int | None = None, seed: int = 0) -> Mixer:
        """The DoGE mixer for domains of sizes ``sizes_D: [D]``."""
        del total_steps, seed
        check_choice("mixer.variant", self.variant, ("paper", "reference"))
        check_choice("mixer.absent", self.absent, ("last", "zero"))
        ref = self.variant == "reference"
        return doge(self.eta, prior=prior_weights(self.prior, sizes_D), smoothing=self.smoothing,
                    steps=self.steps or None, exclude_self=ref, normalize_norm=ref,
                    score_clip=(0.0, 5.0) if ref else None, absent=self.absent)
