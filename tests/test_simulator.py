"""The mixing-law simulator: known dynamics, noise model, held-out protocol, vmap over seeds."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ado_jax.mixing import Mixer, static
from ado_jax.mixing.simulator import LinearLawEnv, PowerLawEnv, run, run_from

A = jnp.array([[3.0, 1.0, 0.5], [0.2, 2.0, 0.1], [1.0, 0.3, 1.5]]) * 1e-3


def test_linear_env_follows_the_law_exactly_without_noise():
    env = LinearLawEnv(a=A, loss0=jnp.array([5.0, 4.0, 3.0]), batch_size=10)
    w = np.array([0.5, 0.3, 0.2])
    res = run(static(w), env, 100, jax.random.PRNGKey(0))
    want = np.array([5.0, 4.0, 3.0]) - np.arange(1, 101)[:, None] * (np.asarray(A) @ w)[None, :]
    np.testing.assert_allclose(np.asarray(res.loss), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(res.weights), np.broadcast_to(w, (100, 3)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(res.env_state.seen), 100 * 10 * w, rtol=1e-5)


def test_power_env_losses_fall_with_data_and_transfer():
    eps, beta, alpha = jnp.array([1.0, 2.0]), jnp.array([3.0, 1.0]), jnp.array([0.5, 0.3])
    no_transfer = PowerLawEnv(eps=eps, beta=beta, alpha=alpha, transfer=jnp.eye(2), scale=10.0)
    transfer = PowerLawEnv(eps=eps, beta=beta, alpha=alpha, transfer=jnp.array([[1.0, 0.5], [0.0, 1.0]]), scale=10.0)
    only_1 = static([1e-9, 1.0])
    a = run(only_1, no_transfer, 50, jax.random.PRNGKey(0)).loss
    b = run(only_1, transfer, 50, jax.random.PRNGKey(0)).loss
    np.testing.assert_allclose(np.asarray(no_transfer.init().loss), [4.0, 3.0])
    assert np.all(np.diff(np.asarray(a[:, 1])) < 0)  # trained domain improves
    assert abs(float(a[-1, 0]) - 4.0) < 1e-3  # untrained, no transfer: (almost) unchanged
    assert float(b[-1, 0]) < float(a[-1, 0]) - 0.1  # transfer from domain 1 helps domain 0


def test_sampled_counts_sum_to_batch_and_seeds_differ():
    env = LinearLawEnv(a=A, loss0=jnp.ones(3), noise=0.3, batch_size=16, sample_counts=True)
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    res = jax.jit(jax.vmap(lambda k: run(static([0.2, 0.3, 0.5]), env, 30, k)))(keys)
    np.testing.assert_allclose(np.asarray(res.env_state.seen.sum(-1)), 16 * 30)
    assert not np.allclose(np.asarray(res.loss[0]), np.asarray(res.loss[1]))
    again = jax.jit(lambda k: run(static([0.2, 0.3, 0.5]), env, 30, k))(keys[2])
    np.testing.assert_array_equal(np.asarray(again.loss), np.asarray(res.loss[2]))


class _Probe(NamedTuple):
    weights: jax.Array
    step: jax.Array
    got: jax.Array  # [S] heldout_valid seen at each update
    wants_heldout: jax.Array


def test_heldout_given_exactly_when_the_mixer_asks():
    steps = 12

    def init(d):
        return _Probe(jnp.full((d,), 1.0 / d), jnp.zeros((), jnp.int32), jnp.zeros((steps,), bool), jnp.asarray(True))

    def update(stats, st):
        got = st.got.at[st.step].set(stats.heldout_valid & jnp.all(stats.heldout_loss != 0))
        nxt = st.step + 1
        return st.weights, st._replace(step=nxt, got=got, wants_heldout=nxt % 3 == 0)

    env = LinearLawEnv(a=A, loss0=jnp.ones(3))
    res = run(Mixer(init, update), env, steps, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(res.mixer_state.got), np.arange(steps) % 3 == 0)


def test_run_from_continues_exactly():
    env = LinearLawEnv(a=A, loss0=jnp.ones(3), noise=0.2, heldout_noise=0.1, batch_size=8, sample_counts=True)
    mixer = static([0.1, 0.6, 0.3])
    full = run(mixer, env, 40, jax.random.PRNGKey(3))
    first = run(mixer, env, 15, jax.random.PRNGKey(3))
    rest = run_from(mixer, env, 25, first.key, first.mixer_state, first.env_state)
    np.testing.assert_array_equal(np.asarray(full.loss[15:]), np.asarray(rest.loss))


def test_bad_env_shapes_raise():
    with pytest.raises(ValueError, match="a must be"):
        LinearLawEnv(a=jnp.ones((2, 3)), loss0=jnp.ones(3))
    with pytest.raises(ValueError, match="transfer"):
        PowerLawEnv(eps=jnp.ones(2), beta=jnp.ones(2), alpha=jnp.ones(2), transfer=jnp.ones((3, 3)))
    with pytest.raises(ValueError, match="steps"):
        run(static([1.0, 1.0, 1.0]), LinearLawEnv(a=A, loss0=jnp.ones(3)), 0, jax.random.PRNGKey(0))


def test_local_a_is_the_first_order_linear_law():
    env = PowerLawEnv(eps=jnp.array([2.0, 2.5]), beta=jnp.array([3.0, 1.5]), alpha=jnp.array([0.5, 0.2]),
                      transfer=jnp.array([[1.0, 0.3], [0.1, 1.0]]), scale=50.0, batch_size=16)
    seen = jnp.array([400.0, 900.0])
    a = np.asarray(env.local_a(seen))
    for j in range(2):  # one step on domain j only: the loss drop is A[:, j] to first order
        step = jnp.zeros(2).at[j].set(16.0)
        drop = np.asarray(env.loss_at(seen) - env.loss_at(seen + step))
        np.testing.assert_allclose(a[:, j], drop, rtol=2e-2)
    assert a[0, 1] > 0 and a[1, 0] > 0  # transfer shows up off the diagonal
    lin = LinearLawEnv(a=A, loss0=jnp.ones(3))
    np.testing.assert_array_equal(np.asarray(lin.local_a(jnp.ones(3))), np.asarray(A))
