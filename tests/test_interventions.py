"""Data interventions (diversity, uniformity, upsampling) and optimization interventions."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ado_jax.synthetic.interventions import diversity, optimization, uniformity, upsample
from ado_jax.mixing.base import DomainStats
from ado_jax.synthetic.mlp import parity_mlp

KEY = jax.random.PRNGKey(0)


def test_zipf_ratios_and_random_ranks():
    w = np.asarray(diversity.zipf(5, 1.5))
    np.testing.assert_allclose(w[0] / w[1], 2 ** 1.5, rtol=1e-5)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(diversity.zipf(5, 0.0)), 0.2)
    wp = np.asarray(diversity.zipf(5, 1.5, KEY))
    np.testing.assert_allclose(np.sort(wp), np.sort(w), rtol=1e-6)
    with pytest.raises(ValueError, match="alpha"):
        diversity.zipf(5, -1.0)


def test_truncate_and_subsample():
    np.testing.assert_allclose(diversity.truncate(5, 2), [0.5, 0.5, 0, 0, 0])
    np.testing.assert_allclose(diversity.subsample(100, 0.03)[:4], [1 / 3, 1 / 3, 1 / 3, 0])
    with pytest.raises(ValueError, match="k must"):
        diversity.truncate(5, 6)
    with pytest.raises(ValueError, match="rho"):
        diversity.subsample(10, 0.01)


def test_curricula_match_appendix_a():
    icl = jax.jit(diversity.icl_curriculum(1024))
    count = lambda t: int(np.sum(np.asarray(icl(t)) > 0))
    assert [count(t) for t in (0, 29, 30, 49, 50, 70, 500)] == [32, 32, 64, 64, 128, 256, 1024]
    par = diversity.parity_curriculum(100)
    assert int(np.sum(np.asarray(par(99)) > 0)) == 2 and int(np.sum(np.asarray(par(100)) > 0)) == 100
    facts = diversity.facts_curriculum(100)
    assert int(np.sum(np.asarray(facts(10)) > 0)) == 20 and int(np.sum(np.asarray(facts(100)) > 0)) == 100
    with pytest.raises(ValueError, match="len"):
        diversity.piecewise([1, 2], [jnp.ones(2)])


def test_schedule_mixer_returns_next_steps_weights():
    mixer = diversity.schedule_mixer(diversity.facts_curriculum(100, switch=5))
    state = mixer.init(100)
    assert int(np.sum(np.asarray(state.weights) > 0)) == 20
    stats = DomainStats.create(jnp.zeros(100), jnp.zeros(100), 4)
    w, state = mixer.update(stats, state)
    assert int(np.sum(np.asarray(w) > 0)) == 100 and np.array_equal(w, state.weights)
    with pytest.raises(ValueError, match="num_domains"):
        mixer.init(50)


def _greedy_np(x, m, first):
    idx, mind = [first], np.sum((x - x[first]) ** 2, 1)
    for _ in range(m - 1):
        nxt = int(np.argmax(mind))
        idx.append(nxt)
        mind = np.minimum(mind, np.sum((x - x[nxt]) ** 2, 1))
    return idx


def test_max_min_select_is_greedy_and_2_approximate():
    x = np.asarray(jax.random.normal(KEY, (10, 2)))
    idx = np.asarray(jax.jit(uniformity.max_min_select, static_argnums=1)(jnp.asarray(x), 4, 3))
    assert idx.tolist() == _greedy_np(x, 4, 3)
    best = max(float(uniformity.h_min(jnp.asarray(x[list(c)]))) for c in itertools.combinations(range(10), 4))
    got = float(uniformity.h_min(jnp.asarray(x[idx])))
    assert got >= best / 2 - 1e-6 and got <= best + 1e-6
    w = uniformity.selection_weights(10, jnp.asarray(idx))
    np.testing.assert_allclose(np.asarray(w)[idx], 0.25)
    with pytest.raises(ValueError, match="m must"):
        uniformity.max_min_select(jnp.asarray(x), 11)


def test_upsample_tracks_and_upweights_late_learned():
    t = upsample.track_init(4)
    t = upsample.track(DomainStats.create(jnp.array([1.0, 4.0, 0, 0]), jnp.array([1.0, 2, 0, 0]), 0), t)
    t = upsample.track(DomainStats.create(jnp.array([3.0, 0, 0, 0]), jnp.array([1.0, 0, 0, 0]), 1), t, decay=0.5)
    np.testing.assert_allclose(np.asarray(t.loss_D)[:2], [2.0, 2.0])
    assert np.isnan(np.asarray(t.loss_D)[2])
    mask = upsample.late_learned(jnp.array([0.1, 0.9, 0.5, jnp.nan]), 0.5)
    np.testing.assert_array_equal(mask, [False, True, False, True])
    np.testing.assert_allclose(upsample.upsample_weights(mask, 3.0), [1 / 8, 3 / 8, 1 / 8, 3 / 8])


def test_gradient_bias_adds_stored_gradient_and_refreshes():
    tx = optimization.gradient_bias(0.5, every=2)
    state = tx.init(jnp.zeros(2))
    outs = []
    for g in [jnp.array([1.0, 0]), jnp.array([0, 1.0]), jnp.array([2.0, 2.0])]:
        u, state = tx.update(g, state)
        outs.append(np.asarray(u))
    np.testing.assert_allclose(outs, [[1.5, 0], [0.5, 1.0], [3.0, 3.0]])


def _pcgrad_np(g, orders, always=False):
    out = []
    for i, order in enumerate(orders):
        gi = g[i].copy()
        for j in order:
            dot = gi @ g[j]
            if j != i and (always or dot < 0):
                gi = gi - dot / (g[j] @ g[j]) * g[j]
        out.append(gi)
    return np.mean(out, 0)


@pytest.mark.parametrize("always", [False, True])
def test_pcgrad_matches_numpy_reference(always):
    g = np.asarray(jax.random.normal(KEY, (4, 5)))
    tree = {"a": jnp.asarray(g[:, :2]), "b": jnp.asarray(g[:, 2:])}
    k = jax.random.PRNGKey(3)
    orders = [np.asarray(jax.random.permutation(kk, 4)) for kk in jax.random.split(k, 4)]
    got = optimization.pcgrad(tree, k, always)
    np.testing.assert_allclose(np.concatenate([got["a"], got["b"]]), _pcgrad_np(g, orders, always), rtol=1e-5)
    two = optimization.pcgrad(jnp.array([[1.0, 0.0], [-1.0, 1.0]]), k)
    np.testing.assert_allclose(two, [0.25, 0.75], rtol=1e-6)  # (0.5,0.5) and (0,1) averaged


def test_sam_step_matches_manual_sharpness_aware_step():
    loss = lambda p: jnp.sum(jnp.array([1.0, 3.0]) * p ** 2) + p[0] * p[1]
    p0, lr, rho = jnp.array([1.0, -2.0]), 0.1, 0.05
    tx = optimization.sam(optax.sgd(lr), rho)
    state = tx.init(p0)
    grad_fn = lambda p, _: jax.grad(loss)(p)
    u, _ = tx.update(jax.grad(loss)(p0), state, p0, grad_fn=grad_fn)
    g = jax.grad(loss)(p0)
    want = p0 - lr * jax.grad(loss)(p0 + rho * g / jnp.linalg.norm(g))
    np.testing.assert_allclose(p0 + u, want, rtol=1e-5)


def test_freeze_readout_and_scale_by_path():
    model = eqx.filter(parity_mlp(KEY, 4, 3, 2), eqx.is_array)
    tx = optimization.freeze(optax.sgd(1.0), model, optimization.readout_pred(model))
    grads = jax.tree.map(jnp.ones_like, model)
    u, _ = tx.update(grads, tx.init(model), model)
    assert np.all(np.asarray(u.layers[-1].weight) == 0) and np.all(np.asarray(u.layers[0].weight) == -1)
    sc = optimization.scale_by_path(model, lambda p: 0.1 if p.startswith(".layers[0]") else 1.0)
    u, _ = sc.update(grads, sc.init(model))
    np.testing.assert_allclose(u.layers[0].bias, 0.1)
    np.testing.assert_allclose(u.layers[1].bias, 1.0)


def test_cosines():
    a = {"w": jnp.array([1.0, 2.0]), "b": jnp.array([3.0])}
    neg = jax.tree.map(lambda x: -x, a)
    assert float(optimization.cosine(a, a)) == pytest.approx(1.0)
    assert float(optimization.cosine(a, neg)) == pytest.approx(-1.0)
    np.testing.assert_allclose(optimization.leaf_cosines(a, {"w": jnp.array([2.0, -1.0]), "b": jnp.array([1.0])}),
                               [1.0, 0.0], atol=1e-6)


def test_upsample_mixer_switches_to_late_learned_weights():
    mixer = upsample.upsample_mixer(switch_step=2, factor=4.0, quantile=0.5, decay=0.5)
    state = mixer.init(4)
    np.testing.assert_allclose(state.weights, 0.25)
    loss = jnp.array([0.1, 2.0, 0.2, 3.0])
    w, state = mixer.update(DomainStats.create(loss, jnp.ones(4), 0), state)
    np.testing.assert_allclose(w, 0.25)  # still before the switch
    w, state = mixer.update(DomainStats.create(loss, jnp.ones(4), 1), state)
    np.testing.assert_allclose(w, [0.1, 0.4, 0.1, 0.4])  # domains 1 and 3 were not learned
    w2, _ = mixer.update(DomainStats.create(loss[::-1], jnp.ones(4), 2), state)
    np.testing.assert_allclose(w2, w)  # frozen after the switch
