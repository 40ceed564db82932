"""Grid search over static mixtures (the "GS" baseline of the Aioli paper, §6).

Aioli: "Aioli: A Unified Optimization Framework for Language Model Data Mixing" (Chen et al. 2024,
arXiv:2411.05735).

Evaluate a user callback (e.g. a short training run, or a simulator run) at points of the
simplex and keep the best::

    result = grid_search(lambda w: final_loss_of_a_run_with(w), num_domains=3, resolution=10)
    mixer = ado_jax.mixing.static(result.weights)

``simplex_grid`` enumerates the regular grid ``{w : w_i = n_i / resolution, Σ n_i = resolution}``
(C(resolution + D − 1, D − 1) points); for many domains pass your own ``points`` (the paper uses
Dirichlet samples, ``dirichlet_points``). With ``batched=True`` the callback gets all points
at once (``[N, D] -> [N]``), e.g. a ``jax.vmap`` over simulator runs.
"""

from __future__ import annotations

import itertools
from math import comb
from typing import Callable, NamedTuple

import jax
import numpy as np


class GridResult(NamedTuple):
    """weights: [D] best point; value: its score; points: [N, D]; values: [N] (non-finite → worst)."""

    weights: np.ndarray
    value: float
    points: np.ndarray
    values: np.ndarray


def simplex_grid(num_domains: int, resolution: int, max_points: int = 100_000) -> np.ndarray:
    """[N, D] float32: every mixture whose entries are multiples of ``1 / resolution``."""
    d, r = int(num_domains), int(resolution)
    if d < 1 or r < 1:
        raise ValueError(f"num_domains and resolution must be >= 1, got {num_domains!r}, {resolution!r}")
    n = comb(r + d - 1, d - 1)
    if n > max_points:
        raise ValueError(f"simplex_grid({d}, {r}) has {n} points > max_points={max_points}; "
                         "lower resolution or pass points (e.g. dirichlet_points)")
    # Stars and bars: choose d-1 bar positions among r+d-1 slots.
    rows = []
    for bars in itertools.combinations(range(r + d - 1), d - 1):
        edges = (-1,) + bars + (r + d - 1,)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(d)])
    return (np.asarray(rows, np.float32) / r).reshape(n, d)


def dirichlet_points(key, num_domains: int, num_points: int, alpha: float = 1.0) -> np.ndarray:
    """[N, D] float32 mixtures drawn from Dirichlet(alpha · 1) (the paper's sweeps, §4.1)."""
    if int(num_points) < 1 or int(num_domains) < 1 or not alpha > 0:
        raise ValueError(f"need num_points, num_domains >= 1 and alpha > 0, got "
                         f"{num_points!r}, {num_domains!r}, {alpha!r}")
    alphas = np.full((int(num_domains),), float(alpha), np.float32)
    return np.asarray(jax.random.dirichlet(key, alphas, shape=(int(num_points),)), np.float32)


def grid_search(evaluate: Callable, num_domains: int | None = None, *, resolution: int = 10,
                points=None, batched: bool = False, minimize: bool = True) -> GridResult:
    """Scores static mixtures with ``evaluate`` and returns the best.

    Args:
      evaluate: ``weights [D] -> scalar`` (or ``[N, D] -> [N]`` with ``batched``); lower is
        better unless ``minimize=False``. Non-finite scores count as the worst.
      num_domains: D, for the regular grid (ignored when ``points`` is given).
      resolution: grid step ``1 / resolution``.
      points: [N, D] mixtures to try instead of the grid (rows normalized to sum 1).

    Raises:
      ValueError: if no point has a finite score, or the points are not valid mixtures.
    """
    if points is None:
        if num_domains is None:
            raise ValueError("grid_search needs num_domains or points, got neither")
        pts = simplex_grid(num_domains, resolution)
    else:
        pts = np.asarray(points, np.float64)
        if pts.ndim != 2 or pts.shape[0] == 0 or not np.all(np.isfinite(pts)) or np.any(pts < 0):
            raise ValueError(f"points must be a non-empty [N, D] array of non-negative finite values, "
                             f"got shape {pts.shape}")
        sums = pts.sum(axis=1, keepdims=True)
        if np.any(sums <= 0):
            raise ValueError("every row of points must have a positive sum")
        pts = (pts / sums).astype(np.float32)
    if batched:
        vals = np.asarray(evaluate(pts), np.float64).reshape(-1)
        if vals.shape[0] != pts.shape[0]:
            raise ValueError(f"batched evaluate returned {vals.shape[0]} scores for {pts.shape[0]} points")
    else:
        vals = np.asarray([float(evaluate(p)) for p in pts], np.float64)
    signed = vals if minimize else -vals
    signed = np.where(np.isfinite(signed), signed, np.inf)
    if not np.any(np.isfinite(signed)):
        raise ValueError("grid_search: evaluate returned no finite score")
    best = int(np.argmin(signed))
    values = signed if minimize else -signed
    return GridResult(pts[best], float(vals[best]), pts, values)
