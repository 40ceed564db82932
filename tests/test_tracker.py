"""Tracker: sharded segment sums, EMAs, the fixed-size history (sample / mean / savgol)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ado_jax.mixing import DomainStats
from ado_jax.mixing.tracker import domain_stats, ema_loss, fit_data, loss_tracker, savgol_coeffs


def test_domain_stats_sharded_over_8_devices_matches_numpy():
    assert jax.device_count() == 8
    rng = np.random.default_rng(0)
    b, d = 64, 5
    loss = rng.uniform(0.5, 4.0, b).astype(np.float32)
    loss[[3, 17, 40]] = [np.nan, np.inf, -np.inf]
    dom = rng.integers(0, d, b).astype(np.int32)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sh = NamedSharding(mesh, P("data"))
    loss_s, dom_s = jax.device_put(loss, sh), jax.device_put(dom, sh)
    assert len(loss_s.sharding.device_set) == 8
    stats = jax.jit(domain_stats, static_argnums=2)(loss_s, dom_s, d, 7)
    ok = np.isfinite(loss)
    want_sum = np.array([loss[ok & (dom == k)].sum() for k in range(d)])
    want_cnt = np.array([(ok & (dom == k)).sum() for k in range(d)])
    np.testing.assert_allclose(stats.loss_sum, want_sum, rtol=1e-5)
    np.testing.assert_array_equal(stats.count, want_cnt)
    assert int(stats.step) == 7
    unsharded = domain_stats(jnp.asarray(loss), jnp.asarray(dom), d, 7)
    np.testing.assert_allclose(stats.loss_sum, unsharded.loss_sum, rtol=1e-6)


def _feed(tracker, losses_SD, counts_SD, start=0):
    """Runs ``tracker.update`` over [S, D] per-domain mean losses and counts in a scan."""
    d = losses_SD.shape[1]

    def body(state, xs):
        t, loss_D, cnt_D = xs
        return tracker.update(DomainStats.create(loss_D * cnt_D, cnt_D, t), state), None

    steps = jnp.arange(start, start + losses_SD.shape[0])
    state = tracker.init(d)
    return jax.jit(lambda s: jax.lax.scan(body, s, (steps, losses_SD, counts_SD))[0])(state)


def test_ema_is_debiased_and_skips_missing_domains():
    rng = np.random.default_rng(1)
    s, d, decay = 30, 3, 0.8
    loss = rng.uniform(1, 3, (s, d)).astype(np.float32)
    cnt = rng.integers(0, 3, (s, d)).astype(np.float32)
    cnt[:, 2] = 0  # domain 2 never seen
    state = _feed(loss_tracker(ema_decay=decay), loss, cnt)
    for k in range(2):
        xs = loss[cnt[:, k] > 0, k]
        w = decay ** np.arange(len(xs))[::-1]
        np.testing.assert_allclose(ema_loss(state)[k], (w * xs).sum() / w.sum(), rtol=1e-5)
    assert np.isnan(ema_loss(state)[2])
    assert int(state.n) == cnt.sum()


def test_history_is_the_papers_subsample_until_full():
    s, d = 300, 2
    loss = (2.0 + np.arange(s)[:, None] * np.array([1e-3, 2e-3])).astype(np.float32)
    cnt = np.ones((s, d), np.float32)
    cnt[::7, 1] = 0  # domain 1 absent every 7th step -> masked slot
    state = _feed(loss_tracker(history_len=64, skip_first=50, subsample_every=10), loss, cnt)
    n_DT, loss_DT, mask_DT = map(np.asarray, fit_data(state))
    steps = np.arange(50, s, 10)  # skip the first 50 steps, every 10th
    k = len(steps)
    n_cum = np.cumsum(cnt.sum(1))
    assert int(state.stride) == 10 and mask_DT[:, k:].sum() == 0
    np.testing.assert_array_equal(mask_DT[0, :k], True)
    np.testing.assert_array_equal(mask_DT[1, :k], steps % 7 != 0)
    np.testing.assert_allclose(loss_DT[0, :k], loss[steps, 0], rtol=1e-6)
    np.testing.assert_allclose(n_DT[0, :k], n_cum[steps], rtol=1e-6)
    ok = mask_DT[1, :k]
    np.testing.assert_allclose(loss_DT[1, :k][ok], loss[steps[ok], 1], rtol=1e-6)


@pytest.mark.parametrize("reduce", ["sample", "mean"])
def test_history_doubles_stride_with_constant_memory(reduce):
    d, h, skip, every = 2, 8, 5, 2
    tracker = loss_tracker(history_len=h, skip_first=skip, subsample_every=every, reduce=reduce)
    rng = np.random.default_rng(2)
    short = _feed(tracker, np.ones((3, d), np.float32), np.ones((3, d), np.float32))
    s = 205
    loss = rng.uniform(1, 2, (s, d)).astype(np.float32)
    state = _feed(tracker, loss, np.ones((s, d), np.float32))
    size = lambda st: [(x.shape, x.dtype) for x in jax.tree.leaves(st)]
    assert size(short) == size(state)  # memory does not grow with run length
    # 200 steps after skip at stride 2 need 100 slots: 8 -> stride 2*2^4 = 32 (7 slots used).
    stride = int(state.stride)
    assert stride == every * 2 ** 4
    n_DT, loss_DT, mask_DT = map(np.asarray, fit_data(state))
    used = mask_DT[0].sum()
    assert used == -(-(s - skip) // stride) and used <= h
    starts = skip + np.arange(used) * stride
    n_cum = np.arange(1, s + 1) * d
    if reduce == "sample":
        np.testing.assert_allclose(loss_DT[:, :used].T, loss[starts], rtol=1e-6)
        np.testing.assert_allclose(n_DT[0, :used], n_cum[starts], rtol=1e-6)
    else:
        means = np.stack([loss[a:a + stride].mean(0) for a in starts])
        np.testing.assert_allclose(loss_DT[:, :used].T, means, rtol=1e-5)
        np.testing.assert_allclose(n_DT[0, :used], [n_cum[a:a + stride].mean() for a in starts], rtol=1e-5)


def test_savgol_matches_scipy_interior():
    signal = pytest.importorskip("scipy.signal")
    np.testing.assert_allclose(savgol_coeffs(101, 3), signal.savgol_coeffs(101, 3, use="dot"), atol=1e-6)
    rng = np.random.default_rng(3)
    s, d, win = 400, 2, 21
    loss = (3.0 + np.sin(np.arange(s) / 30)[:, None] + 0.1 * rng.normal(size=(s, d))).astype(np.float32)
    cnt = np.ones((s, d), np.float32)
    cnt[100:103, 1] = 0  # missing steps are imputed with the previous loss, as in the reference
    imputed = loss.copy()
    imputed[100:103, 1] = loss[99, 1]
    tracker = loss_tracker(history_len=64, skip_first=40, subsample_every=10, smoothing="savgol",
                           savgol_window=win, savgol_order=3)
    state = _feed(tracker, loss, cnt)
    _, loss_DT, mask_DT = map(np.asarray, fit_data(state))
    want = signal.savgol_filter(imputed.T, win, 3, axis=-1)[:, 40::10]
    k = mask_DT[0].sum()
    assert k == len(range(40, s - win // 2, 10))  # the history lags by win // 2 steps
    np.testing.assert_allclose(loss_DT[:, :k], want[:, :k], rtol=1e-4)


def test_non_finite_stats_never_enter_the_state():
    tracker = loss_tracker(history_len=8, skip_first=0, subsample_every=1)
    state, update = tracker.init(3), jax.jit(tracker.update)
    for t, (ls, c) in enumerate([([np.nan, 1.0, np.inf], [1, 1, 1]), ([1e30, -np.inf, 2.0], [1, np.nan, 1]),
                                 ([3e38, 1.0, 1.0], [1e-30, 0, np.inf])]):
        state = update(DomainStats.create(ls, c, t), state)
    for leaf in jax.tree.leaves(state._replace(last=jnp.zeros(3), ring_loss=jnp.zeros(1))):
        assert np.all(np.isfinite(np.asarray(leaf, np.float64)))
    n_DT, loss_DT, mask_DT = fit_data(state)
    assert np.all(np.isfinite(loss_DT)) and np.all(np.isfinite(n_DT))


@pytest.mark.parametrize("kwargs, match", [
    (dict(history_len=7), "even"), (dict(history_len=0), "history_len"),
    (dict(ema_decay=1.0), "ema_decay"), (dict(reduce="max"), "'max'"),
    (dict(smoothing="lowess"), "lowess"), (dict(skip_first=-1), "-1"),
    (dict(smoothing="savgol", savgol_window=100), "odd"),
])
def test_bad_tracker_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        loss_tracker(**kwargs)
