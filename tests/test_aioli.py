"""Aioli: A estimation, LEARNPARAMS schedule, beating stratified, ablations, exact mid-round resume."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import spearmanr

from ado_jax.mixing import DomainStats, aioli, balanced, smoothed_onehots, static, wants_heldout
from ado_jax.mixing.simulator import LinearLawEnv, run, run_from

A = jnp.array([[3.0, 1.0, 0.5], [0.2, 2.0, 0.1], [1.0, 0.3, 1.5]]) * 1e-3
ENV = LinearLawEnv(a=A, loss0=jnp.full((3,), 5.0))


@pytest.mark.parametrize("kw", [{}, {"one_hot_factor": 0.6, "order": "sweeps"}])
def test_estimated_a_matches_true_a(kw):
    mixer = aioli(600, rounds=3, sweeps=2, delta=0.3, **kw)
    st = jax.jit(lambda k: run(mixer, ENV, 600, k))(jax.random.PRNGKey(0)).mixer_state
    assert int(st.rounds_done) == 3
    a_hat = np.asarray(st.a_raw)
    assert spearmanr(a_hat.ravel(), np.asarray(A).ravel()).statistic >= 0.9
    np.testing.assert_allclose(a_hat, np.asarray(A), atol=2e-5)  # noiseless law: exact up to float


def test_learnparams_schedule_and_heldout_requests():
    d, k, seg, round_steps = 3, 2, 4, 40
    mixer = aioli(round_steps=round_steps, rounds=2, sweeps=k, segment_steps=seg, seed=5)
    st = mixer.init(d)
    p_dd = np.asarray(smoothed_onehots(d))
    used, wants = [], []
    stats = DomainStats.create(jnp.ones(d), jnp.ones(d), 0, heldout_loss=jnp.ones(d))
    update = jax.jit(mixer.update)
    for _ in range(1 + 2 * round_steps):
        used.append(np.asarray(st.weights))
        wants.append(bool(wants_heldout(st)))
        _, st = update(stats, st)
    used = np.asarray(used)
    np.testing.assert_allclose(used[0], np.full(d, 1 / d), atol=1e-6)  # the one init step: p^0 = Unif
    for rnd in range(2):
        learn = used[1 + rnd * round_steps: 1 + rnd * round_steps + d * k * seg]
        ids = [int(np.argmax(learn[c * seg])) for c in range(d * k)]
        assert sorted(ids) == sorted(list(range(d)) * k)  # each smoothed one-hot k times
        for c, i in enumerate(ids):
            np.testing.assert_allclose(learn[c * seg: (c + 1) * seg], np.broadcast_to(p_dd[i], (seg, d)), atol=1e-6)
    want_steps = {1 + s for s in range(2 * round_steps)
                  if s % round_steps < d * k * seg and (s % round_steps + 1) % seg == 0}
    want_steps |= {0, round_steps}  # the step before each round gives the baseline of its first segment
    assert {s for s, w in enumerate(wants) if w} == want_steps


def test_one_sweep_rounds_all_count_thanks_to_the_init_step():
    # With sweeps=1 every mixture has one segment; round 1's first segment needs the held-out loss
    # before it, which only the default init step provides. init_steps=0 loses round 1 (documented).
    kw = dict(rounds=3, sweeps=1, delta=0.3)
    default = run(aioli(600, **kw), ENV, 600, jax.random.PRNGKey(0)).mixer_state
    no_init = run(aioli(600, init_steps=0, **kw), ENV, 600, jax.random.PRNGKey(0)).mixer_state
    assert int(default.rounds_done) == 3 and int(no_init.rounds_done) == 2
    np.testing.assert_allclose(np.asarray(default.a_raw), np.asarray(A), atol=2e-5)


def test_aioli_beats_stratified_when_best_mixture_is_not_uniform():
    env = LinearLawEnv(a=A, loss0=jnp.full((3,), 5.0), noise=0.05, heldout_noise=2e-4, batch_size=16,
                       sample_counts=True)
    keys = jax.random.split(jax.random.PRNGKey(0), 6)
    steps = 2000
    final = {}
    for name, mixer in {"aioli": aioli(steps, rounds=10, sweeps=2, delta=0.2, eta=1.0), "balanced": balanced()}.items():
        res = jax.jit(jax.vmap(lambda k: run(mixer, env, steps, k)))(keys)
        final[name] = np.asarray(res.loss[:, -1].mean(-1))
        if name == "aioli":
            w_end = np.asarray(res.weights[:, -1])
    assert np.all(final["aioli"] < final["balanced"]), final
    assert np.all(np.argmax(w_end, axis=-1) == 0)  # column 0 of A has the largest sum


def test_static_and_diagonal_ablations():
    st = run(aioli(600, static=True, sweeps=2, delta=0.3), ENV, 600, jax.random.PRNGKey(0))
    learn = 3 * 2 * 30
    assert int(st.mixer_state.rounds_done) == 1
    np.testing.assert_array_equal(np.asarray(st.weights[learn:]), np.broadcast_to(st.weights[learn], (600 - learn, 3)))
    diag = run(aioli(600, rounds=3, diagonal=True, sweeps=2, delta=0.3), ENV, 600, jax.random.PRNGKey(0))
    a_hat = np.asarray(diag.mixer_state.a_raw)
    assert np.all(a_hat[~np.eye(3, dtype=bool)] == 0) and np.all(np.diag(a_hat) > 0)


def test_aioli_plus_method_init_phase():
    p = np.array([0.7, 0.2, 0.1], np.float32)
    a = run(aioli(700, rounds=3, init_steps=100, p_init=p, sweeps=2, delta=0.3), ENV, 700, jax.random.PRNGKey(0))
    b = run(aioli(700, rounds=3, init_steps=100, init_mixer=static(p), sweeps=2, delta=0.3), ENV, 700,
            jax.random.PRNGKey(0))
    np.testing.assert_allclose(np.asarray(a.weights[:100]), np.broadcast_to(p, (100, 3)), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(a.weights), np.asarray(b.weights))
    assert int(a.mixer_state.rounds_done) == 3  # baseline measured at step 99: no segment lost
    keep = run(aioli(700, rounds=3, init_steps=100, p_init=p, sweeps=2, delta=0.3, restart_uniform=False), ENV, 700,
               jax.random.PRNGKey(0))
    # p^0 = p_init instead of uniform: the first exploit mixture leans further toward domain 0.
    first_exploit = 100 + 3 * 2 * 20
    assert float(keep.weights[first_exploit, 0]) > float(a.weights[first_exploit, 0]) + 0.2


def test_resume_in_the_middle_of_a_round_is_bit_exact():
    env = LinearLawEnv(a=A, loss0=jnp.full((3,), 5.0), noise=0.05, heldout_noise=1e-3, batch_size=8,
                       sample_counts=True)
    mixer = aioli(400, rounds=4, sweeps=2, delta=0.5, gamma=0.3, seed=7)
    full = jax.jit(lambda k: run(mixer, env, 400, k))(jax.random.PRNGKey(2))
    cut = 137  # round 2, inside LEARNPARAMS segment 1
    first = jax.jit(lambda k: run(mixer, env, cut, k))(jax.random.PRNGKey(2))
    rest = jax.jit(lambda r: run_from(mixer, env, 400 - cut, r.key, r.mixer_state, r.env_state))(first)
    np.testing.assert_array_equal(np.asarray(full.weights[cut:]), np.asarray(rest.weights))
    # The state to the last bit on jax 0.10; jax 0.12's XLA compiles the 400-step scan and the
    # 137 + 263-step scans into differently fused programs, and A's entries differ by one float32
    # ulp (1.1e-7 relative, measured on Python 3.13): allowed, and no more.
    for x, y in zip(jax.tree.leaves(full.mixer_state), jax.tree.leaves(rest.mixer_state)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2.5e-7, atol=0)


def test_nan_heldout_skips_the_round_and_keeps_weights_finite():
    mixer = aioli(round_steps=20, rounds=3, sweeps=1, segment_steps=2)
    st = mixer.init(3)
    bad = DomainStats.create(jnp.ones(3), jnp.ones(3), 0, heldout_loss=jnp.array([jnp.nan, 1.0, jnp.inf]))
    update = jax.jit(mixer.update)
    for _ in range(60):
        w, st = update(bad, st)
        assert np.all(np.isfinite(np.asarray(w))) and abs(float(w.sum()) - 1) < 1e-5
    assert int(st.rounds_done) == 0
    np.testing.assert_allclose(np.asarray(w), np.full(3, 1 / 3), atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"rounds": 0, "total_steps": 100}, "rounds"),
    ({"eps": 1.5, "total_steps": 100}, "eps"),
    ({"normalize_method": "l2", "total_steps": 100}, "normalize_method"),
    ({}, "total_steps or round_steps"),
    ({"total_steps": 100, "p_init": [1, -1, 0]}, "p_init"),
])
def test_bad_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        aioli(**kwargs)


def test_learnparams_too_long_for_round_raises():
    with pytest.raises(ValueError, match="round_steps"):
        aioli(round_steps=10, sweeps=4, segment_steps=2).init(3)
