"""Online DoReMi (Xie et al. 2023, "DoReMi: Optimizing data mixtures speeds up LM pretraining").

DoReMi's proxy-model loop (Xie et al., Algorithm 1) as an online mixer. Each step, with
per-domain losses ``ℓ_j`` of the model and ``ℓ_ref,j`` of a reference model (trained on the
stratified mixture):

    λ_t[j]  = max(ℓ_j − ℓ_ref,j, 0)                               (excess loss, clipped)
    α'_t    = α_{t−1} ⊙ exp(η λ_t)                                  (exponentiated gradient ascent)
    α_t     = (1 − c) α'_t / Σ_i α'_t[i] + c u                       (smoothing with uniform u)

and the averaged ``ᾱ = (1/T) Σ_t α_t`` is what DoReMi hands to its final run (kept here in
``state.avg_weights``). Xie et al. use η = 1, c = 1e-3; the Aioli paper (Chen et al. 2024, "Aioli:
A Unified Optimization Framework for Language Model Data Mixing", arXiv:2411.05735, Tables 13–18)
tunes η = 0.01 and frames DoReMi as a linear dynamic mixing law with diagonal
``A^t_ii = max(ℓ^t_train,i − ℓ_train,i(f_ref), 0)`` (Theorem 1, Prop. 2).

Differences from Xie et al.: they clip the excess per token and weight the training loss by α;
here the mixture is *sampled* with α (equal in expectation, Aioli Lemma 3) and the excess is
clipped per domain mean, since the mixer sees per-domain means. A domain absent from the sampled
batch keeps its last observed loss (``absent="last"``, the default): Xie et al. measure every
domain every step (their batch is not sampled with α), and giving absent domains λ = 0 instead
(``absent="zero"``, our earlier behaviour) starved them for good: once α put ~1e-3 on a domain it
never appeared again, so its excess was never seen (a collapse onto one domain within ten steps,
docs/results.md "Known answers").

With ``use_heldout=True`` the excess is measured on held-out losses every ``every`` steps
(the state's ``wants_heldout`` asks for them; see ``ado_jax.mixing.aioli.wants_heldout``).
"""

from __future__ import annotations

import dataclasses

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ado_jax.mixing.registry import MixerConfig, config_class, option, register
from ado_jax.mixing.base import (DomainStats, Mixer, check_choice, check_fraction, check_int, check_num_domains,
                                 check_number, normalize)


class DoReMiState(NamedTuple):
    """weights: [D] α_t (next batch's mixture); avg_weights: [D] running mean ᾱ of the α_t;
    step: [] int32 updates done; wants_heldout: [] bool; last_loss: [D] each domain's last
    observed loss (NaN before its first), the excess of a domain absent from the batch."""

    weights: jax.Array
    avg_weights: jax.Array
    step: jax.Array
    wants_heldout: jax.Array
    last_loss: jax.Array


def doremi(reference_losses, *, eta: float = 1.0, smoothing: float = 1e-3, use_heldout: bool = False,
           every: int = 1, absent: str = "last") -> Mixer:
    """Online DoReMi against reference per-domain losses.

    Args:
      reference_losses: [D] per-domain losses of the reference model, or [S, D] one row per
        train step (row ``min(step, S-1)`` is used). Must be finite.
      eta: step size η of the exponentiated gradient (Xie et al.: 1; Aioli's tuning: 0.01).
      smoothing: c, weight of the uniform mixture mixed in after each step, in [0, 1].
      use_heldout: measure the excess on held-out losses instead of training losses.
      every: update the weights every ``every`` steps (with ``use_heldout``: at those steps only).
      absent: a domain with no sequence in the batch: ``"last"`` its last observed loss, ``"zero"``
        no excess (λ = 0).
    """
    ref = np.asarray(reference_losses, dtype=np.float32)
    if ref.ndim not in (1, 2) or ref.size == 0:
        raise ValueError(f"reference_losses must be [D] or [S, D], got shape {ref.shape}")
    if not np.all(np.isfinite(ref)):
        raise ValueError(f"reference_losses must be finite, got {ref.tolist() if ref.size < 50 else 'non-finite'}")
    ref_SD = jnp.asarray(ref.reshape(-1, ref.shape[-1]))
    check_number("eta", eta, low=0.0, finite=True)
    check_fraction("smoothing", smoothing)
    every = check_int("every", every, low=1)
    check_choice("absent", absent, ("last", "zero"))

    def wants(step):
        return jnp.asarray(use_heldout) & ((step + 1) % every == 0)

    def init(num_domains) -> DoReMiState:
        d = check_num_domains(num_domains)
        if ref_SD.shape[1] != d:
            raise ValueError(f"reference_losses has {ref_SD.shape[1]} domains but init got num_domains={d}")
        u = jnp.full((d,), 1.0 / d, jnp.float32)
        return DoReMiState(u, u, jnp.zeros((), jnp.int32), wants(jnp.zeros((), jnp.int32)),
                           jnp.full((d,), jnp.nan, jnp.float32))

    def update(stats: DomainStats, state: DoReMiState):
        d = state.weights.shape[0]
        ref_D = ref_SD[jnp.minimum(state.step, ref_SD.shape[0] - 1)]
        if use_heldout:
            loss_D = jnp.where(stats.heldout_valid, stats.heldout_loss, jnp.nan)
        else:
            loss_D = stats.mean_loss()
        seen_D = jnp.isfinite(loss_D)
        last_D = jnp.where(seen_D, loss_D, state.last_loss)
        if absent == "last":
            loss_D = last_D
        excess_D = jnp.where(jnp.isfinite(loss_D), jnp.maximum(loss_D - ref_D, 0.0), 0.0)
        do_step = (state.step + 1) % every == 0
        log_w = jnp.log(jnp.maximum(state.weights, 1e-30)) + eta * excess_D
        new_w = (1.0 - smoothing) * jax.nn.softmax(log_w) + smoothing / d
        w = normalize(jnp.where(do_step, new_w, state.weights))
        step = state.step + 1
        avg = state.avg_weights + (w - state.avg_weights) / step.astype(jnp.float32)
        return w, DoReMiState(w, avg, step, wants(step), last_D)

    return Mixer(init, update, doremi_metrics)


def doremi_metrics(state: DoReMiState) -> dict:
    """What the train loop logs about DoReMi: ``doremi_avg_weights`` [D], the averaged ᾱ that
    DoReMi hands to its final run (``mixer.name=static mixer.weights_from=THIS_RUN`` reads it)."""
    return {"doremi_avg_weights": state.avg_weights}


@register("doremi")
@dataclasses.dataclass
class DoReMiConfig(MixerConfig):
    """Online DoReMi (arXiv:2305.10429) against a reference model's per-domain losses.

    The reference, in order of precedence: ``reference_losses`` typed in; the last ``eval_loss``
    of the run at ``reference_run``; else ``ado-jax train`` trains it first, as DoReMi's step 1
    does (a model of the same size and steps on the ``reference_mixer`` mixture), into
    ``RUN_DIR/reference``, and reads it from there.
    """

    reference_losses: list[float] = option([], "per-domain losses of a reference model (e.g. eval_loss of a "
                                               "balanced run); empty: from reference_run")
    reference_run: str = option("", "run directory (local or gs://) whose last eval_loss per domain is the "
                                    "reference; empty: RUN_DIR/reference, trained first by ado-jax train")
    reference_mixer: str = option("balanced", "mixer of the reference run trained by ado-jax train: balanced "
                                              "(uniform, the Aioli paper's stratified) | natural")
    eta: float = option(1.0, "exponentiated-gradient step size (Xie et al.: 1)")
    smoothing: float = option(1e-3, "weight of the uniform mixture mixed in each step")
    use_heldout: bool = option(False, "excess loss on in-step held-out batches instead of training losses")
    absent: str = option("last", "a domain absent from the batch: last (its last observed loss; Xie et al. see "
                                 "every domain each step) | zero (no excess: it can starve for good)")

    def _reference_dir(self, run_dir: str) -> str:
        return self.reference_run or f"{str(run_dir).rstrip('/')}/reference"

    def prerequisite_runs(self, cfg, run_dir: str) -> list:
        """The reference run, when neither ``reference_losses`` nor ``reference_run`` is given:
        ``cfg`` with the ``reference_mixer`` and an evaluation at its last step, in ``RUN_DIR/reference``."""
        if self.reference_losses or self.reference_run:
            return []
        if self.reference_mixer not in ("balanced", "natural"):
            raise ValueError(f"mixer.reference_mixer={self.reference_mixer!r}: expected balanced | natural")
        train = dataclasses.replace(cfg.train, eval_every=cfg.train.eval_every or cfg.train.steps)
        return [(self._reference_dir(run_dir), dataclasses.replace(cfg, train=train,
                                                                    mixer=config_class(self.reference_mixer)()))]

    def resolve(self, domains, run_dir: str) -> "DoReMiConfig":
        """With ``reference_losses`` read from the reference run's last ``eval_loss`` (by domain name)."""
        if self.reference_losses:
            return self
        from ado_jax.mixing.run_inputs import last_record_with, per_domain

        ref_dir = self._reference_dir(run_dir)
        rec = last_record_with(ref_dir, "eval_loss", "mixer.reference_run")
        losses = per_domain(rec["eval_loss"], domains, "mixer.reference_run", ref_dir)
        return dataclasses.replace(self, reference_losses=losses.tolist())

    def build(self, sizes_D, total_steps: int | None = None, seed: int = 0) -> Mixer:
        """The DoReMi mixer; ValueError unless there is one reference loss per domain of ``sizes_D: [D]``
        (call ``resolve`` first to read ``reference_run``)."""
        del total_steps, seed
        if len(self.reference_losses) != len(sizes_D):
            raise ValueError(f"mixer.reference_losses={self.reference_losses}: doremi needs one reference loss per "
                             f"domain ({len(sizes_D)}): type them in, or give mixer.reference_run=RUN (a run "
                             "trained with --mixer balanced), or leave both empty and ado-jax train trains the "
                             "reference first")
        return doremi(self.reference_losses, eta=self.eta, smoothing=self.smoothing, use_heldout=self.use_heldout,
                      absent=self.absent)
