"""DoGE: the update against a numpy oracle of the paper's equations, the train step's per-domain
gradient inner products against per-domain gradients taken one domain at a time, Aioli+DoGE."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ado_jax.mixing import DomainStats, aioli, config_class, doge, mixer_names
from ado_jax.mixing.base import wants_grad_dot


def _oracle(grams, counts, eta, *, exclude_self=False, normalize=False, clip=None, smoothing=0.0, steps=None,
            absent="last"):
    """DoGE (arXiv:2310.15393) in float64 numpy: W_j = <g_j, sum_i g_i> (absent domains: g = 0),
    alpha <- alpha * exp(eta W) / Z, alpha_bar = mean of the alpha^t over the proxy run; a domain
    absent from the batch has g = 0 (absent="zero"), or each pair with an absent domain keeps its
    last observed <g_i, g_j> (absent="last"; never observed: 0, and a domain never seen is absent)."""
    d = grams[0].shape[0]
    a, hist, last = np.full(d, 1.0 / d), [], np.full((d, d), np.nan)
    for t, (g, n) in enumerate(zip(grams, counts)):
        if steps is not None and t >= steps:
            break
        pres = n > 0
        if absent == "last":
            last = np.where(np.outer(pres, pres), g, last)
            g, pres = np.nan_to_num(last), ~np.isnan(np.diag(last))
        g = np.where(np.outer(pres, pres), g, 0.0)
        w = g.sum(axis=0)
        if exclude_self:
            w = w - np.diag(g)
        if normalize:
            w = w / (np.sqrt(np.diag(g))[pres].mean() + 1e-6)
        if clip is not None:
            w = np.clip(w, *clip)
        w = np.where(pres, w, 0.0)
        a = a * np.exp(eta * w)
        a = (1 - smoothing) * a / a.sum() + smoothing / d
        hist.append(a)
    return a, np.mean(hist, axis=0)


def _random_grams(steps, d, seed=0):
    rng = np.random.default_rng(seed)
    grams, counts = [], []
    for _ in range(steps):
        g = rng.normal(size=(d, 16)) * rng.uniform(0.2, 2.0, size=(d, 1))
        grams.append(g @ g.T)
        n = rng.integers(0, 4, size=d).astype(float)
        counts.append(n)
    return grams, counts


@pytest.mark.parametrize("kw", [{}, {"exclude_self": True, "normalize": True, "clip": (0.0, 5.0)},
                                {"smoothing": 0.05}, {"absent": "zero"}])
def test_update_matches_numpy_oracle(kw):
    d, steps, eta = 4, 30, 0.05
    grams, counts = _random_grams(steps, d)
    mixer = doge(eta, smoothing=kw.get("smoothing", 0.0), exclude_self=kw.get("exclude_self", False),
                 normalize_norm=kw.get("normalize", False), score_clip=kw.get("clip"),
                 absent=kw.get("absent", "last"))
    st = mixer.init(d)
    update = jax.jit(mixer.update)
    for g, n in zip(grams, counts):
        _, st = update(DomainStats.create(jnp.zeros(d), n, 0, grad_dot=g), st)
    want_w, want_avg = _oracle(grams, counts, eta, **kw)
    np.testing.assert_allclose(np.asarray(st.weights), want_w, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(st.avg_weights), want_avg, rtol=2e-4, atol=1e-6)
    assert int(st.updates) == steps


def test_proxy_run_length_freezes_weights_and_stops_asking():
    d = 3
    grams, counts = _random_grams(12, d, seed=1)
    mixer = doge(0.05, steps=5)
    st = mixer.init(d)
    for i, (g, n) in enumerate(zip(grams, counts)):
        assert bool(wants_grad_dot(st)) == (i < 5)
        _, st = mixer.update(DomainStats.create(jnp.zeros(d), n, i, grad_dot=g), st)
    want_w, want_avg = _oracle(grams, counts, 0.05, steps=5)
    np.testing.assert_allclose(np.asarray(st.weights), want_w, rtol=2e-4)
    np.testing.assert_allclose(np.asarray(st.avg_weights), want_avg, rtol=2e-4)


def test_non_finite_gradients_keep_the_weights_and_missing_ones_raise():
    mixer = doge(0.1)
    st = mixer.init(3)
    bad = DomainStats.create(jnp.zeros(3), jnp.ones(3), 0, grad_dot=jnp.full((3, 3), jnp.nan))
    w, st2 = mixer.update(bad, st)
    np.testing.assert_array_equal(np.asarray(w), np.asarray(st.weights))
    assert int(st2.updates) == 0
    with pytest.raises(ValueError, match="grad_dot"):
        mixer.update(DomainStats.create(jnp.zeros(3), jnp.ones(3), 0), st)


def test_only_doge_states_ask_for_gradients():
    # The train step keeps its old program exactly when wants_grad_dot answers the constant False.
    sizes = [3.0, 1.0, 2.0]
    for name in mixer_names():
        cfg = config_class(name)()
        if name in ("static",):
            cfg.weights = [1.0, 1.0, 1.0]
        if name == "doremi":
            cfg.reference_losses = [1.0, 1.0, 1.0]
        if name == "skill_it":
            continue  # needs a skills graph; its state has no wants_grad_dot field either
        st = cfg.build(sizes, total_steps=1000).init(3)
        assert (wants_grad_dot(st) is False) == (name != "doge"), name


def test_aioli_plus_doge_asks_only_in_its_init_phase():
    mixer = aioli(round_steps=20, rounds=2, sweeps=1, segment_steps=2, init_steps=4,
                  init_mixer=doge(0.05, steps=4))
    st = mixer.init(3)
    grams, counts = _random_grams(8, 3, seed=2)
    asked = []
    for i, (g, n) in enumerate(zip(grams, counts)):
        asked.append(bool(wants_grad_dot(st)))
        _, st = mixer.update(DomainStats.create(jnp.ones(3), n, i, heldout_loss=jnp.ones(3), grad_dot=g), st)
    assert asked == [True] * 4 + [False] * 4
    want_w, _ = _oracle(grams, counts, 0.05, steps=4)
    np.testing.assert_allclose(np.asarray(st.inner.weights), want_w, rtol=2e-4)


def _tiny_model_and_batch(d=3, b=12, t=8):
    from ado_jax.models.llama import Llama, ModelConfig

    cfg = ModelConfig(vocab_size=32, d_model=16, n_layers=1, n_heads=2, n_kv_heads=2, d_ff=32, max_seq_len=t,
                      compute_dtype="float32", remat="none")
    model = Llama(cfg, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    toks = rng.integers(0, 32, size=(b, t + 1))
    domain = np.array([0, 2, 2, 0, 2, 0, 0, 2, 2, 0, 0, 2][:b])  # domain 1 absent: its g is 0
    batch = {"inputs": jnp.asarray(toks[:, :-1], jnp.int32), "targets": jnp.asarray(toks[:, 1:], jnp.int32),
             "domain": jnp.asarray(domain, jnp.int32)}
    return model, batch


def _grad_dot_oracle(model, batch, d):
    """<g_i, g_j> in float64 from D separate gradients, each of one domain's sub-batch mean loss."""
    from ado_jax.models.llama import sequence_losses

    params, static = eqx.partition(model, eqx.is_array)
    grad = jax.jit(jax.grad(lambda p, x, y: jnp.mean(sequence_losses(eqx.combine(p, static)(x), y))))
    flat = []
    for i in range(d):
        rows = np.flatnonzero(np.asarray(batch["domain"]) == i)
        if rows.size == 0:
            flat.append(None)
            continue
        g = grad(params, batch["inputs"][rows], batch["targets"][rows])
        flat.append(np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(g)]))
    zero = np.zeros_like(next(f for f in flat if f is not None))
    flat = np.stack([zero if f is None else f for f in flat])
    return flat @ flat.T


@pytest.mark.parametrize("grad_accum", [1, pytest.param(2, marks=pytest.mark.slow)])  # 2: another ~8 s compile
def test_step_gradients_match_per_domain_gradients_taken_one_domain_at_a_time(grad_accum):
    model, batch = _tiny_model_and_batch()
    _check_domain_grads(model, batch, grad_accum, _grad_dot_oracle(model, batch, 3))


def test_domain_gradients_are_right_at_a_batch_shape_where_vmap_of_the_vjp_was_wrong():
    """[16, 64] batches (the known-answer runs' shape): jax.vmap over the vjp's cotangent rows
    gave a batch-mean gradient of twice the norm here (while [12, 64] and [16, 32] were right),
    and DoGE's proxy runs trained on it; the rows are now mapped one at a time."""
    model, batch = _tiny_model_and_batch(b=16, t=64)
    batch["domain"] = jnp.asarray(np.arange(16) % 3 * (np.arange(16) % 3 != 1), jnp.int32)  # domain 1 absent
    _check_domain_grads(model, batch, 1, _grad_dot_oracle(model, batch, 3))


def _check_domain_grads(model, batch, grad_accum, want):
    from ado_jax import train

    params, static = eqx.partition(model, eqx.is_array)
    loss, loss_B, grads, grad_dot = jax.jit(
        lambda p, b: train._domain_grads(p, static, b, grad_accum, 3))(params, batch)
    np.testing.assert_allclose(np.asarray(grad_dot), want, rtol=1e-4, atol=1e-7 * np.abs(want).max())
    assert np.all(np.asarray(grad_dot)[1] == 0)  # the absent domain
    # The update's gradient is the ordinary step's batch-mean gradient.
    ref_loss, ref_loss_B, ref_grads = jax.jit(lambda p, b: train._grads(p, static, b, grad_accum))(params, batch)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(loss_B), np.asarray(ref_loss_B), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)


@pytest.mark.slow  # two train-step compiles: ~50 s on the shared 2-core machine
def test_train_step_feeds_doge_and_updates_like_the_ordinary_step():
    from test_train_step import _setup

    from ado_jax.mixing.basic import static

    _, stream, state, step = _setup(doge(0.01))
    _, _, ref_state, ref_step = _setup(static([1, 1, 1, 1]))
    batch, _ = stream.next(state.stream_state, state.mixer_state.weights)
    want = _grad_dot_oracle(state.model, batch, 4)
    new, metrics = step(state, stream)
    ref_new, _ = ref_step(ref_state, stream)  # the same batch: same weights, same stream key
    present = np.asarray(metrics["domain_count"]) > 0  # DoGE's score: row sums of <g_i, g_j>
    np.testing.assert_allclose(np.asarray(new.mixer_state.score)[present], want.sum(axis=0)[present], rtol=2e-3)
    for a, b in zip(jax.tree.leaves(eqx.filter(new.model, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(ref_new.model, eqx.is_array))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    w = np.asarray(new.mixer_state.weights)
    assert abs(w.sum() - 1) < 1e-5 and np.all(w > 0)


def test_config_builds_and_rejects_a_bad_variant():
    from ado_jax.config import load_config

    cfg = load_config("tiny", ["mixer.name=doge", "mixer.variant=reference", "mixer.steps=10"])
    st = cfg.mixer.build([1.0, 2.0, 3.0]).init(3)
    np.testing.assert_allclose(np.asarray(st.weights), np.full(3, 1 / 3))
    cfg = load_config("tiny", ["mixer.name=doge", "mixer.variant=nope"])
    with pytest.raises(ValueError, match="variant"):
        cfg.mixer.build([1.0, 2.0])


@pytest.mark.parametrize("absent", ["last", "zero"])
def test_an_absent_domain_keeps_its_last_inner_products_instead_of_starving(absent):
    """Every domain has the same gradient, so DoGE should keep the mixture uniform; domains 1-3
    are absent from every other batch. Scored 0 when absent they lose weight every other step (the
    rich-get-richer trap); keeping their last inner products keeps them level."""
    d, g = 4, np.ones((4, 4)) * 2.0
    mixer = doge(0.1, absent=absent)
    st, update = mixer.init(d), jax.jit(mixer.update)
    for t in range(40):
        n = np.array([4.0, 4.0, 4.0, 4.0]) if t % 2 == 0 else np.array([16.0, 0.0, 0.0, 0.0])
        _, st = update(DomainStats.create(jnp.zeros(d), n, t, grad_dot=g), st)
    w = np.asarray(st.weights)
    if absent == "last":
        np.testing.assert_allclose(w, np.full(d, 0.25), rtol=1e-5)
    else:
        assert w[0] > 0.9  # the trap: 20 steps of eta * (2 - 0) = 0.2 log-units each: e^4 / (e^4 + 3)


def test_cli_default_is_the_papers_scores_with_absent_last():
    from ado_jax.config import load_config

    cfg = load_config("tiny", ["mixer.name=doge"])
    assert (cfg.mixer.variant, cfg.mixer.absent) == ("paper", "last")
    with pytest.raises(ValueError, match="absent"):
        load_config("tiny", ["mixer.name=doge", "mixer.absent=never"]).mixer.build([1.0, 2.0])
