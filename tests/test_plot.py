"""ado-jax plot / compare: figures carry the logged data, absent data is skipped, the table is right."""

import json
import math

import numpy as np
import pytest

from ado_jax import cli
from ado_jax.compare import compare, load_run, summarize
from ado_jax.plot import aioli_figure, bound_labels, fit_events, plot_run, scaling_law_figure

pytest.importorskip("matplotlib")
NAMES = ("a", "b", "c")
LAW = {"a": (0.5, 4.0, 1.0), "b": (0.3, 2.0, 1.5), "c": (0.8, 9.0, 0.5)}  # alpha, beta, eps


def _write_run(run_dir, steps=30, mixer="ado", fit_steps=(10, 20), aioli=False, evals=(15, 30), bad_line=None,
               on_bound=None):
    """A run dir in the loop's format: 4 sequences of each domain per step; ADO fits change at fit_steps.
    ``on_bound``: {domain: fit_on_bound code of its last fit} (others 0); None logs no fit_on_bound."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps({"train": {"batch_size": 12, "seq_len": 8},
                                                     "mixer": {"name": mixer}}))
    lines, fit = [], None
    for step in range(1, steps + 1):
        n = 12 * step
        rec = {"step": step, "loss": 2.0, "lr": 1e-3, "grad_norm": 1.0, "skipped": int(step == 7),
               "weights": {d: 1 / 3 for d in NAMES}, "domain_count": {d: 4.0 for d in NAMES},
               "domain_loss": {d: e + b * n ** -a for d, (a, b, e) in LAW.items()},
               "domain_loss_ema": {d: e + b * n ** -a + 0.01 for d, (a, b, e) in LAW.items()}}
        if mixer == "ado":
            if step in fit_steps:  # each fit recovers the law a bit better
                fit = {d: (a * step / fit_steps[-1], b, e) for d, (a, b, e) in LAW.items()}
            for i, k in enumerate(("alpha", "beta", "eps")):
                rec[f"fit_{k}"] = {d: fit[d][i] if fit else math.nan for d in NAMES}
            if on_bound is not None:
                last = fit is not None and step >= fit_steps[-1]
                rec["fit_on_bound"] = {d: (on_bound.get(d, 0) if last else 0) if fit else math.nan for d in NAMES}
        if aioli:
            rec["aioli_a_colsum"] = {d: (0.0 if step < 10 else 0.1 * (j + 1) * (-1) ** j) for j, d in enumerate(NAMES)}
            if step in (1, 10, 20):  # the loop writes the [D, D] A only when it changes
                rec["aioli_A"] = {r: {c: step * (i + 1) + j for j, c in enumerate(NAMES)} for i, r in enumerate(NAMES)}
        lines.append(json.dumps(rec))
        if step in evals:
            losses = {d: 3.0 + j for j, d in enumerate(NAMES)}
            lines.append(json.dumps({"step": step, "eval_loss": losses, "eval_loss_mean": 4.0}))
    if bad_line is not None:
        lines.insert(bad_line, '{"step": oops')
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run_dir


def _check_png(path):
    from matplotlib.image import imread

    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05, f"{path} looks blank"


def test_ado_run_gets_weights_losses_and_scaling_law_plots(tmp_path):
    run = _write_run(tmp_path / "ado")
    paths = plot_run(run)
    assert [p.name for p in paths] == ["weights.png", "domain_loss.png", "scaling_law.png"]
    assert all(p.parent == run / "plots" for p in paths)
    for p in paths:
        _check_png(p)
    assert not list((run / "plots").glob("*.tmp*"))  # written atomically


def test_scaling_law_forecasts_use_n_total_sequences_and_the_logged_fits(tmp_path):
    fig = scaling_law_figure(load_run(_write_run(tmp_path / "ado")))
    ax_a = fig.axes[0]
    observed = next(ln for ln in ax_a.lines if ln.get_label() == "batch loss")
    n = observed.get_xdata()
    np.testing.assert_allclose(n, 12 * np.arange(1, 31))  # cumulative sequences over all domains
    a, b, e = LAW["a"]
    np.testing.assert_allclose(observed.get_ydata(), e + b * n ** -a)
    fits = [ln for ln in ax_a.lines if ln.get_label().startswith("fit @")]
    # first and last fit, logged from steps 10 and 20 on; the last one is the true law
    assert [ln.get_label().split(":")[0] for ln in fits] == ["fit @ step 10", "fit @ step 20"]
    grid = fits[-1].get_xdata()
    np.testing.assert_allclose(fits[-1].get_ydata(), e + b * grid ** -a, rtol=1e-6)
    np.testing.assert_allclose(fits[0].get_ydata(), e + b * grid ** -(a / 2), rtol=1e-6)
    fit_marks = sorted(ln.get_xdata()[0] for ln in ax_a.lines if ln.get_linestyle() == "--")
    assert fit_marks == [120, 240]  # dashed: n at the time of each fit


def test_fits_on_a_bound_are_marked(tmp_path):
    fig = scaling_law_figure(load_run(_write_run(tmp_path / "ado", on_bound={"b": 2 | 32})))
    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert titles == ["a", "b (last fit on bound: ε max, α max)", "c"]
    fits_b = [ln for ln in fig.axes[1].lines if ln.get_label().startswith("fit @")]
    assert fits_b[-1].get_label().endswith("[on bound: ε max, α max]") and fits_b[-1].get_linestyle() == ":"
    assert fits_b[0].get_linestyle() == "-" and "on bound" not in fits_b[0].get_label()
    assert bound_labels(1) == ["ε min"] and bound_labels(0) == bound_labels(math.nan) == []


def test_fit_events_find_each_change_of_the_fitted_law():
    nan = math.nan
    alpha = np.array([nan, nan, 0.5, 0.5, 0.6, 0.6, 0.6])
    beta = np.array([nan, nan, 2.0, 2.0, 2.0, 2.0, 3.0])
    assert fit_events(alpha, beta, np.ones(7)) == [2, 4, 6]
    assert fit_events(np.full(3, nan), np.ones(3), np.ones(3)) == []


def test_plots_without_their_data_are_skipped(tmp_path):
    run = _write_run(tmp_path / "static", mixer="static", evals=())
    assert [p.name for p in plot_run(run, tmp_path / "out")] == ["weights.png", "domain_loss.png"]
    no_fit = _write_run(tmp_path / "early", fit_steps=())  # ADO before its first fit: all NaN
    assert scaling_law_figure(load_run(no_fit)) is None


def test_aioli_heatmap_shows_the_logged_column_sums(tmp_path):
    run = load_run(_write_run(tmp_path / "aioli", mixer="aioli", aioli=True))
    image = aioli_figure(run).axes[0].images[0]
    a_DS = np.asarray(image.get_array())
    assert a_DS.shape == (3, 30)
    np.testing.assert_allclose(a_DS[:, -1], [0.1, -0.2, 0.3])
    assert np.all(a_DS[:, :9] == 0)
    assert image.norm.vmin == -image.norm.vmax  # diverging scale centred on zero
    (ax_a,) = [ax for ax in aioli_figure(run).axes if ax.get_title() == "A estimated by step 20"]
    a_DD = np.asarray(ax_a.images[0].get_array())
    np.testing.assert_array_equal(a_DD, 20 * np.arange(1, 4)[:, None] + np.arange(3)[None, :])  # last A, row = i


def test_compare_table_and_json(tmp_path):
    a = _write_run(tmp_path / "ado")
    b = _write_run(tmp_path / "natural", steps=20, mixer="natural", evals=())
    row = summarize(load_run(a))
    assert row["steps"] == 30 and row["tokens"] == 30 * 12 * 8 and row["skipped_steps"] == 1
    assert row["eval_loss"] == {"a": 3.0, "b": 4.0, "c": 5.0} and row["eval_step"] == 30
    assert row["ppl_of_mean_loss"] == pytest.approx(math.exp(4.0))
    table = compare([a, b]).splitlines()
    assert table[0] == "| run | mixer | steps | tokens | a | b | c | mean eval loss | ppl = exp(mean) |"
    assert table[2] == f"| {a} | ado | 30 | 2,880 | 3.0000 | 4.0000 | 5.0000 | 4.0000 | {math.exp(4):.3f} |"
    assert table[3] == f"| {b} | natural | 20 | 1,920 | – | – | – | – | – |"
    rows = json.loads(compare([a, b], as_json=True))
    assert rows[0]["eval_loss_mean"] == 4.0 and rows[1]["eval_loss_mean"] is None  # strict JSON, no NaN


def test_cli_plot_and_compare(tmp_path, capsys):
    run = _write_run(tmp_path / "ado")
    assert cli.main(["plot", str(run), "--out", str(tmp_path / "figs")]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "figs" / n) for n in ("weights.png", "domain_loss.png", "scaling_law.png")]
    assert cli.main(["compare", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["mixer"] == "ado"


@pytest.mark.parametrize("case", ["missing", "bad_line"])
def test_unreadable_run_is_a_clear_error(tmp_path, capsys, case):
    run = tmp_path / "nothing" if case == "missing" else _write_run(tmp_path / "bad", bad_line=3)
    assert cli.main(["plot", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'metrics.jsonl'}" in err and ("does not exist" in err if case == "missing" else ":4:" in err)


@pytest.mark.slow  # ADO's in-step fitter compiles for ~30 s on 2 busy cores
def test_plot_a_real_ado_run(tmp_path):
    """The loop's own metrics.jsonl (tiny preset, first ADO fit at step 10) plots end to end."""
    run = tmp_path / "run"
    assert cli.main(["train", "--config", "tiny", "--steps", "14", "--run-dir", str(run), "--mixer", "ado",
                     "--set", "train.progress=false", "--set", "data.max_bytes_per_domain=100000",
                     "--set", "mixer.fit_start=10", "--set", "mixer.fit_every=2", "--set", "mixer.skip_first=0",
                     "--set", "mixer.subsample_every=1", "--set", "mixer.history_len=16",
                     "--set", "train.eval_every=7"]) == 0
    paths = plot_run(run)
    assert [p.name for p in paths] == ["weights.png", "domain_loss.png", "scaling_law.png"]
    for p in paths:
        _check_png(p)
    row = summarize(load_run(run))
    assert row["mixer"] == "ado" and row["steps"] == 14 and row["eval_step"] == 14
    assert row["tokens"] == 14 * 16 * 64 and len(row["eval_loss"]) == 4


def test_matrix_metrics_are_logged_only_when_they_change_and_survive_resume(tmp_path):
    from etils import epath

    from ado_jax.loop import MetricsLog, _to_records

    names = ("a", "b")
    a1, a2 = np.eye(2, dtype=np.float32), np.ones((2, 2), np.float32)
    pending = [(s, {"loss": np.float32(1.0), "aioli_A": a}) for s, a in [(1, a1), (2, a1), (3, a2), (4, a2)]]
    last = {}
    recs = _to_records(pending, names, last)
    assert [("aioli_A" in r) for r in recs] == [True, False, True, False]
    assert recs[2]["aioli_A"] == {"a": {"a": 1.0, "b": 1.0}, "b": {"a": 1.0, "b": 1.0}}
    log = MetricsLog(epath.Path(tmp_path), resume_step=0)
    log.write(recs)
    resumed = MetricsLog(epath.Path(tmp_path), resume_step=3).last_matrices  # as after a restart at 3
    np.testing.assert_array_equal(resumed["aioli_A"], a2)
    assert "aioli_A" not in _to_records(pending[3:], names, resumed)[0]  # as the uninterrupted run
