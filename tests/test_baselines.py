"""DoReMi, ODM, Skill-It and grid search; simplex invariants of all linear-mixing mixers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from ado_jax.mixing import (DomainStats, aioli, dirichlet_points, doremi, exploration_rate, grid_search, odm,
                            simplex_grid, skill_it, skills_graph)
from ado_jax.mixing.simulator import LinearLawEnv, run


def _stats(loss_D, count_D=None, heldout=None):
    loss_D = jnp.asarray(loss_D, jnp.float32)
    count_D = jnp.ones_like(loss_D) if count_D is None else jnp.asarray(count_D, jnp.float32)
    return DomainStats.create(loss_D * count_D, count_D, 0, heldout_loss=heldout)


def test_doremi_follows_xie_et_al_update():
    ref = np.array([2.0, 2.0, 2.0])
    mixer = doremi(ref, eta=1.0, smoothing=1e-3)
    st = mixer.init(3)
    w, st = mixer.update(_stats([3.0, 2.5, 1.0]), st)  # excess [1, 0.5, 0] (clipped at 0)
    a = np.exp([1.0, 0.5, 0.0]) / 3
    want = (1 - 1e-3) * a / a.sum() + 1e-3 / 3
    np.testing.assert_allclose(np.asarray(w), want, rtol=1e-5)
    w2, st = mixer.update(_stats([3.0, 2.5, 1.0]), st)
    np.testing.assert_allclose(np.asarray(st.avg_weights), (np.asarray(w) + np.asarray(w2)) / 2, rtol=1e-5)
    assert not bool(st.wants_heldout)


def test_doremi_keeps_an_absent_domains_last_excess():
    """A domain missing from the sampled batch keeps its last observed loss (Xie et al. see every
    domain every step); with absent="zero" its excess vanishes and it stays starved."""
    ref = np.array([1.0, 1.0])
    for absent, recovers in (("last", True), ("zero", False)):
        mixer = doremi(ref, eta=1.0, smoothing=1e-3, absent=absent)
        st = mixer.init(2)
        w, st = mixer.update(_stats([4.0, 2.0]), st)  # domain 0's excess 3 vs 1: it takes the batch
        assert float(w[0]) > 0.85
        for _ in range(5):  # domain 1 absent; domain 0 trained down to its reference
            w, st = mixer.update(_stats([1.0, 0.0], count_D=[1.0, 0.0]), st)
        assert (float(w[1]) > 0.9) == recovers, (absent, np.asarray(w))
    np.testing.assert_allclose(np.asarray(st.last_loss), [1.0, 2.0])


def test_doremi_per_step_reference_and_heldout_mode():
    ref_SD = np.array([[5.0, 5.0], [1.0, 5.0]])  # row used = min(step, S-1)
    mixer = doremi(ref_SD, use_heldout=True, every=2)
    st = mixer.init(2)
    assert not bool(st.wants_heldout)
    w, st = mixer.update(_stats([9.0, 9.0]), st)  # step 0: not an update step
    np.testing.assert_allclose(np.asarray(w), [0.5, 0.5])
    assert bool(st.wants_heldout)
    w, st = mixer.update(_stats([0.0, 0.0], heldout=[2.0, 2.0]), st)  # step 1: ref row 1, excess [1, 0]
    assert float(w[0]) > 0.7


def test_odm_exp3_regret_is_sublinear_and_smoothed_variant_stays_uniform():
    mu = jnp.array([0.2, 0.5, 0.8])  # stationary arms: reward = loss
    env = LinearLawEnv(a=jnp.zeros((3, 3)), loss0=mu, noise=0.1, batch_size=1, sample_counts=True)
    keys = jax.random.split(jax.random.PRNGKey(0), 8)
    regret = {}
    for name in ("cumulative", "smoothed"):
        res = jax.jit(jax.vmap(lambda k: run(odm(reward=name), env, 4000, k)))(keys)
        regret[name] = np.cumsum(np.asarray(0.8 - res.weights @ mu), axis=1).mean(0)
    r = regret["cumulative"]
    assert r[3999] / r[999] < 2.5 and r[999] / r[249] < 2.5  # linear regret would give 4
    assert r[3999] < 0.05 * 4000
    # As App. B.1 states it (moving-average reward, ε_t → 0), ODM drifts back to uniform.
    assert regret["smoothed"][3999] / regret["smoothed"][999] > 3.5


def test_odm_exploration_rate_and_first_update():
    np.testing.assert_allclose(float(exploration_rate(4, 1)), 0.25)
    np.testing.assert_allclose(float(exploration_rate(4, 100)), np.sqrt(np.log(4) / 400), rtol=1e-6)
    mixer = odm(reward="cumulative", importance="reference")
    w, st = mixer.update(_stats([1.0, 0.0], count_D=[1.0, 0.0]), mixer.init(2))
    r = np.array([1.0 / 0.5, 0.0])  # loss / pi for the one arm played
    eps1 = 0.5
    want = (1 - 2 * eps1) * np.exp(0.5 * r) / np.exp(0.5 * r).sum() + eps1
    np.testing.assert_allclose(np.asarray(w), want / want.sum(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(st.reward), r, rtol=1e-6)


def test_skills_graph_and_skill_it_update():
    start = np.array([4.0, 2.0])
    end = np.array([[2.0, 1.5], [4.0, 1.0]])  # run j (row) trained on domain j only
    g = skills_graph(start, end)
    np.testing.assert_allclose(g, [[0.5, 0.0], [0.25, 0.5]])
    mixer = skill_it(g, round_steps=3, rounds=2, eta=0.5, window=None)
    st = mixer.init(2)
    held = jnp.array([3.0, 1.0])
    seen = []
    for step in range(6):
        seen.append(bool(st.wants_heldout))
        w, st = mixer.update(_stats([1.0, 1.0], heldout=held), st)
    assert seen == [False, False, True, False, False, True]
    logits = 0.5 * g.T @ (2 * np.asarray(held))  # two rounds summed (window None = EGD form)
    np.testing.assert_allclose(np.asarray(w), np.exp(logits) / np.exp(logits).sum(), rtol=1e-5)


def test_grid_search_finds_the_known_minimum():
    pts = simplex_grid(3, 4)
    assert pts.shape == (15, 3) and np.allclose(pts.sum(1), 1)
    target = np.array([0.5, 0.25, 0.25])
    res = grid_search(lambda w: float(np.sum((np.asarray(w) - target) ** 2)), 3, resolution=4)
    np.testing.assert_allclose(res.weights, target)
    batched = grid_search(lambda p: jnp.sum((p - target) ** 2, axis=1), points=pts, batched=True)
    np.testing.assert_allclose(batched.weights, target)
    best_max = grid_search(lambda w: float(w[2]) if w[0] < 0.5 else float("nan"), 3, resolution=4, minimize=False)
    np.testing.assert_allclose(best_max.weights, [0.0, 0.0, 1.0])
    dir_pts = dirichlet_points(jax.random.PRNGKey(0), 4, 10)
    assert dir_pts.shape == (10, 4) and np.allclose(dir_pts.sum(1), 1, atol=1e-5) and np.all(dir_pts >= 0)
    with pytest.raises(ValueError, match="no finite score"):
        grid_search(lambda w: float("nan"), 2, resolution=2)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="reference_losses"):
        doremi([1.0, np.nan])
    with pytest.raises(ValueError, match="reward"):
        odm(reward="sum")
    with pytest.raises(ValueError, match="graph"):
        skill_it(np.ones((2, 3)), 100)
    with pytest.raises(ValueError, match="num_domains"):
        doremi([1.0, 2.0]).init(3)


_MIXERS = {
    "aioli": aioli(round_steps=8, rounds=3, sweeps=1, segment_steps=1),
    "doremi": doremi([1.0, 1.0, 1.0], use_heldout=True),
    "odm": odm(),
    "odm_cumulative": odm(reward="cumulative"),
    "skill_it": skill_it(np.eye(3), round_steps=2, rounds=3),
}
_JITTED = {name: jax.jit(m.update) for name, m in _MIXERS.items()}
_extreme = hs.sampled_from([0.0, 1e-30, 1.0, 3.5, 1e30, -1.0, float("nan"), float("inf"), -float("inf")])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=hs.sampled_from(sorted(_MIXERS)),
       rows=hs.lists(hs.tuples(hs.lists(_extreme, min_size=3, max_size=3),
                               hs.lists(hs.sampled_from([0.0, 1.0, 7.0]), min_size=3, max_size=3),
                               hs.lists(_extreme, min_size=3, max_size=3), hs.booleans()),
                     min_size=1, max_size=12))
def test_weights_stay_on_the_simplex_under_extreme_inputs(name, rows):
    st = _MIXERS[name].init(3)
    for loss, count, held, valid in rows:
        stats = DomainStats(jnp.asarray(loss, jnp.float32), jnp.asarray(count, jnp.float32), jnp.asarray(0),
                            jnp.asarray(held, jnp.float32), jnp.asarray(valid))
        w, st = _JITTED[name](stats, st)
        w = np.asarray(w)
        assert np.all(np.isfinite(w)) and np.all(w >= 0) and abs(w.sum() - 1) < 1e-5, (name, w)
        np.testing.assert_array_equal(w, np.asarray(st.weights))
