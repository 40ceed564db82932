"""PNG figures of a run: mixtures, per-domain losses, ADO's scaling-law forecasts, Aioli's A.

``plot_run(run_dir, out_dir=None) -> [paths]`` (CLI: ``ado-jax plot RUN_DIR``) reads
``metrics.jsonl`` and writes, skipping any whose data the run did not log (each ``*_figure(run)``
returns a matplotlib ``Figure``, or None):

- ``weights.png``: the mixture each batch was drawn with, as a stacked area over steps;
- ``domain_loss.png``: per-domain training-loss EMA (lines) and held-out eval losses (markers);
- ``scaling_law.png`` (ADO): per domain, the observed training loss against ``n`` = total
  sequences seen (all domains, as in ADO: "Adaptive Data Optimization: Dynamic Sample Selection
  with Scaling Laws", arXiv:2410.11820) with the forecasts ``L(n) = eps + beta n^-alpha`` of up
  to three of the online fits (first, middle, last; dashed lines mark when each was fit), in the
  style of ADO's Fig. 6. A fit with a parameter on a bound of the fitter's box (logged
  ``fit_on_bound``) is drawn dotted and its legend entry names the bound; a domain whose last
  fit is on a bound gets a red title saying so;
- ``aioli_a.png`` (Aioli): left, the column sums of the normalized interaction matrix Ā over
  steps (how much training on domain j helps all domains); right, the last estimated A itself
  (``A[i, j]``: held-out loss drop of domain i per step trained on domain j), both as heatmaps;
- ``harness.png``: LM Evaluation Harness scores (``ado-jax eval --harness``) over steps, one line
  per task: ``acc_norm`` where the task has it, else ``acc`` (the ADO paper's Table 1 columns).

matplotlib (the ``plot`` extra) is imported only when plotting; figures are drawn with the
object-oriented API (no pyplot global state) and written atomically (temp file, then rename; on
``gs://``, one upload).
"""

from __future__ import annotations

import io

import numpy as np
from etils import epath

from ado_jax import storage
from ado_jax.compare import Run, load_run, per_domain, scalar


def _figure(**kw):
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("ado-jax plot needs matplotlib: pip install 'ado_jax[plot]'") from e
    return Figure(**kw)


def _save(fig, path: epath.Path) -> epath.Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    storage.write_bytes(path, buf.getvalue())  # atomic: a renamed temporary file, or one upload
    return path


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def weights_figure(run: Run):
    """Stacked area of ``weights [S, D]`` over steps; None when no weights were logged."""
    w_SD = per_domain(run.train, "weights", run.names)
    if w_SD is None:
        return None
    steps_S = scalar(run.train, "step")
    fig = _figure(figsize=(8, 4))
    ax = fig.add_subplot()
    ax.stackplot(steps_S, np.nan_to_num(w_SD).T, labels=run.names, colors=_colors(len(run.names)), alpha=0.9)
    ax.set(xlim=(steps_S[0], steps_S[-1]), ylim=(0, 1), xlabel="step", ylabel="mixture weight",
           title=f"Mixture weights ({run.config.get('mixer', {}).get('name', '?')}): {run.path.name}")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    return fig


def losses_figure(run: Run):
    """Per-domain training-loss EMA (lines) and eval losses (markers, same colour)."""
    ema_SD = per_domain(run.train, "domain_loss_ema", run.names)
    eval_ED = per_domain(run.evals, "eval_loss", run.names)
    if ema_SD is None and eval_ED is None:
        return None
    fig = _figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    for d, (name, c) in enumerate(zip(run.names, _colors(len(run.names)))):
        if ema_SD is not None:
            ax.plot(scalar(run.train, "step"), ema_SD[:, d], color=c, lw=1.2, label=f"{name}")
        if eval_ED is not None:
            ax.plot(scalar(run.evals, "step"), eval_ED[:, d], "o--", color=c, ms=4, lw=0.8,
                    label=None if ema_SD is not None else name)
    finite = [a[np.isfinite(a)] for a in (ema_SD, eval_ED) if a is not None]
    lo, hi = min(a.min() for a in finite if a.size), max(a.max() for a in finite if a.size)
    ax.set(xlabel="step", ylabel="loss (nats/token)", ylim=(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo)),
           title="Per-domain loss: train EMA (lines), held-out eval (markers)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    return fig


def fit_events(alpha_S: np.ndarray, beta_S: np.ndarray, eps_S: np.ndarray) -> list[int]:
    """Indices of the records at which one domain's fitted law changed (a new online fit).

    Args:
      alpha_S: the domain's logged ``fit_alpha``, [S] (NaN before its first fit).
      beta_S: its ``fit_beta``, [S].
      eps_S: its ``fit_eps``, [S].
    """
    p_S3 = np.stack([alpha_S, beta_S, eps_S], axis=1)
    ok_S = np.all(np.isfinite(p_S3), axis=1)
    events, prev = [], None
    for i in np.flatnonzero(ok_S):
        if prev is None or not np.array_equal(p_S3[i], prev):
            events.append(int(i))
            prev = p_S3[i]
    return events


# The bits of ``scaling_law.FitInfo.on_bound`` (logged as ``fit_on_bound``), as
# ``scaling_law.bound_names`` decodes them; repeated here so plotting does not import jax.
_BOUND_NAMES = ("ε min", "ε max", "β min", "β max", "α min", "α max")


def bound_labels(on_bound) -> list[str]:
    """Names of the bounds set in one logged ``fit_on_bound`` value ([] for 0, NaN or absent)."""
    if on_bound is None or not np.isfinite(on_bound) or on_bound <= 0:
        return []
    return [name for i, name in enumerate(_BOUND_NAMES) if int(on_bound) >> i & 1]


def scaling_law_figure(run: Run, max_fits: int = 3):
    """ADO (arXiv:2410.11820) Fig. 6: each domain's observed loss vs ``n`` with forecasts of up to ``max_fits`` fits."""
    fits = {k: per_domain(run.train, f"fit_{k}", run.names) for k in ("alpha", "beta", "eps")}
    on_bound_SD = per_domain(run.train, "fit_on_bound", run.names)  # None for runs before it was logged
    if any(v is None for v in fits.values()) or not np.isfinite(fits["alpha"]).any():
        return None
    count_SD = per_domain(run.train, "domain_count", run.names)
    loss_SD = per_domain(run.train, "domain_loss", run.names)
    if count_SD is None or loss_SD is None:
        return None
    ema_SD = per_domain(run.train, "domain_loss_ema", run.names)
    n_S = np.cumsum(np.nansum(count_SD, axis=1))  # total sequences seen after each step, all domains
    D = len(run.names)
    cols = min(D, 4)
    rows = -(-D // cols)
    fig = _figure(figsize=(3.2 * cols, 2.7 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    n_grid = np.geomspace(max(n_S[0], 1.0), n_S[-1], 200)
    for d, ax in enumerate(axes):
        if d >= D:
            ax.set_visible(False)
            continue
        ax.plot(n_S, loss_SD[:, d], ".", color="0.7", ms=2, label="batch loss")
        if ema_SD is not None:
            ax.plot(n_S, ema_SD[:, d], color="k", lw=1, label="loss EMA")
        events = fit_events(fits["alpha"][:, d], fits["beta"][:, d], fits["eps"][:, d])
        chosen = sorted({events[0], events[len(events) // 2], events[-1]}) if events else []
        for i, c in zip(chosen[-max_fits:], ["tab:blue", "tab:orange", "tab:red"]):
            a, b, e = fits["alpha"][i, d], fits["beta"][i, d], fits["eps"][i, d]
            held = bound_labels(on_bound_SD[i, d]) if on_bound_SD is not None else []
            ax.plot(n_grid, e + b * n_grid ** -a, color=c, lw=1.4, ls=":" if held else "-",
                    label=f"fit @ step {run.train[i]['step']}: α={a:.2f}"
                          + (f" [on bound: {', '.join(held)}]" if held else ""))
            ax.axvline(n_S[i], color=c, ls="--", lw=0.8)
        last_held = bound_labels(on_bound_SD[events[-1], d]) if events and on_bound_SD is not None else []
        seen = np.concatenate([loss_SD[:, d], ema_SD[:, d] if ema_SD is not None else []])
        seen = seen[np.isfinite(seen)]
        if seen.size:
            lo, hi = np.percentile(seen, [0.5, 99.5])
            ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))  # forecasts explode at small n
        ax.set_xscale("log")
        if last_held:
            ax.set_title(f"{run.names[d]} (last fit on bound: {', '.join(last_held)})", fontsize=8,
                         color="tab:red")
        else:
            ax.set_title(run.names[d], fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="lower left")
    fig.supxlabel("n = total sequences seen (all domains)")
    fig.supylabel("training loss (nats/token)")
    fig.suptitle("ADO scaling-law forecasts L(n) = ε + β n^-α vs actual loss (dashed: time of fit)")
    return fig


def last_matrix(records: list, key: str, names: tuple) -> tuple[int, np.ndarray] | None:
    """The step and value ``[D, D]`` of the last record holding the matrix metric ``key``."""
    for r in reversed(records):
        if key in r:
            return r["step"], np.array([[r[key][i][j] for j in names] for i in names], np.float64)
    return None


def aioli_figure(run: Run):
    """Aioli's Ā column sums ``[S, D]`` over steps, and its last estimated ``A [D, D]``."""
    a_SD = per_domain(run.train, "aioli_a_colsum", run.names)
    if a_SD is None or not np.isfinite(a_SD).any():
        return None
    last = last_matrix(run.train, "aioli_A", run.names)
    steps_S = scalar(run.train, "step")
    d = len(run.names)
    fig = _figure(figsize=(14 if last else 8, 0.45 * d + 2.5))
    axes = fig.subplots(1, 2 if last else 1, gridspec_kw={"width_ratios": [1.6, 1]} if last else None)
    ax = axes[0] if last else axes
    lim = float(np.nanmax(np.abs(a_SD))) or 1.0
    im = ax.imshow(a_SD.T, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest",
                   extent=(steps_S[0] - 0.5, steps_S[-1] + 0.5, d - 0.5, -0.5))
    ax.set_yticks(range(d), run.names, fontsize=8)
    ax.set(xlabel="step", title="column sums of normalized Ā: how much training on j helps all")
    fig.colorbar(im, ax=ax, label="Σ_i Ā[i, j]")
    if last:
        step, a_DD = last
        ax = axes[1]
        lim = float(np.nanmax(np.abs(a_DD))) or 1.0
        im = ax.imshow(a_DD, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_xticks(range(d), run.names, fontsize=7, rotation=60, ha="right")
        ax.set_yticks(range(d), run.names, fontsize=7)
        ax.set(xlabel="trained on (j)", ylabel="held-out loss of (i)", title=f"A estimated by step {step}")
        if d <= 10:
            for i in range(d):
                for j in range(d):
                    ax.text(j, i, f"{a_DD[i, j]:.2g}", ha="center", va="center", fontsize=6,
                            color="white" if abs(a_DD[i, j]) > 0.6 * lim else "black")
        fig.colorbar(im, ax=ax, label="loss drop per step")
    fig.suptitle("Aioli's interaction matrix A")
    return fig


def harness_figure(run: Run):
    """Each harness task's accuracy (``acc_norm``, else ``acc``) at every evaluated step."""
    points: dict = {}
    for rec in run.harness:
        for task, metrics in rec["harness"].items():
            key = "acc_norm" if "acc_norm" in metrics else "acc" if "acc" in metrics else None
            if key:
                points.setdefault(f"{task} ({key})", {})[rec["step"]] = metrics[key]
    if not points:
        return None
    fig = _figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for (label, by_step), color in zip(sorted(points.items()), _colors(len(points))):
        steps = sorted(by_step)
        ax.plot(steps, [by_step[s] for s in steps], "o-", color=color, ms=4, label=label)
    ax.set(xlabel="step", ylabel="accuracy", title="LM Evaluation Harness (zero-shot)")
    ax.legend(fontsize=7)
    return fig


PLOTS = {"weights.png": weights_figure, "domain_loss.png": losses_figure,
         "scaling_law.png": scaling_law_figure, "aioli_a.png": aioli_figure, "harness.png": harness_figure}


def plot_run(run_dir, out_dir=None) -> list[epath.Path]:
    """Writes every plot the run has data for into ``out_dir`` (default ``run_dir/plots``); returns the
    paths. Either may be local or ``gs://`` (a figure is then one upload)."""
    run = load_run(run_dir)
    if not run.train and not run.evals and not run.harness:
        raise ValueError(f"{run.path / 'metrics.jsonl'} has no records to plot")
    out = epath.Path(out_dir) if out_dir is not None else run.path / "plots"
    out.mkdir(parents=True, exist_ok=True)
    figures = {name: fn(run) for name, fn in PLOTS.items()}  # each None when the run lacks its data
    return [_save(fig, out / name) for name, fig in figures.items() if fig is not None]
