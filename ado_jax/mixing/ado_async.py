"""Host-side asynchronous scaling-law fits for ADO (optional).

The ADO paper ("Adaptive Data Optimization: Dynamic Sample Selection with Scaling Laws", Jiang
et al. 2024, arXiv:2410.11820; App. A) notes the fit "could, in principle, take place
asynchronously in parallel with model training since it does not require any information from
the model other than the loss". ``HostFitter`` does that: it copies the tracker's history to
the host, fits in a background thread (on the CPU backend by default, so it does not compete
with the train step for the accelerator), and ``apply`` merges the result into the ADO state
when it is ready::

    mixer = ado_jax.mixing.ado(prior, fit_in_step=False)
    fitter = HostFitter(maxiter=30)
    for step in range(num_steps):
        mixer_state = fitter.apply(mixer_state)       # no-op until a fit has finished
        ...                                            # train step updates mixer_state
        if step >= 5000 and step % 1000 == 0:
            fitter.submit(mixer_state)

Fits land a few steps after they were requested, so unlike the in-step fit this is not
bit-reproducible across runs; use it when the in-step fit's cost matters.
"""

from __future__ import annotations

import concurrent.futures
import functools

import jax
import numpy as np

from ado_jax.mixing import scaling_law, tracker as tracker_lib
from ado_jax.mixing.ado import AdoState, set_fit


class HostFitter:
    """Runs ``scaling_law.fit_power_law`` on a host copy of an ADO history in a worker thread.

    Args:
      min_fit_points: a domain's fit is rejected with fewer valid history points (as in ``ado``).
      device: where the fit runs; default the first CPU device.
      warm_start: refit from the state's previous fit (``fit_power_law(init=...)``, as
        ``ado(warm_start=True)``); the previous fit is copied with the history at ``submit``.
      **fit_kwargs: forwarded to ``fit_power_law`` (solver, grid, maxiter, bounds, ...; the
        default ``bounds="data"`` as in ``ado``). Each fit's ``FitInfo`` diagnostics are
        merged into the state with it.
    """

    def __init__(self, *, min_fit_points: int = 8, device=None, warm_start: bool = True, **fit_kwargs):
        self._min_points = int(min_fit_points)
        self._device = device if device is not None else jax.devices("cpu")[0]
        self._warm = bool(warm_start)
        self._fit = jax.jit(functools.partial(scaling_law.fit_power_law, return_info=True, **fit_kwargs))
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._future: concurrent.futures.Future | None = None

    def busy(self) -> bool:
        """True while a submitted fit is still running."""
        return self._future is not None and not self._future.done()

    def submit(self, state: AdoState) -> bool:
        """Starts a fit on a host copy of ``state``'s history; False (and nothing starts) if a
        fit is already running or a finished one has not been applied yet."""
        if self._future is not None:
            return False
        data = tuple(np.asarray(x) for x in jax.device_get(tracker_lib.fit_data(state.tracker)))
        if self._warm:   # the previous fit per domain (NaN: none yet) and its objective
            fitted = np.asarray(state.fitted)
            prev = tuple(np.where(fitted, np.asarray(p), np.nan).astype(np.float32) for p in state.params)
            data = data + (prev, np.where(fitted, np.asarray(state.objective), np.inf).astype(np.float32))
        self._future = self._pool.submit(self._run, data)
        return True

    def _run(self, data):
        n_DT, loss_DT, mask_DT = (jax.device_put(x, self._device) for x in data[:3])
        warm = {}
        if len(data) > 3:
            warm = dict(init=scaling_law.PowerLaw(*(jax.device_put(p, self._device) for p in data[3])),
                        init_objective=jax.device_put(data[4], self._device))
        params, obj_D, info = self._fit(n_DT, loss_DT, mask_DT, **warm)
        ok_D = data[2].sum(axis=1) >= self._min_points
        return jax.device_get(params), np.asarray(obj_D), ok_D, jax.device_get(info)

    def apply(self, state: AdoState, block: bool = False) -> AdoState:
        """Merges a finished fit into ``state`` (``set_fit``); returns ``state`` unchanged when
        none is ready. ``block=True`` waits for a running fit. Re-raises a fit's exception."""
        if self._future is None or not (block or self._future.done()):
            return state
        future, self._future = self._future, None
        params, obj_D, ok_D, info = future.result()
        return set_fit(state, params, obj_D, ok_D, info)

    def close(self) -> None:
        """Waits for a running fit and stops the worker thread."""
        self._pool.shutdown(wait=True)
