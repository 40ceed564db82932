"""The train step: gradient accumulation, mixture-driven sampling, in-step held-out evaluation."""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ado_jax import sharding, train
from ado_jax.optimizer import make_optimizer
from ado_jax.config import MeshConfig, load_config
from ado_jax.data.setup import heldout_stream, train_stream
from ado_jax.mixing.base import Mixer
from ado_jax.mixing.basic import static

BASE = ["train.batch_size=16", "train.seq_len=32", "data.max_bytes_per_domain=100000"]


def _setup(mixer, *overrides):
    cfg = load_config("tiny", BASE + list(overrides))
    mesh = sharding.make_mesh(MeshConfig(data=-1))
    stream = train_stream(cfg)
    opt = make_optimizer(cfg.train)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    state = train.create_state(cfg.model, opt, mixer, stream.init(k2), stream.num_domains, k1, mesh)
    step = train.make_train_step(cfg.train, opt, mixer, mesh, train.state_shardings(state, mesh), stream.num_domains)
    return cfg, stream, state, step


@pytest.mark.slow  # 16-26 s in a quiet default run; CI runs it (pytest -m slow)
def test_gradient_accumulation_matches_one_big_batch():
    _, stream, s1, step1 = _setup(static([1, 1, 1, 1]))
    _, _, s2, step2 = _setup(static([1, 1, 1, 1]), "train.grad_accum=2")
    s1, m1 = step1(s1, stream)
    s2, m2 = step2(s2, stream)
    np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-5)
    leaves = lambda s: jax.tree.leaves(eqx.filter(s.model, eqx.is_array))
    for a, b in zip(leaves(s1), leaves(s2)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_mixture_weights_drive_in_step_sampling():
    _, stream, state, step = _setup(static([0, 0, 1, 0]))
    for _ in range(2):
        state, m = step(state, stream)
        np.testing.assert_array_equal(np.asarray(m["domain_count"]), [0, 0, 16, 0])
        assert np.isnan(np.asarray(m["domain_loss"])[0]) and np.isfinite(np.asarray(m["domain_loss"])[2])


class _EvenState(NamedTuple):
    weights: jax.Array
    wants_heldout: jax.Array
    seen: jax.Array  # [D] last held-out losses received


def _even_steps_mixer() -> Mixer:
    """Asks for held-out losses on even steps and records what it gets."""
    def init(d):
        return _EvenState(jnp.full((d,), 1.0 / d), jnp.asarray(True), jnp.zeros((d,)))

    def update(stats, state):
        seen = jnp.where(stats.heldout_valid, stats.heldout_loss, state.seen)
        return state.weights, _EvenState(state.weights, (stats.step + 1) % 2 == 0, seen)

    return Mixer(init, update)


def test_heldout_losses_are_evaluated_in_step_only_when_asked():
    cfg, stream, state, step = _setup(_even_steps_mixer())
    held = heldout_stream(cfg).fixed_batches(1)
    flags = []
    for _ in range(3):
        state, m = step(state, stream, held)
        flags.append(int(m["heldout_eval"]))
        if flags[-1]:  # what the mixer saw is the updated model's held-out loss
            want = train.heldout_losses(state.model, held)
            np.testing.assert_allclose(state.mixer_state.seen, want, rtol=1e-5)
    assert flags == [1, 0, 1]


def test_static_mixer_never_compiles_an_evaluation():
    cfg, stream, state, step = _setup(static([1, 1, 1, 1]))
    held = heldout_stream(cfg).fixed_batches(1)
    state, m = step(state, stream, held)
    assert int(m["heldout_eval"]) == 0


def test_nonfinite_update_is_skipped_and_counted():
    cfg, stream, state, step = _setup(static([1, 1, 1, 1]))
    bad = jax.tree.map(lambda x: x, state)
    bad = eqx.tree_at(lambda s: s.model.final_norm, bad, jnp.full_like(state.model.final_norm, jnp.nan))
    before = jax.tree.leaves(eqx.filter(bad.model, eqx.is_array))
    before = [np.asarray(x) for x in before]
    bad, m = step(bad, stream)
    assert int(m["skipped"]) == 1 and int(bad.opt_state.total_notfinite) == 1
    after = [np.asarray(x) for x in jax.tree.leaves(eqx.filter(bad.model, eqx.is_array))]
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x, y)  # parameters untouched
    w = np.asarray(bad.mixer_state.weights)
    assert np.all(np.isfinite(w)) and w.sum() == pytest.approx(1.0)
