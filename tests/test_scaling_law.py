"""Tests for the power-law fitter: recovery, bounds, forecasts, objective, NaN handling, jit/cond,
solvers, sharding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ado_jax.mixing import scaling_law as sl

# (log_eps, log_beta, alpha): interior, eps near the reference bound, alpha + beta near the
# reference's, flat curve, and true eps BELOW the reference bound (e^0.1 < e^0.5: with
# bounds="reference" the fit must hold log_eps at 0.5; the default data box recovers it).
TRUE = np.array([[1.0, 3.0, 0.3], [0.6, 5.0, 0.5], [1.1, 6.3, 0.75], [1.2, 1.0, 0.1],
                 [0.1, 3.0, 0.3]], np.float32)
N_T = np.geomspace(1e3, 1e7, 120).astype(np.float32)
N_DT = np.broadcast_to(N_T, (len(TRUE), N_T.size))
ALL_T = np.ones(N_DT.shape, bool)


def noisy_curves(true_D3, sigma=0.002, seed=0):
    """[D, T] losses of the given laws with multiplicative log-normal noise."""
    rng = np.random.RandomState(seed)
    law = sl.PowerLaw(*(jnp.asarray(c) for c in true_D3.T))
    clean = np.asarray(sl.predict(law, np.broadcast_to(N_T, (len(true_D3), N_T.size))))
    return clean * np.exp(sigma * rng.randn(*clean.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def fit():
    """The default fit, jitted once: every use passes [5, 120] n, loss and mask (one compile)."""
    return jax.jit(sl.fit_power_law)


def test_grids_match_paper_and_reference():
    paper, ref = sl.make_grid("paper"), sl.make_grid("reference")
    assert paper.shape == (336, 3) and ref.shape == (512, 3)
    assert sorted(set(paper[:, 0])) == [-2, -1.5, -1, -0.5, 1, 1.5]
    assert sorted(set(ref[:, 0])) == list(np.arange(-2, 2, 0.5))
    np.testing.assert_allclose(sorted(set(paper[:, 2])), np.arange(1, 8) / 10, rtol=1e-6)
    np.testing.assert_allclose(sorted(set(ref[:, 2])), np.arange(8) / 10, atol=1e-7)
    assert sorted(set(ref[:, 1])) == list(range(-2, 6))


def test_recovers_known_power_laws_in_the_data_box(fit):
    loss_DT = noisy_curves(TRUE)
    params, obj_D = fit(N_DT, loss_DT, ALL_T)
    got = np.stack([np.asarray(p) for p in params], -1)
    np.testing.assert_allclose(got[:, 2], TRUE[:, 2], atol=0.03)      # alpha
    np.testing.assert_allclose(got[:, 0], TRUE[:, 0], atol=0.03)      # log_eps, also e^0.1
    np.testing.assert_allclose(got[:, 1], TRUE[:, 1], atol=0.25)      # log_beta
    pred = np.asarray(sl.predict(params, N_DT))
    np.testing.assert_allclose(pred, noisy_curves(TRUE, sigma=0.0), rtol=3e-3)
    assert np.all(np.asarray(obj_D) < 1e-5)


def test_reference_bounds_hold_the_old_box():
    loss_DT = noisy_curves(TRUE)
    params, obj_D, info = jax.jit(lambda *a: sl.fit_power_law(*a, bounds="reference", return_info=True))(
        N_DT, loss_DT, ALL_T)
    got = np.stack([np.asarray(p) for p in params], -1)
    ok = slice(0, 4)                                  # the laws inside the reference box
    np.testing.assert_allclose(got[ok, 2], TRUE[ok, 2], atol=0.03)
    np.testing.assert_allclose(got[ok, 0], TRUE[ok, 0], atol=0.03)
    assert np.all(np.asarray(obj_D)[ok] < 1e-5)
    # The last law's eps is below the bound: log_eps sits on it, the rest stay in the box.
    assert abs(got[4, 0] - 0.5) < 1e-3
    assert np.all((got[:, 2] >= 0) & (got[:, 2] <= 0.8) & (got[:, 1] <= 6.5 + 1e-6))
    assert np.all(np.isfinite(np.asarray(obj_D)))
    on_bound = np.asarray(info.on_bound)
    assert on_bound[4] & 1 and sl.bound_names(on_bound[4])[0] == "eps min"
    assert np.all(on_bound[ok] == 0)


def test_objective_equals_numpy():
    rng = np.random.RandomState(1)
    n_T = np.geomspace(10, 1e5, 50)
    loss_T = 2.0 + 5.0 * n_T ** -0.4 * np.exp(0.05 * rng.randn(50))
    loss_T[3], loss_T[7] = np.nan, np.inf
    mask_T = rng.rand(50) > 0.2
    for theta in [(0.8, 1.6, 0.4), (0.2, 7.0, 0.9), (1.0, 2.0, -0.1)]:
        params = sl.PowerLaw(*(jnp.float32(v) for v in theta))
        le, lb, a = theta
        r = np.log(np.exp(le) + np.exp(lb) * n_T ** -a) - np.log(loss_T)
        h = np.where(np.abs(r) > 1e-3, 1e-3 * (np.abs(r) - 5e-4), 0.5 * r * r)
        ok = mask_T & np.isfinite(loss_T)
        pen = max(a - 0.8, 0) + max(-a, 0) + max(lb - 6.5, 0) + max(0.5 - le, 0)
        got = float(sl.objective(params, n_T, loss_T, mask_T, bounds="reference"))
        np.testing.assert_allclose(got, h[ok].mean() + pen, rtol=1e-4, atol=1e-9)
        got_sum = float(sl.objective(params, n_T, loss_T, mask_T, reduction="sum", bounds="reference"))
        np.testing.assert_allclose(got_sum, h[ok].sum() + pen, rtol=1e-4, atol=1e-9)
    empty = sl.objective(params, n_T, np.full(50, np.nan))
    assert np.isnan(empty)


def test_masked_and_nan_points_do_not_change_the_fit(fit):
    loss_DT = noisy_curves(TRUE)
    n_DT = N_DT * np.arange(1, 6)[:, None].astype(np.float32)   # n may differ per domain
    mask_DT = np.ones_like(loss_DT, bool)
    mask_DT[:, ::5] = False
    mask_DT[2, 50:] = False
    garbage = np.where(mask_DT, loss_DT, 1e6)          # masked points hold nonsense
    as_nan = np.where(mask_DT, loss_DT, np.nan)        # ...or NaN, with every point unmasked
    p1, o1 = fit(n_DT, garbage, mask_DT)
    p2, o2 = fit(n_DT, as_nan, ALL_T)
    np.testing.assert_allclose(np.asarray(o1), np.asarray(o2), rtol=1e-6)
    for a, b in zip(p1, p2):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_nan_curve_keeps_previous_fit(fit):
    loss_DT = noisy_curves(TRUE)
    loss_DT[1] = np.nan
    new, new_obj = fit(N_DT, loss_DT, ALL_T)
    assert np.isnan(new_obj[1]) and np.isnan(new.alpha[1])
    assert np.all(np.isfinite(np.asarray(new_obj)[[0, 2, 3, 4]]))
    prev = sl.PowerLaw(*(jnp.full(5, v) for v in (0.7, 2.0, 0.25)))
    prev_obj = jnp.full(5, 0.5)
    kept, kept_obj = sl.keep_finite(new, new_obj, prev, prev_obj)
    assert float(kept.alpha[1]) == 0.25 and float(kept_obj[1]) == 0.5
    assert float(kept.alpha[0]) == float(new.alpha[0]) and float(kept_obj[2]) == float(new_obj[2])


def test_jittable_under_cond(fit):
    loss_DT = noisy_curves(TRUE)
    prev = (sl.PowerLaw(*(jnp.zeros(5) for _ in range(3))), jnp.zeros(5))

    @jax.jit
    def maybe_fit(do_fit, loss_DT):
        return jax.lax.cond(do_fit, lambda: sl.fit_power_law(N_DT, loss_DT, ALL_T), lambda: prev)

    (p_yes, o_yes), (p_no, o_no) = maybe_fit(True, loss_DT), maybe_fit(False, loss_DT)
    assert np.all(np.asarray(o_no) == 0.0) and np.all(np.asarray(p_no.alpha) == 0.0)
    p_direct, o_direct = fit(N_DT, loss_DT, ALL_T)
    np.testing.assert_allclose(np.asarray(o_yes), np.asarray(o_direct), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(p_yes.alpha), np.asarray(p_direct.alpha), atol=1e-5)


@pytest.mark.parametrize("solver", ["lbfgs", "jaxopt", "lm"])
def test_every_solver_improves_on_its_starts(solver):
    loss_T = noisy_curves(TRUE[:1])[0]                 # one domain: scalar outputs
    grid = sl.make_grid("reference")[::64]             # 8 starts keeps the test small
    lm_steps = 10 if solver == "lm" else 0
    run = jax.jit(lambda loss: sl.fit_power_law(N_T, loss, solver=solver, grid=grid, maxiter=20,
                                                refine_top_k=None, lm_steps=lm_steps))
    params, obj = run(loss_T)
    assert jnp.shape(obj) == () and jnp.shape(params.alpha) == ()
    box = sl.data_bounds(N_T, loss_T)
    starts = [float(sl.objective(sl.PowerLaw(*np.clip(g, np.array(box.lower), np.array(box.upper))),
                                 N_T, loss_T)) for g in grid]
    assert np.isfinite(obj) and float(obj) < min(starts)
    np.testing.assert_allclose(float(obj), float(sl.objective(params, N_T, loss_T)), rtol=1e-5)


def test_grid_sharded_fit_equals_unsharded():
    assert jax.device_count() == 8, "conftest should give 8 fake CPU devices"
    mesh = Mesh(np.array(jax.devices()), ("grid",))
    sharding = NamedSharding(mesh, P("grid", None))
    loss_DT = noisy_curves(TRUE[:2])
    kw = dict(solver="lm", lm_steps=5, refine_top_k=8)  # sharding is solver-independent
    lowered = jax.jit(lambda loss: sl.fit_power_law(N_T, loss, grid_sharding=sharding, **kw)).lower(loss_DT)
    assert '{"grid"}' in lowered.as_text()            # the start axis really is constrained
    sharded = lowered.compile()(loss_DT)
    plain = jax.jit(lambda loss: sl.fit_power_law(N_T, loss, **kw))(loss_DT)
    for a, b in zip(jax.tree.leaves(sharded), jax.tree.leaves(plain)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kwargs, match", [
    (dict(solver="adam"), "solver='adam'"),
    (dict(grid="tiny"), "grid='tiny'"),
    (dict(grid=np.zeros((4, 2))), r"\[G, 3\]"),
    (dict(refine_top_k=0), "refine_top_k=0"),
    (dict(solver="lm", lm_steps=0), "lm_steps=0"),
    (dict(refine_top_k=339), "refine_top_k=339"),           # 336 paper starts + 2
    (dict(refine_top_k=171, bounds="reference"), "refine_top_k=171"),  # 168 once projected + 2
    (dict(bounds="none"), "bounds='none'"),
    (dict(scan_starts=3, alpha_scan=2), "scan_starts=3"),
])
def test_bad_options_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sl.fit_power_law(N_T, np.ones((1, N_T.size)), **kwargs)


# A reported local minimum (ADO's first fit in tests/test_ado.py's simulate with eps [2, 3, 2],
# beta [1, 3, 9], alpha [.25, .3, .35], 101 steps): domain 0 is 2 + 3^0.25 n^-0.25 in the total n,
# on ADO's history n = 64 * (11, 13, ..., 101), one decade; true log_eps = 0.693 > 0.5.
SHORT_N_T = (64.0 * np.arange(11, 102, 2)).astype(np.float32)
SHORT_TRUE = sl.PowerLaw(np.float32(np.log(2.0)), np.float32(0.25 * np.log(3.0)), np.float32(0.25))


@pytest.mark.parametrize("solver", ["lm", "lbfgs"])
def test_short_curve_reaches_the_global_minimum(fit, solver):
    # Before the alpha scan, both solvers stopped at alpha ~0.12, objective ~1.2e-7 (true: ~1e-15):
    # the grid's best starts lie on one side of a long curved valley that LM only crawls along.
    loss_T = np.asarray(sl.predict(SHORT_TRUE, SHORT_N_T))
    true_obj = float(sl.objective(SHORT_TRUE, SHORT_N_T, loss_T))
    # Padded into the fixture's [5, 120] shape (masked tail) so the default fit compiles once.
    T = SHORT_N_T.size
    n_DT = np.ones(N_DT.shape, np.float32)
    n_DT[:, :T] = SHORT_N_T
    loss_DT, mask_DT = np.ones_like(n_DT), np.zeros(n_DT.shape, bool)
    loss_DT[:, :T], mask_DT[:, :T] = loss_T, True
    run = fit if solver == "lm" else jax.jit(lambda *a: sl.fit_power_law(*a, solver=solver))
    params, obj_D = run(n_DT, loss_DT, mask_DT)
    assert np.all(np.asarray(obj_D) <= true_obj + 1e-9), (np.asarray(obj_D), true_obj)
    np.testing.assert_allclose(np.asarray(params.alpha), 0.25, atol=0.02)
    np.testing.assert_allclose(np.asarray(params.log_eps), np.log(2.0), atol=0.02)


def test_alpha_scan_puts_starts_on_the_valley_floor():
    from ado_jax.mixing import scaling_law_solvers as solvers
    loss_T = np.asarray(sl.predict(SHORT_TRUE, SHORT_N_T))
    logn_T, logy_T, w_T, _ = sl.prepare(SHORT_N_T, loss_T, None)
    box = solvers.LOWER_3, solvers.UPPER_3                  # the reference box
    theta_A3 = np.asarray(solvers.alpha_scan(logn_T, logy_T, w_T, np.array([0.0, 0.1, 0.25, 0.6]), *box))
    assert np.all(np.isnan(theta_A3[0]))                    # alpha = 0: eps and beta not separable
    np.testing.assert_allclose(theta_A3[2], [np.log(2.0), 0.25 * np.log(3.0), 0.25], atol=2e-3)
    assert theta_A3[1, 0] >= 0.5 and theta_A3[3, 1] <= 6.5  # starts respect the box
    obj_A = [float(solvers.objective_3(t, logn_T, logy_T, w_T, 1e-3, *box)) for t in theta_A3[1:]]
    assert obj_A[1] < 1e-10 < min(obj_A[0], obj_A[2])


# Forecasting with the bounds: byte-level-like curves whose loss floor is below the reference
# box's eps >= e^0.5 = 1.65 (eps 0.3-1.5), ADO's history (from step 500, every 10th step,
# 64 sequences a step) over the first 60 % of 3,000 steps; the last 40 % is held out.
def forecast_curves(num=8, seed=0, sigma=0.01):
    rng = np.random.RandomState(seed)
    n_S = 64.0 * np.arange(1, 3001)
    eps, alpha, beta = rng.uniform(0.3, 1.5, num), rng.uniform(0.15, 0.6, num), rng.uniform(5, 60, num)
    loss_DS = (eps[:, None] + beta[:, None] * n_S ** -alpha[:, None]) * np.exp(sigma * rng.randn(num, n_S.size))
    return n_S, loss_DS, eps, np.arange(499, 1800, 10), np.arange(1800, 3000)


def scipy_unconstrained(n_T, loss_T):
    """Mean Huber on log loss, float64 L-BFGS-B without bounds, best of 27 starts."""
    import scipy.optimize

    logn, logy = np.log(n_T), np.log(loss_T)

    def f(theta, delta=1e-3):
        z = theta[1] - theta[2] * logn
        r = np.logaddexp(theta[0], z) - logy
        s = 0.5 * (1 - np.tanh(0.5 * (theta[0] - z)))          # sigmoid(z - log_eps)
        psi = np.clip(r, -delta, delta) / r.size
        h = np.where(np.abs(r) > delta, delta * (np.abs(r) - 0.5 * delta), 0.5 * r * r)
        return h.mean(), np.array([psi @ (1 - s), psi @ s, -(psi * s) @ logn])

    starts = np.stack([x.ravel() for x in np.meshgrid([-1.0, 0.0, 1.0], [0.0, 2.0, 4.0], [0.2, 0.4, 0.6],
                                                      indexing="ij")], -1)
    runs = [scipy.optimize.minimize(f, x0, jac=True, method="L-BFGS-B") for x0 in starts]
    return min((r for r in runs if np.isfinite(r.fun)), key=lambda r: r.fun).x


def forecast_error(theta_D3, n_S, loss_DS, idx):
    """[D] mean |log predicted - log observed| over the held-out steps ``idx``."""
    pred = np.logaddexp(theta_D3[:, :1], theta_D3[:, 1:2] - theta_D3[:, 2:] * np.log(n_S[idx]))
    return np.abs(pred - np.log(loss_DS[:, idx])).mean(axis=1)


def test_default_fit_forecasts_like_an_unconstrained_fit_and_reference_box_clamps():
    pytest.importorskip("scipy")
    n_S, loss_DS, _, fit_idx, test_idx = forecast_curves()
    n_T, loss_DT = n_S[fit_idx].astype(np.float32), loss_DS[:, fit_idx].astype(np.float32)
    theta = lambda p: np.stack([np.asarray(x, np.float64) for x in p], -1)
    errors = {}
    for bounds in ("data", "reference"):
        params, _, info = jax.jit(lambda n, loss, b=bounds: sl.fit_power_law(n, loss, bounds=b, return_info=True))(
            n_T, loss_DT)
        errors[bounds] = forecast_error(theta(params), n_S, loss_DS, test_idx).mean()
        if bounds == "reference":   # the old clamp: every eps held at e^0.5 (bit 1: eps at its lower bound)
            np.testing.assert_allclose(np.asarray(params.log_eps), 0.5, atol=1e-6)
            assert np.all(np.asarray(info.on_bound) & 1)
        else:   # eps at most the smallest observed loss; in-sample error ~ the 1 % noise
            assert np.all(np.asarray(params.log_eps) <= np.log(loss_DT.min(axis=1)) + 1e-6)
            assert np.all(np.asarray(info.err) < 0.02)
    ref = np.stack([scipy_unconstrained(n_S[fit_idx], loss_DS[d, fit_idx]) for d in range(len(loss_DS))])
    errors["scipy"] = forecast_error(ref, n_S, loss_DS, test_idx).mean()
    assert errors["data"] <= 1.1 * errors["scipy"], errors
    assert errors["reference"] > 10 * errors["scipy"], errors      # measured: ~0.35 vs ~0.009


def test_data_bounds_put_eps_below_the_smallest_observed_loss():
    n_S, loss_DS, _, fit_idx, _ = forecast_curves(num=4, seed=1)
    n_T, loss_DT = n_S[fit_idx].astype(np.float32), loss_DS[:, fit_idx].astype(np.float32)
    mask_DT = np.ones(loss_DT.shape, bool)
    mask_DT[:, -20:] = False                                 # masked points do not count
    box = sl.data_bounds(n_T, loss_DT, mask_DT)
    low_D = np.log(np.where(mask_DT, loss_DT, np.inf).min(axis=1))
    np.testing.assert_allclose(np.asarray(box.upper.log_eps), low_D, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(box.lower.log_eps), low_D - sl.DATA_FLOOR, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(box.lower.alpha), 0.0)
    np.testing.assert_allclose(np.asarray(box.upper.alpha), 0.8)
    top = np.log(np.where(mask_DT, loss_DT, 0).max(axis=1)) + 0.8 * np.log(n_T[~mask_DT[0]][0] - 640) + 1
    np.testing.assert_allclose(np.asarray(box.upper.log_beta), top, rtol=1e-5)
    # The same fit as bounds="data", with the box passed as a FitBounds (one compile for both).
    fit = jax.jit(lambda *a: sl.fit_power_law(*a[:3], bounds=a[3], return_info=True))
    params, _, info = fit(n_T, loss_DT, mask_DT, box)
    assert np.all(np.asarray(params.log_eps) <= low_D)
    assert np.all(np.asarray(info.on_bound) == 0)
    # An explicit FitBounds box (here: the data box with alpha at most 0.3) is applied as given.
    tight = box._replace(upper=box.upper._replace(alpha=jnp.full(4, 0.3)))
    params, _, info = fit(n_T, loss_DT, mask_DT, tight)
    alpha_D = np.asarray(params.alpha)
    assert np.all(alpha_D <= 0.3 + 1e-6)
    np.testing.assert_array_equal(np.asarray(info.on_bound) & 32, np.where(alpha_D > 0.3 - 1e-4, 32, 0))
    assert sl.bound_names(32) == ["alpha max"] and sl.bound_names(float("nan")) == [] and sl.bound_names(0) == []


def realistic_curves(num_domains=24, T=300, seed=0):
    """[D, T] n and losses like a pretraining history (benchmarks/fit_bench.py's generator):
    AR(1) log-noise, rare loss spikes, eps 1.2-3.2, alpha 0.08-0.65."""
    rng = np.random.RandomState(seed)
    n_T = 256 * (500.0 + 10 * np.arange(T))
    eps = rng.uniform(1.2, 3.2, num_domains)
    alpha = rng.uniform(0.08, 0.65, num_domains)
    log_beta = np.log(rng.uniform(0.6, 3.0, num_domains)) + alpha * np.log(n_T[0])
    sigma = rng.uniform(0.004, 0.03, num_domains)
    clean = eps[:, None] + np.exp(log_beta[:, None] - alpha[:, None] * np.log(n_T))
    ar = np.zeros((num_domains, T))
    z = rng.randn(num_domains, T)
    for t in range(T):
        ar[:, t] = (0.7 * ar[:, t - 1] if t else 0.0) + np.sqrt(1 - 0.49) * z[:, t]
    loss = clean * np.exp(sigma[:, None] * ar) * np.where(rng.rand(num_domains, T) < 0.01, 1.3, 1.0)
    return np.broadcast_to(n_T, loss.shape).astype(np.float32), loss.astype(np.float32)


@pytest.fixture(scope="module")
def refits():
    """A cold fit on the first 75 % of each history, then a cold and a warm refit on all of it."""
    n_DT, loss_DT = realistic_curves()
    earlier = np.broadcast_to(np.arange(n_DT.shape[1]) < 225, n_DT.shape)
    cold = jax.jit(lambda m: sl.fit_power_law(n_DT, loss_DT, m, return_info=True))
    warm = jax.jit(lambda p, o: sl.fit_power_law(n_DT, loss_DT, init=p, init_objective=o, return_info=True))
    prev, prev_obj, _ = cold(earlier)
    return cold(np.ones(n_DT.shape, bool)), warm(prev, prev_obj), (n_DT, loss_DT, prev, prev_obj)


def test_warm_refit_is_as_good_as_cold_with_fewer_steps(refits):
    (_, obj_cold, info_cold), (params, obj_warm, info_warm), _ = refits
    obj_cold, obj_warm = np.asarray(obj_cold), np.asarray(obj_warm)
    assert np.all(np.isfinite(obj_warm))
    assert np.all(obj_warm <= obj_cold + 1e-6), np.max(obj_warm - obj_cold)
    assert np.all(np.asarray(info_cold.cold)) and np.all(np.asarray(info_cold.steps) == 8 * 40)
    steps = np.asarray(info_warm.steps)
    assert np.all(steps[~np.asarray(info_warm.cold)] < 8 * 40) and steps.mean() < 0.5 * 8 * 40
    assert np.mean(np.asarray(info_warm.cold)) <= 0.125      # the warm path did the work


def test_warm_refit_falls_back_to_cold_without_a_previous_fit_or_after_a_change(refits):
    _, _, (n_DT, loss_DT, prev, prev_obj) = refits
    fit = jax.jit(lambda p, o, loss: sl.fit_power_law(n_DT, loss, init=p, init_objective=o, return_info=True))
    # No previous fit for domains 0 and 1 (NaN): cold there, and as good as cold.
    none = sl.PowerLaw(*(jnp.asarray(p).at[:2].set(jnp.nan) for p in prev))
    _, obj, info = fit(none, prev_obj, loss_DT)
    assert np.asarray(info.cold)[:2].all()
    _, obj_cold = jax.jit(sl.fit_power_law)(n_DT, loss_DT)
    np.testing.assert_array_less(np.asarray(obj)[:2], np.asarray(obj_cold)[:2] + 1e-6)
    # The previous objective far below what the warm fit reaches: the curve changed, refit cold.
    _, _, info = fit(prev, np.asarray(prev_obj) * 1e-3, loss_DT)
    assert np.asarray(info.cold).all()


@pytest.mark.slow  # ~20-35 s on 2 loaded cores; CI runs it (pytest -m slow)
def test_warm_refit_single_domain_and_nan_history(refits):
    _, _, (n_DT, loss_DT, prev, prev_obj) = refits
    one = jax.tree.map(lambda x: x[3], prev)
    params, obj = sl.fit_power_law(n_DT[3], loss_DT[3], init=one, init_objective=prev_obj[3])
    assert np.ndim(obj) == 0 and np.isfinite(obj)
    nan = np.full(n_DT.shape[1], np.nan, np.float32)
    params, obj = sl.fit_power_law(n_DT[3], nan, init=one, init_objective=prev_obj[3])
    assert np.isnan(obj) and np.isnan(params.alpha)


@pytest.mark.slow  # ~20-35 s on 2 loaded cores; CI runs it (pytest -m slow)
def test_warm_refit_under_vmap_with_axis_name_keeps_a_switch(refits):
    _, _, (n_DT, loss_DT, prev, prev_obj) = refits
    seeds = np.stack([loss_DT[:4], loss_DT[4:8]])          # two "seeds" of four domains
    prev2 = jax.tree.map(lambda x: np.stack([x[:4], x[4:8]]), prev)
    obj2 = np.stack([prev_obj[:4], prev_obj[4:8]])
    f = lambda loss, p, o: sl.fit_power_law(n_DT[:4], loss, init=p, init_objective=o, axis_name="seeds")
    jaxpr = str(jax.make_jaxpr(jax.vmap(f, axis_name="seeds"))(seeds, prev2, obj2))
    assert "cond[" in jaxpr and "pmax" in jaxpr
    _, got = jax.jit(jax.vmap(f, axis_name="seeds"))(seeds, prev2, obj2)
    for i in range(2):
        _, one = jax.jit(lambda loss, p, o: sl.fit_power_law(n_DT[:4], loss, init=p, init_objective=o))(
            seeds[i], jax.tree.map(lambda x: x[i], prev2), obj2[i])
        np.testing.assert_allclose(np.asarray(got[i]), np.asarray(one), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("kwargs, match", [
    (dict(warm_tol=-1.0), "warm_tol=-1.0"), (dict(guard_steps=0), "guard_steps=0"),
    (dict(cold_share=0.0), "cold_share=0.0"), (dict(warm_grid="fine"), "grid='fine'"),
])
def test_bad_warm_options_raise_clear_errors(kwargs, match):
    init = sl.PowerLaw(*(jnp.zeros((1,)),) * 3)
    with pytest.raises(ValueError, match=match):
        sl.fit_power_law(N_T, np.ones((1, N_T.size)), init=init, **kwargs)
