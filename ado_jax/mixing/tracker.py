"""Per-domain loss tracker: segment sums, EMAs and a fixed-size history for the fitter (jittable).

``domain_stats`` (defined in ``mixing.base``, re-exported here) reduces a batch's per-sequence
losses to per-domain sums and counts; it is correct when the batch is sharded:
``jax.ops.segment_sum`` over the global batch array lets XLA insert the cross-device reduction.

``loss_tracker(...)`` is an Optax-like ``Tracker(init, update)`` over a ``TrackerState`` that
keeps, per domain, an EMA of the mean loss and the learning curve ``(n, loss)`` the ADO fitter
needs, where ``n`` is the total number of sequences seen so far (all domains; §3.1 of ADO,
"Adaptive Data Optimization: Dynamic Sample Selection with Scaling Laws", arXiv:2410.11820).

History layout — a *strided buffer that doubles its stride when full*: ``H`` slots; slot ``i``
covers steps ``[skip_first + i * stride, skip_first + (i + 1) * stride)``. Starting from
``stride = subsample_every`` this is exactly the paper's data (skip the first 500 steps, every
10th step) until ``H`` slots are filled; then adjacent slot pairs are merged and the stride
doubles. Memory is constant, the buffer always spans the whole run since ``skip_first`` (as the
paper's fit does), and the points stay uniformly spaced in steps. We chose this over a ring
buffer, which would silently turn the fit into a sliding window over the last ``H * stride``
steps. ``reduce="sample"`` (paper) keeps one step per slot; ``reduce="mean"`` averages every
step in the slot (less noise at no extra memory).

``smoothing="savgol"`` (the reference implementation's choice) runs a Savitzky–Golay filter
(window 101, order 3) over the per-step curve before subsampling, streaming: a ring of the last
101 steps, emitting the smoothed value of step ``t - 50`` at step ``t`` (so the history lags 50
steps, where the reference evaluates the edge with a polynomial fit). Missing steps of a domain
are imputed with its previous loss, as in the reference. Assumes consecutive steps.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ado_jax.mixing.base import DomainStats, check_choice, check_int, check_num_domains, check_number
from ado_jax.mixing.base import domain_stats as domain_stats  # re-exported: defined in mixing.base


class TrackerState(NamedTuple):
    """Fixed-shape tracker state (D domains, H history slots, W smoothing window).

    Attributes:
      n: [] int32 — total sequences counted so far, all domains.
      ema: [D] float32 — biased EMA of each domain's mean loss (read it with ``ema_loss``).
      ema_norm: [D] float32 — ``1 - decay^k`` after k observations, to debias ``ema``.
      last: [D] float32 — each domain's latest mean loss (NaN before the first).
      stride: [] int32 — steps per history slot (doubles when the buffer fills).
      hist_n: [H, D] float32 — sum of ``n`` over the slot's recorded points.
      hist_loss: [H, D] float32 — sum of loss over the slot's recorded points.
      hist_count: [H, D] float32 — number of recorded points per slot (0 = masked).
      ring_loss: [W, D] float32 — last W per-step losses, imputed (savgol only; W = 1 otherwise).
      ring_n: [W] float32 — ``n`` at those steps.
    """

    n: jax.Array
    ema: jax.Array
    ema_norm: jax.Array
    last: jax.Array
    stride: jax.Array
    hist_n: jax.Array
    hist_loss: jax.Array
    hist_count: jax.Array
    ring_loss: jax.Array
    ring_n: jax.Array


class Tracker(NamedTuple):
    """``init(num_domains) -> TrackerState``; ``update(stats, state) -> state``."""

    init: Callable[[int], TrackerState]
    update: Callable[[DomainStats, TrackerState], TrackerState]


def savgol_coeffs(window: int, order: int) -> np.ndarray:
    """[window] weights of the centred Savitzky–Golay smoother (least-squares polynomial fit)."""
    x = np.arange(window, dtype=np.float64) - (window - 1) / 2
    vander = np.vander(x, order + 1, increasing=True)
    return np.linalg.pinv(vander)[0].astype(np.float32)


def loss_tracker(*, ema_decay: float = 0.9, history_len: int = 512, skip_first: int = 500,
                 subsample_every: int = 10, reduce: str = "sample", smoothing: str | None = None,
                 savgol_window: int = 101, savgol_order: int = 3) -> Tracker:
    """Builds the tracker. See the module docstring for the history layout.

    Args:
      ema_decay: in [0, 1); per-domain EMA of the mean loss.
      history_len: H, even, >= 2 — history slots per domain.
      skip_first: steps left out of the history (paper: 500).
      subsample_every: initial stride (paper: 10).
      reduce: "sample" (paper: one step per slot) or "mean" (average of the slot's steps).
      smoothing: None (paper) or "savgol" (reference: window 101, order 3).
    """
    decay = check_number("ema_decay", ema_decay, low=0.0, high=1.0, high_open=True)
    h = check_int("history_len", history_len, low=2)
    if h % 2:
        raise ValueError(f"history_len must be even (slots merge in pairs), got {h}")
    skip = check_int("skip_first", skip_first, low=0)
    every = check_int("subsample_every", subsample_every, low=1)
    check_choice("reduce", reduce, ("sample", "mean"))
    check_choice("smoothing", smoothing, (None, "savgol"))
    win = check_int("savgol_window", savgol_window, low=1) if smoothing else 1
    if smoothing and (win % 2 == 0 or check_int("savgol_order", savgol_order, low=0) >= win):
        raise ValueError(f"savgol needs an odd window > order, got window={win}, order={savgol_order}")
    coeffs_W = jnp.asarray(savgol_coeffs(win, savgol_order) if smoothing else np.ones(1), jnp.float32)

    def init(num_domains: int) -> TrackerState:
        d = check_num_domains(num_domains)
        z_D, z_HD = jnp.zeros((d,), jnp.float32), jnp.zeros((h, d), jnp.float32)
        return TrackerState(
            n=jnp.zeros((), jnp.int32), ema=z_D, ema_norm=z_D, last=jnp.full((d,), jnp.nan, jnp.float32),
            stride=jnp.asarray(every, jnp.int32), hist_n=z_HD, hist_loss=z_HD, hist_count=z_HD,
            ring_loss=jnp.full((win, d), jnp.nan, jnp.float32), ring_n=jnp.zeros((win,), jnp.float32))

    def compact(arrays, stride):
        # Merge slot pairs (2i, 2i+1) -> i, zero the upper half, double the stride.
        def merge(x_HD):
            pairs = x_HD.reshape(h // 2, 2, x_HD.shape[-1])
            kept = pairs[:, 0] if reduce == "sample" else pairs.sum(axis=1)
            return jnp.concatenate([kept, jnp.zeros_like(kept)])
        return tuple(merge(x) for x in arrays), stride * 2

    def record(state: TrackerState, step, n, y_D, ok_D) -> TrackerState:
        rel = step - skip
        arrays, stride = (state.hist_n, state.hist_loss, state.hist_count), state.stride
        arrays, stride = jax.lax.while_loop(
            lambda c: (rel >= 0) & (rel // c[1] >= h), lambda c: compact(*c), (arrays, stride))
        due = (rel >= 0) & ((rel % stride == 0) if reduce == "sample" else True)
        slot = jnp.clip(rel // stride, 0, h - 1)
        put_D = (ok_D & due).astype(jnp.float32)
        hist_n, hist_loss, hist_count = arrays
        return state._replace(
            stride=stride, hist_n=hist_n.at[slot].add(put_D * n),
            hist_loss=hist_loss.at[slot].add(jnp.where(put_D > 0, y_D, 0.0)),
            hist_count=hist_count.at[slot].add(put_D))

    def update(stats: DomainStats, state: TrackerState) -> TrackerState:
        count_D = jnp.where(jnp.isfinite(stats.count) & (stats.count > 0), stats.count, 0.0)
        mean_D = stats.loss_sum / jnp.maximum(count_D, 1.0)
        ok_D = (count_D > 0) & jnp.isfinite(mean_D)  # NaN/inf never enters the state
        mean_D = jnp.where(ok_D, mean_D, 0.0)
        # Exact integer count; saturates instead of wrapping (int32: ~2.1e9 sequences).
        inc = jnp.clip(jnp.round(jnp.sum(count_D)), 0, 2**30).astype(jnp.int32)
        n = jnp.where(state.n > jnp.iinfo(jnp.int32).max - inc, jnp.iinfo(jnp.int32).max, state.n + inc)
        g = jnp.where(ok_D, decay, 1.0)
        state = state._replace(
            n=n, ema=g * state.ema + (1 - g) * mean_D, ema_norm=g * state.ema_norm + (1 - g),
            last=jnp.where(ok_D, mean_D, state.last))
        step = jnp.asarray(stats.step, jnp.int32)
        n_f = n.astype(jnp.float32)
        if smoothing is None:
            return record(state, step, n_f, mean_D, ok_D)
        # Streaming Savitzky–Golay: write step t into the ring, emit the smoothed step t - W//2.
        pos = step % win
        ring_loss = state.ring_loss.at[pos].set(state.last)
        ring_n = state.ring_n.at[pos].set(n_f)
        order_W = (step + 1 + jnp.arange(win)) % win  # oldest -> newest
        window_WD = ring_loss[order_W]
        y_D = coeffs_W @ jnp.where(jnp.isfinite(window_WD), window_WD, 0.0)
        ok_D = jnp.all(jnp.isfinite(window_WD), axis=0) & jnp.isfinite(y_D)
        state = state._replace(ring_loss=ring_loss, ring_n=ring_n)
        return record(state, step - win // 2, ring_n[order_W[win // 2]], y_D, ok_D)

    return Tracker(init, update)


def ema_loss(state: TrackerState) -> jax.Array:
    """[D] debiased EMA of each domain's mean loss; NaN for a domain never observed."""
    return jnp.where(state.ema_norm > 0, state.ema / jnp.where(state.ema_norm > 0, state.ema_norm, 1.0), jnp.nan)


def fit_data(state: TrackerState) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The history as the fitter's input.

    Returns:
      n_DT: [D, H] float32 — sequences seen (mean over the slot's points; 1 where masked).
      loss_DT: [D, H] float32 — loss (mean over the slot's points; 1 where masked).
      mask_DT: [D, H] bool — slot has a finite, positive loss and n > 0.
    """
    c = jnp.maximum(state.hist_count, 1.0)
    n_HD, loss_HD = state.hist_n / c, state.hist_loss / c
    mask_HD = (state.hist_count > 0) & jnp.isfinite(loss_HD) & (loss_HD > 0) & (n_HD > 0)
    return (jnp.where(mask_HD, n_HD, 1.0).T, jnp.where(mask_HD, loss_HD, 1.0).T, mask_HD.T)
