"""ADO: policy equations, simulated environment, fit inside update, exact resume, invariants."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ado_jax import mixing
from ado_jax.mixing import DomainStats, ado_policy
from ado_jax.mixing.ado_async import HostFitter
from ado_jax.mixing.scaling_law import PowerLaw

FAST_FIT = dict(solver="lm", refine_top_k=8, lm_steps=50)  # compiles ~4x faster than L-BFGS
SMALL = dict(fit_every=50, fit_start=100, skip_first=10, subsample_every=2, history_len=64,
             fit_kwargs=FAST_FIT)


@functools.lru_cache(maxsize=None)
def _runner(mixer, eps, beta, alpha, batch):
    """A jitted scan over the environment, cached so equal settings compile once per length."""
    eps, beta, alpha = (jnp.asarray(x, jnp.float32) for x in (eps, beta, alpha))

    def body(c, t):
        state, seen_D = c
        cnt_D = batch * state.weights
        seen_D = seen_D + cnt_D
        loss_D = eps + beta * jnp.maximum(seen_D, 1e-3) ** -alpha
        w_D, state = mixer.update(DomainStats.create(loss_D * cnt_D, cnt_D, t), state)
        return (state, seen_D), (w_D, state.params.alpha)

    return jax.jit(lambda c, ts: jax.lax.scan(body, c, ts))


def simulate(mixer, eps, beta, alpha, steps, *, batch=64, start=0, carry=None):
    """Per-domain power laws that respond to the sampled fraction: after each step domain k's
    loss is ``eps_k + beta_k * n_k^-alpha_k`` with ``n_k`` the sequences of domain k seen so far
    (expected counts ``batch * weights``).

    Returns ``(weights [S, D], fitted alpha [S, D], (state, n_D))``."""
    if carry is None:
        carry = (mixer.init(len(eps)), jnp.zeros(len(eps), jnp.float32))
    run = _runner(mixer, tuple(eps), tuple(beta), tuple(alpha), batch)
    carry, (w_SD, alpha_SD) = run(carry, jnp.arange(start, start + steps))
    return w_SD, alpha_SD, carry


# One mixer and environment shared by the tests below, so their scans compile once per length.
# Learning potential -dL_k/dn_k = alpha_k beta_k n_k^-(alpha_k+1): domain 2 > domain 1 > domain 0.
MIXER = mixing.ado(**SMALL)
ENV = ([2.0, 3.0, 2.0], [2.0, 4.0, 8.0], [0.3, 0.35, 0.4])


def test_weight_moves_to_the_domain_with_more_learning_potential():
    w_SD, _, (state, _) = simulate(MIXER, *ENV, 300)
    w_SD = np.asarray(w_SD)
    np.testing.assert_allclose(w_SD[:100], 1 / 3)  # the prior until the first fit (step 100)
    final = w_SD[-1]
    assert final[2] > final[1] > final[0], final
    assert final[2] > 0.5 and final[0] < 0.2, final
    assert int(state.num_fits) == 4 and bool(state.fitted.all())


def test_fit_diagnostics_are_kept_in_the_state_and_logged():
    fresh = mixing.fitted_values(MIXER.init(3))
    assert set(fresh) == {"alpha", "beta", "eps", "on_bound", "err"}
    assert all(np.all(np.isnan(v)) for v in fresh.values())
    _, _, (state, _) = simulate(MIXER, *ENV, 300)          # same length as above: compiled once
    got = mixing.fitted_values(state)
    assert all(np.shape(v) == (3,) for v in got.values())
    # Smooth curves with eps 2-3 nats: interior fits (no bound of the data box holds them).
    np.testing.assert_array_equal(got["on_bound"], 0.0)
    np.testing.assert_array_equal(state.on_bound, 0)
    assert np.all(np.isfinite(got["err"])) and np.all(got["err"] < 0.01)
    # A fit merged without diagnostics is recorded as unknown, not as interior.
    merged = mixing.set_fit(state, state.params, state.objective)
    assert np.all(np.isnan(mixing.fitted_values(merged)["on_bound"]))
    assert np.all(np.asarray(merged.on_bound) == -1) and np.all(np.isnan(merged.fit_err))


def test_fit_inside_update_recovers_alpha():
    _, alpha_SD, (state, _) = simulate(MIXER, *ENV, 300)
    alpha_SD = np.asarray(alpha_SD)
    np.testing.assert_array_equal(alpha_SD[:100], 0.0)  # no fit before fit_start
    # The first fit (step 100) sees constant prior weights, so L_k is an exact power law in the
    # total n with the environment's alpha. Later fits see a moving mixture, so the law in the
    # total n no longer has the per-domain alpha (ADO's modelling choice), and are not checked.
    np.testing.assert_allclose(alpha_SD[100], ENV[2], atol=0.02)
    np.testing.assert_array_equal(alpha_SD[100], alpha_SD[149])  # parameters change only at fits
    assert np.all(np.isfinite(mixing.fitted_values(state)["eps"]))


def test_resume_across_a_fit_boundary_is_bit_identical():
    w_full, _, (state_full, _) = simulate(MIXER, *ENV, 300)
    w_a, _, carry = simulate(MIXER, *ENV, 150)  # stop right before the fit at step 150
    carry = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), carry)  # as if restored from disk
    w_b, _, (state_b, _) = simulate(MIXER, *ENV, 150, start=150, carry=carry)
    np.testing.assert_array_equal(np.concatenate([w_a, w_b]), w_full)
    for a, b in zip(jax.tree.leaves(state_full), jax.tree.leaves(state_b)):
        np.testing.assert_array_equal(a, b)
    assert int(state_b.num_fits) == 4  # fits at steps 100, 150 (first step after the split), 200, 250


EXTREMES = [0.0, 1e-30, 1.0, 2.5, 1e30, np.inf, -np.inf, np.nan]


@functools.lru_cache(maxsize=None)
def _tiny_ado(d, variant):
    kw = dict(fit_every=1, fit_start=0, skip_first=0, subsample_every=1, history_len=4,
              min_fit_points=1, delta_min=0.5 / d, fit_kwargs=dict(solver="lm", refine_top_k=1, lm_steps=1))
    if variant == "reference":
        kw.update(credit="reference_v0", clip="reference", average_t="global", alpha_floor=0.05,
                  reduce="mean", prior=np.arange(d))  # a zero-prior domain too
    mixer = mixing.ado(**kw)
    return mixer.init(d), jax.jit(mixer.update)


@pytest.mark.slow  # 16-26 s in a quiet default run; CI runs it (pytest -m slow)
@settings(max_examples=16, deadline=None)
@given(case=st.sampled_from([(1, "paper"), (64, "paper"), (3, "reference")]), data=st.data())
def test_ado_weights_stay_on_simplex_under_extreme_stats(case, data):
    d, variant = case
    state, update = _tiny_ado(d, variant)
    if data.draw(st.booleans()):  # start from an (extreme) fit so the policy runs from step 0
        logs = st.lists(st.sampled_from([-50.0, -1.0, 0.0, 0.7, 6.0, 50.0]), min_size=d, max_size=d)
        alphas = st.lists(st.sampled_from([-1.0, 0.0, 1e-6, 0.3, 0.8, 5.0]), min_size=d, max_size=d)
        params = PowerLaw(*(np.float32(data.draw(x)) for x in (logs, logs, alphas)))
        state = mixing.set_fit(state, params, np.zeros(d, np.float32))
        assert bool(state.fitted.all())
    for step in range(4):
        loss = data.draw(st.lists(st.sampled_from(EXTREMES), min_size=d, max_size=d))
        count = data.draw(st.lists(st.sampled_from([0.0, 1.0, 5.0, 1e30, np.nan]), min_size=d, max_size=d))
        w, state = update(DomainStats.create(np.float32(loss), np.float32(count), step), state)
        w = np.asarray(w)
        assert np.all(np.isfinite(w)) and np.all(w >= 0), w
        np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-5)
        for leaf in (state.params, state.objective, state.pibar, state.h):
            assert not np.any(np.isnan(np.asarray(jax.tree.leaves(leaf)))), state


def test_policy_equations():
    params = PowerLaw(jnp.log(jnp.array([2.0, 3.0, 1.5])), jnp.log(jnp.array([4.0, 1.0, 9.0])),
                      jnp.array([0.3, 0.6, 0.1]))
    n, mu, h = 5000.0, np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.5, 0.3])
    lam = np.asarray(ado_policy.credit(h, 0.5, "paper"))
    np.testing.assert_allclose(lam, h ** 0.5, rtol=1e-6)
    np.testing.assert_allclose(ado_policy.credit(h, 0.5, "reference_v0"), (h * (1 - h)) ** 0.5, rtol=1e-6)
    # eq. 3 with the derivative of the fitted law, in the plain (not log-space) form
    alpha, beta, eps = np.array([0.3, 0.6, 0.1]), np.array([4.0, 1.0, 9.0]), np.array([2.0, 3.0, 1.5])
    lhat = eps + beta * n ** -alpha
    want = mu * lam * alpha * (lhat - eps) / n
    rho = np.asarray(ado_policy.preference(params, n, mu, lam))
    np.testing.assert_allclose(rho, want / want.sum(), rtol=1e-5)
    floored = np.asarray(ado_policy.preference(params, n, mu, lam, alpha_floor=0.5))
    a2 = np.maximum(alpha, 0.5)
    want2 = mu * lam * a2 * beta * n ** -a2
    np.testing.assert_allclose(floored, want2 / want2.sum(), rtol=1e-5)
    pibar = np.array([0.98, 0.01, 0.01])
    pi, used = ado_policy.mix(rho, pibar, 0.1, 0.05, "paper")
    raw = 0.1 * rho + 0.9 * pibar
    clipped = np.maximum(raw, 0.05)
    np.testing.assert_allclose(pi, clipped / clipped.sum(), rtol=1e-5)
    np.testing.assert_allclose(used, rho)
    pi_r, used_r = ado_policy.mix(rho, pibar, 0.1, 0.05, "reference")
    np.testing.assert_allclose(pi_r, 0.1 * np.asarray(used_r) + 0.9 * pibar, rtol=1e-5)
    assert np.asarray(pi_r).min() < 0.02 and np.asarray(pi).min() > 0.04  # clip order matters
    np.testing.assert_allclose(ado_policy.running_mean(pibar, rho, 3), rho / 4 + 0.75 * pibar, rtol=1e-6)


def test_reference_credit_tracks_sampled_fractions_and_prior_is_used_before_fit():
    no_fit = {**SMALL, "fit_in_step": False}  # no fit needed here; skips compiling one
    mixer = mixing.ado([3e9, 1e9], credit="reference", **no_fit)
    state = mixer.init(2)
    np.testing.assert_allclose(state.weights, [0.75, 0.25])
    w, state = mixer.update(DomainStats.create([2.0, 6.0], [1.0, 3.0], 0), state)
    np.testing.assert_allclose(w, [0.75, 0.25])
    np.testing.assert_allclose(state.h, 0.1 * np.array([0.25, 0.75]) + 0.9 * np.array([0.75, 0.25]), rtol=1e-6)
    paper = mixing.ado([3e9, 1e9], **no_fit)
    _, s2 = paper.update(DomainStats.create([2.0, 6.0], [1.0, 3.0], 0), paper.init(2))
    np.testing.assert_allclose(s2.h, [0.75, 0.25], rtol=1e-6)  # paper: EMA of pi (= mu here)


def test_set_fit_keeps_previous_fit_where_new_is_nan_and_exposes_values():
    state = mixing.ado().init(2)
    assert np.all(np.isnan(mixing.fitted_values(state)["alpha"]))
    first = PowerLaw(jnp.array([0.7, 0.8]), jnp.array([1.0, 2.0]), jnp.array([0.3, 0.4]))
    state = mixing.set_fit(state, first, jnp.array([1e-3, 2e-3]))
    second = PowerLaw(jnp.array([0.9, jnp.nan]), jnp.array([1.5, 2.5]), jnp.array([0.2, 0.5]))
    state = mixing.set_fit(state, second, jnp.array([1e-4, 1e-4]))
    np.testing.assert_allclose(state.params.alpha, [0.2, 0.4])
    np.testing.assert_allclose(state.objective, [1e-4, 2e-3])
    got = mixing.fitted_values(state)
    np.testing.assert_allclose(got["beta"], np.exp([1.5, 2.0]), rtol=1e-6)
    np.testing.assert_allclose(got["eps"], np.exp([0.9, 0.8]), rtol=1e-6)
    assert bool(state.fitted.all()) and int(state.num_fits) == 2


def test_host_fitter_feeds_an_async_fit_back():
    mixer = mixing.ado(**{**SMALL, "fit_in_step": False})
    args = ([2.0, 2.0], [1.0, 9.0], [0.3, 0.3])
    _, _, carry = simulate(mixer, *args, 150)
    assert int(carry[0].num_fits) == 0
    fitter = HostFitter(**FAST_FIT)
    try:
        assert fitter.submit(carry[0]) and not fitter.submit(carry[0])
        state = fitter.apply(carry[0], block=True)
    finally:
        fitter.close()
    assert bool(state.fitted.all()) and int(state.num_fits) == 1
    assert np.all(np.asarray(state.on_bound) >= 0) and np.all(np.isfinite(state.fit_err))
    w, _, _ = simulate(mixer, *args, 100, start=150, carry=(state, carry[1]))
    assert np.asarray(w)[-1, 1] > 0.6


@pytest.mark.parametrize("kwargs, match", [
    (dict(gamma1=0.0), "gamma1"), (dict(gamma2=1.5), "gamma2"), (dict(s=-1.0), "s must"),
    (dict(delta_min=-0.1), "-0.1"), (dict(credit="both"), "'both'"), (dict(clip="x"), "clip"),
    (dict(average_t="x"), "average_t"), (dict(fit_every=0), "fit_every"),
    (dict(prior=[1.0, -1.0]), "-1.0"), (dict(history_len=5), "even"),
    (dict(bounds="box"), "bounds='box'"), (dict(fit_kwargs={"bounds": "data"}), r"ado\(bounds"),
])
def test_bad_ado_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mixing.ado(**kwargs)


def test_bad_ado_init():
    with pytest.raises(ValueError, match="num_domains=3"):
        mixing.ado([1.0, 2.0]).init(3)
    with pytest.raises(ValueError, match="delta_min=0.5"):
        mixing.ado(delta_min=0.5).init(3)


def _fit_conds(jaxpr) -> list[int]:
    """Sizes (equations in the larger branch) of every ``cond`` in a closed jaxpr, recursively."""
    sizes = []

    def walk(j):
        for e in j.eqns:
            if e.primitive.name == "cond":
                sizes.append(max(len(b.jaxpr.eqns) for b in e.params["branches"]))
            for v in e.params.values():
                for sub in (v if isinstance(v, (tuple, list)) else (v,)):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner)

    walk(jaxpr.jaxpr)
    return sizes


@pytest.mark.slow  # 16-26 s in a quiet default run; CI runs it (pytest -m slow)
def test_vmapped_ado_keeps_its_fit_cond_and_equals_the_seed_loop():
    from ado_jax.mixing.simulator import PowerLawEnv, run

    env = PowerLawEnv(eps=jnp.array([2.0, 2.4, 3.0]), beta=jnp.array([4.0, 2.5, 2.0]),
                      alpha=jnp.array([0.6, 0.3, 0.1]), transfer=jnp.eye(3), scale=50.0, noise=0.2,
                      batch_size=32, sample_counts=True)
    mixer = mixing.ado(**SMALL, seed_axis="seeds")
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    many = jax.vmap(lambda k: run(mixer, env, 260, k), axis_name="seeds")
    # The fit is a real cond (a branch with the whole fit in it), not a select of both branches.
    assert max(_fit_conds(jax.make_jaxpr(many)(keys))) > 100
    got = jax.jit(many)(keys)
    plain = mixing.ado(**SMALL)
    one = jax.jit(lambda k: run(plain, env, 260, k))
    for i, k in enumerate(keys):
        ref = one(k)
        # Equal up to float32 rounding: a batched program sums in another order, and each fit's
        # accept/reject steps carry the last bits on (measured: <= 5e-4 relative on a weight with
        # jax 0.10, <= 7.1e-3 with jax 0.12 on Python 3.13).
        np.testing.assert_allclose(np.asarray(got.weights[i]), np.asarray(ref.weights), rtol=1e-2, atol=1e-5)
        assert int(got.mixer_state.num_fits[i]) == int(ref.mixer_state.num_fits) == 4


def test_seed_axis_keeps_the_cond_when_the_step_itself_is_batched():
    d, seeds = 3, 2
    one = DomainStats.create(jnp.full((d,), 2.0), jnp.ones((d,)), 150)
    stats = jax.tree.map(lambda x: jnp.stack([x] * seeds), one)    # every field batched, the step too
    for axis, expect_cond in ((None, False), ("seeds", True)):
        mixer = mixing.ado(**SMALL, seed_axis=axis)
        states = jax.tree.map(lambda x: jnp.stack([x] * seeds), mixer.init(d))
        jaxpr = jax.make_jaxpr(jax.vmap(mixer.update, axis_name="seeds"))(stats, states)
        assert (max(_fit_conds(jaxpr), default=0) > 100) == expect_cond


def test_bad_warm_start_and_seed_axis():
    with pytest.raises(ValueError, match="warm_start='yes'"):
        mixing.ado(warm_start="yes")
    with pytest.raises(ValueError, match="seed_axis=3"):
        mixing.ado(seed_axis=3)
