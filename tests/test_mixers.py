"""Fixed mixers and combinators: simplex invariants, semantics, jit / vmap / scan, bad arguments."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ado_jax import mixing
from ado_jax.mixing import DomainStats, Mixer, normalize
from ado_jax.mixing.ado_policy import clip_min_probability
from ado_jax.mixing.combinators import floor_probability

EXTREMES = [0.0, 1e-30, 1e-6, 1.0, 3.5, 1e30, 3e38, np.inf, -np.inf, np.nan, -1.0]


def greedy() -> Mixer:
    """Test-only mixer that passes the raw (unsanitized) loss sums through as 'weights', so the
    combinators see NaN, inf, negative and 1e30 inner weights."""
    from ado_jax.mixing.basic import WeightsState

    def init(d):
        return WeightsState(jnp.full((d,), 1.0 / d, jnp.float32))

    def update(stats, state):
        return stats.loss_sum, WeightsState(stats.loss_sum)

    return Mixer(init, update)


def build(name: str, d: int) -> Mixer:
    w = np.arange(1, d + 1, dtype=np.float32)
    return {
        "static": lambda: mixing.static(w),
        "natural": lambda: mixing.natural(w * 1e9),
        "balanced": mixing.balanced,
        "floor": lambda: mixing.with_floor(greedy(), 0.5 / d),
        "ema": lambda: mixing.ema(greedy(), 0.7),
        "warmup": lambda: mixing.warmup(w, mixing.ema(greedy(), 0.0), 2),
        "schedule": lambda: mixing.schedule([1, 3], [greedy(), mixing.balanced(), mixing.with_floor(greedy(), 0.0)]),
        "nested": lambda: mixing.with_floor(mixing.ema(mixing.warmup(w, greedy(), 1), 0.9), 0.01),
    }[name]()


NAMES = ["static", "natural", "balanced", "floor", "ema", "warmup", "schedule", "nested"]


@functools.lru_cache(maxsize=None)
def jitted(name: str, d: int):
    mixer = build(name, d)
    return mixer.init(d), jax.jit(mixer.update)


def assert_simplex(w, d):
    w = np.asarray(w)
    assert w.shape == (d,) and w.dtype == np.float32
    assert np.all(np.isfinite(w)), w
    assert np.all(w >= 0), w
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-5)


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(NAMES), d=st.sampled_from([1, 2, 7, 64]), data=st.data())
def test_weights_stay_on_simplex_under_extreme_stats(name, d, data):
    state, update = jitted(name, d)
    assert_simplex(state.weights, d)
    for step in range(4):
        loss = data.draw(st.lists(st.sampled_from(EXTREMES), min_size=d, max_size=d))
        count = data.draw(st.lists(st.sampled_from([0.0, 1.0, 1e-30, 7.0, 1e30, np.nan]), min_size=d, max_size=d))
        w, state = update(DomainStats.create(np.float32(loss), np.float32(count), step), state)
        assert_simplex(w, d)
        np.testing.assert_array_equal(w, state.weights)


def test_fixed_mixers_values():
    s = mixing.static([1.0, 3.0]).init(2)
    np.testing.assert_allclose(s.weights, [0.25, 0.75])
    np.testing.assert_allclose(mixing.natural([2e9, 6e9, 0]).init(3).weights, [0.25, 0.75, 0.0])
    np.testing.assert_allclose(mixing.balanced().init(4).weights, [0.25] * 4)
    stats = DomainStats.create([np.nan, 1.0], [1.0, 1.0], 0)
    w, s2 = mixing.static([1.0, 3.0]).update(stats, s)
    np.testing.assert_array_equal(w, s.weights)


def test_floor_is_exact_and_keeps_ratios():
    rng = np.random.default_rng(0)
    floor = jax.jit(floor_probability)
    for i in range(60):
        d = [1, 3, 17][i % 3]
        p = rng.dirichlet(np.full(d, 0.3)).astype(np.float32)
        m = np.float32(rng.uniform(0, 1.0 / d) if i % 5 else 0.0)
        w = np.asarray(floor(p, m))
        assert_simplex(w, d)
        assert w.min() >= m * (1 - 1e-5) - 1e-7
        above = w > m * (1 + 1e-4)
        if above.sum() >= 2:  # entries above the floor are scaled by one common factor
            ratio = w[above] / p[above]
            np.testing.assert_allclose(ratio, ratio[0], rtol=1e-4)


def test_paper_clip_matches_algorithm_2():
    def alg2(p, m):  # App. C Algorithm 2, line by line
        deficit = max(m * len(p) - p.sum(), 0.0)
        scaled = p * (1 - deficit) / p.sum()
        clipped = np.maximum(scaled, m)
        return clipped / clipped.sum()

    rng = np.random.default_rng(1)
    for d in [1, 2, 5, 22]:
        p = rng.dirichlet(np.full(d, 0.2))
        np.testing.assert_allclose(clip_min_probability(p, 0.01), alg2(p, 0.01), rtol=1e-5, atol=1e-7)


def test_ema_formula():
    d, decay = 3, 0.75
    mixer = mixing.ema(greedy(), decay)
    state = mixer.init(d)
    expect = np.full(d, 1 / 3)
    rng = np.random.default_rng(2)
    for step in range(5):
        loss = rng.uniform(0.1, 2.0, d).astype(np.float32)
        w, state = mixer.update(DomainStats.create(loss, np.ones(d), step), state)
        expect = decay * expect + (1 - decay) * loss / loss.sum()
        np.testing.assert_allclose(w, expect, rtol=1e-5)


def test_schedule_and_warmup_pick_by_next_step():
    a, b, c = [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]
    mixer = mixing.schedule([2, 4], [a, b, c])
    state = mixer.init(2)
    np.testing.assert_allclose(state.weights, a)
    got = []
    for step in range(6):
        w, state = mixer.update(DomainStats.create([1.0, 1.0], [1.0, 1.0], step), state)
        got.append(np.asarray(w))
    # update at step t returns the weights for step t + 1
    np.testing.assert_allclose(got, [a, b, b, c, c, c])
    wu = mixing.warmup(a, mixing.static(b), 0)
    np.testing.assert_allclose(wu.init(2).weights, b)
    wu = mixing.warmup(mixing.static(a), mixing.static(b), 3)
    s = wu.init(2)
    ws = [np.asarray(wu.update(DomainStats.create([1, 1], [1, 1], t), s)[0]) for t in range(4)]
    np.testing.assert_allclose(ws, [a, a, b, b])


def _run(mixer, d, steps, key):
    """Scans ``mixer.update`` over random per-domain losses drawn from ``key``; returns [S, D]."""
    loss_SD = jax.random.uniform(key, (steps, d), minval=0.5, maxval=3.0)

    def body(state, xs):
        t, loss_D = xs
        w, state = mixer.update(DomainStats.create(loss_D, jnp.ones(d), t), state)
        return state, w

    return jax.lax.scan(body, mixer.init(d), (jnp.arange(steps), loss_SD))[1]


@pytest.mark.parametrize("name", ["static", "floor", "ema", "warmup", "schedule", "nested"])
def test_jit_vmap_over_seeds_and_scan(name):
    d, steps = 4, 6
    mixer = build(name, d)
    keys = jax.random.split(jax.random.key(0), 3)
    run = jax.jit(lambda k: _run(mixer, d, steps, k))
    batched = jax.vmap(run)(keys)
    assert batched.shape == (3, steps, d)
    for i in range(3):
        np.testing.assert_allclose(batched[i], run(keys[i]), rtol=1e-6)
        for w in np.asarray(batched[i]):
            assert_simplex(w, d)
    if name in ("ema", "floor"):  # adaptive mixers really depend on the seed
        assert not np.allclose(batched[0], batched[1])


@pytest.mark.parametrize("make, match", [
    (lambda: mixing.static([1.0, -2.0]), "-2.0"),
    (lambda: mixing.static([0.0, 0.0]), "all zero"),
    (lambda: mixing.static([[1.0, 2.0]]), "1-D"),
    (lambda: mixing.natural([1.0, np.nan]), "nan"),
    (lambda: mixing.static([1.0, 2.0]).init(3), "num_domains=3"),
    (lambda: mixing.balanced().init(0), "num_domains"),
    (lambda: mixing.ema(mixing.balanced(), 1.0), r"ema decay must lie in \[0, 1\), got 1.0"),
    (lambda: mixing.ema(mixing.balanced(), -0.1), "-0.1"),
    (lambda: mixing.with_floor(mixing.balanced(), 1.5), "1.5"),
    (lambda: mixing.with_floor(mixing.balanced(), 0.5).init(3), "infeasible"),
    (lambda: mixing.schedule([2], [mixing.balanced()]), "len"),
    (lambda: mixing.schedule([3, 2], [mixing.balanced()] * 3), r"\[3, 2\]"),
    (lambda: mixing.warmup([1.0], mixing.balanced(), -1), "-1"),
])
def test_bad_arguments_raise_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_normalize_extremes():
    assert_simplex(normalize(jnp.array([1e30, 1e30, 3e38], jnp.float32)), 3)
    np.testing.assert_allclose(normalize(jnp.array([np.nan, np.inf, -1.0])), [1 / 3] * 3)
