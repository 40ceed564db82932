"""Offline mixture fits: DML recovers a generated law's A, its optimum matches a brute-force oracle,
RegMix's pieces match numpy oracles, both find the simulator's best static mixture, and the
weights JSON trains directly (mixer.weights_from)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from ado_jax.mixing import dml, offline_fits, regmix
from ado_jax.mixing.basic import StaticConfig, read_weights_file
from ado_jax.mixing.grid_search import simplex_grid
from ado_jax.mixing.simulator import PowerLawEnv, static_runs

A = np.array([[2.0, 0.5, 0.2], [0.3, 1.5, 0.1], [0.6, 0.4, 1.2]])
C = np.array([2.0, 2.5, 1.8])
B = np.array([3.0, 2.0, 2.5])


def _law(p_KD):
    """The data mixing law as the Aioli paper writes it: L_i(p) = c_i + b_i exp(-sum_j A_ij p_j)."""
    return C[None] + B[None] * np.exp(-p_KD @ A.T)


def _centered(a):
    return a - a.mean(axis=1, keepdims=True)


def test_dml_recovers_a_generated_law_up_to_its_row_shift():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), 20)
    exact = dml.fit_dml(p, _law(p))
    np.testing.assert_allclose(exact.a, _centered(A), atol=1e-4)  # A is identified up to a shift per row
    np.testing.assert_allclose(exact.c, C, atol=1e-4)
    np.testing.assert_allclose(exact.b, B * np.exp(-A.mean(axis=1)), rtol=1e-4)
    noisy = dml.fit_dml(p, _law(p) + rng.normal(0, 0.005, (20, 3)))
    assert np.abs(noisy.a - _centered(A)).max() < 0.1, noisy.a
    fresh = rng.dirichlet(np.ones(3), 200)
    assert np.abs(dml.dml_predict(noisy, fresh) - _law(fresh)).max() < 0.02


def test_dml_optimum_matches_a_brute_force_search_of_the_same_law():
    law = dml.DMLFit(C, B, A, np.zeros(3))
    target = np.array([0.5, 0.3, 0.2])
    p = dml.dml_optimum(law, target)
    grid = simplex_grid(3, 200).astype(np.float64)
    best = grid[np.argmin(_law(grid) @ target)]
    assert np.abs(p - best).max() < 0.01, (p, best)
    assert _law(p[None]) @ target <= (_law(best[None]) @ target) + 1e-9


def test_dml_needs_m_plus_one_runs():
    with pytest.raises(ValueError, match="at least D \\+ 1 = 4 runs"):
        dml.fit_dml(np.eye(3), np.ones((3, 3)))


def test_regmix_linear_optimum_and_candidates_match_numpy_oracles():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(4), 50)
    coef = np.array([0.3, -0.2, 0.1, 0.5])
    y = p @ coef + 2.0
    predict = regmix.fit_linear(p, y)
    q = rng.dirichlet(np.ones(4), 10)
    np.testing.assert_allclose(predict(q), q @ coef + 2.0, atol=1e-10)
    cand = regmix.regmix_candidates(np.ones(4), 1000, seed=3)
    want = cand[np.argsort(cand @ coef)[:16]].mean(axis=0)
    np.testing.assert_allclose(regmix.regmix_optimum(predict, cand, 16), want / want.sum(), atol=1e-12)
    prior = np.array([0.6, 0.3, 0.05, 0.05])
    capped = regmix.regmix_candidates(prior, 500, seed=0, strengths=np.geomspace(0.1, 5, 15), temperature=0.5,
                                      max_epochs=3, min_weight=0.02)
    assert capped.shape == (500, 4) and np.allclose(capped.sum(axis=1), 1)
    assert np.all((capped == 0) | (capped >= 0.02 * 0.99))  # below min_weight: zeroed, then renormalized
    assert np.all(capped[:, 2:] <= 3 * 0.05 / (1 - 0.02 * 4) + 1e-9)  # the epoch cap, before renormalizing


def test_cross_validation_metrics_match_scipy():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(3), 30)
    y = p @ np.array([1.0, 2.0, 3.0]) + rng.normal(0, 0.1, 30)
    out = offline_fits.cross_validate(lambda idx: regmix.fit_linear(p[idx], y[idx]), p, y, folds=5, seed=0)
    fold_of = np.random.default_rng(0).permutation(30) % 5
    pred = np.empty(30)
    for f in range(5):
        tr, te = fold_of != f, fold_of == f
        design = np.c_[p[tr], np.ones(tr.sum())]
        pred[te] = np.c_[p[te], np.ones(te.sum())] @ np.linalg.lstsq(design, y[tr], rcond=None)[0]
    assert out["spearman"] == pytest.approx(spearmanr(pred, y).statistic)
    assert out["pearson"] == pytest.approx(pearsonr(pred, y).statistic)
    assert out["mse"] == pytest.approx(np.mean((pred - y) ** 2))


def test_targets():
    t = offline_fits.make_table(np.eye(2), np.ones((2, 3)), ["a", "b"], ["a", "b", "held"], sizes=[3.0, 1.0])
    np.testing.assert_allclose(offline_fits.target_weights(t, "uniform"), [0.5, 0.5, 0])
    np.testing.assert_allclose(offline_fits.target_weights(t, "natural"), [0.75, 0.25, 0])
    np.testing.assert_allclose(offline_fits.target_weights(t, "eval_only"), [0, 0, 1])
    np.testing.assert_allclose(offline_fits.target_weights(t, "domain:b"), [0, 1, 0])
    np.testing.assert_allclose(offline_fits.target_weights(t, "all"), [1 / 3] * 3)
    np.testing.assert_allclose(offline_fits.target_weights(t, "domains:a,held"), [0.5, 0, 0.5])
    with pytest.raises(ValueError, match="domain:NAME"):
        offline_fits.target_weights(t, "domain:nope")
    with pytest.raises(ValueError, match="domains:NAME,NAME"):
        offline_fits.target_weights(t, "domains:a,nope")


ENV = PowerLawEnv(eps=jnp.array([1.0, 1.5, 0.8]), beta=jnp.array([3.0, 2.0, 2.5]), alpha=jnp.array([0.5, 0.3, 0.4]),
                  transfer=jnp.array([[1, .3, .1], [.2, 1, .1], [.1, .4, 1.]]), scale=500.0)
KEY = jax.random.PRNGKey(0)


def simulator_optimum():
    """The simulator's best static mixture for the uniform target, by a 1,891-point grid."""
    grid = simplex_grid(3, 60)
    mean = np.asarray(static_runs(ENV, grid, 500, KEY)).mean(axis=1)
    return grid[np.argmin(mean)], float(mean.min()), float(mean.max() - mean.min())


def sweep_table(k, seed=1, noise=0.005):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(3), k)
    return offline_fits.make_table(p, np.asarray(static_runs(ENV, p, 500, KEY)) + rng.normal(0, noise, (k, 3)))


def true_mean_loss(w):
    return float(np.asarray(static_runs(ENV, np.asarray(w)[None], 500, KEY)).mean())


def test_dml_finds_the_simulators_best_mixture_from_16_noisy_runs():
    best, best_loss, spread = simulator_optimum()
    fit = offline_fits.fit_mixture(sweep_table(16), "dml", "uniform")
    assert np.abs(fit.weights - best).sum() < 0.1, (fit.weights, best)
    assert true_mean_loss(fit.weights) - best_loss < 0.01 * spread
    assert fit.cv["spearman"] > 0.9
    # RegMix's linear regression cannot represent an interior optimum: its top-k mean sits near a vertex.
    lin = offline_fits.fit_mixture(sweep_table(16), "regmix-linear", "uniform", num_candidates=20_000)
    assert lin.weights.max() > 0.9


def test_weights_json_trains_directly(tmp_path):
    fit = offline_fits.fit_mixture(sweep_table(8), "regmix-linear", "uniform", num_candidates=1000, cv=False)
    path = tmp_path / "w.json"
    offline_fits.write_weights(str(path), fit, ["a", "b", "c"])
    mixer = StaticConfig(weights_from=str(path)).build([1.0, 1.0, 1.0])
    np.testing.assert_allclose(np.asarray(mixer.init(3).weights), fit.weights, rtol=1e-6)
    with pytest.raises(ValueError, match="3 weights \\(for domains \\['a', 'b', 'c'\\]\\) but the run has 2"):
        StaticConfig(weights_from=str(path)).build([1.0, 1.0])
    with pytest.raises(ValueError, match="not both"):
        StaticConfig(weights=[1, 1, 1], weights_from=str(path)).build([1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="no such file"):
        read_weights_file(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{weights")
    with pytest.raises(ValueError, match="not JSON"):
        read_weights_file(str(tmp_path / "bad.json"))
    (tmp_path / "neg.json").write_text(json.dumps({"weights": [1, -1]}))
    with pytest.raises(ValueError, match="non-negative"):
        read_weights_file(str(tmp_path / "neg.json"), 2)


def test_cli_fit_mixture_writes_weights(tmp_path, capsys):
    from ado_jax.cli import main

    t = sweep_table(12)
    rows = ["weight/a,weight/b,weight/c,loss/a,loss/b,loss/c"]
    rows += [",".join(map(str, [*p, *y])) for p, y in zip(t.mixtures, t.losses)]
    (tmp_path / "runs.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "dml.json"
    assert main(["fit-mixture", str(tmp_path / "runs.csv"), "--method", "dml", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["domains"] == ["a", "b", "c"] and written["method"] == "dml"
    assert written["cv"]["runs"] == 12 and abs(sum(written["weights"]) - 1) < 1e-9
    (tmp_path / "tiny.json").write_text(json.dumps({"mixtures": [[1, 0], [0, 1]], "losses": [[1, 2], [2, 1]]}))
    assert main(["fit-mixture", str(tmp_path / "tiny.json"), "--out", str(out), "--folds", "0"]) == 2
    assert "at least D + 1 = 3 runs" in capsys.readouterr().err
