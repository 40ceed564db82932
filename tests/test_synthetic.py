"""Synthetic streams, reference estimators, task models and the seed-vmapped trainer."""

import itertools

import jax
import jax.numpy as jnp
import equinox as eqx
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from ado_jax.synthetic import Facts, ICLRegression, SparseParity, estimators, parity_target
from ado_jax.synthetic.icl_regression import sample_tasks
from ado_jax.synthetic.sampling import sample_domains
from ado_jax.synthetic.tasks import make_task
from ado_jax.synthetic.interventions import diversity
from ado_jax.synthetic.gpt_tasks import TaskGPT, icl_predict, interleave
from ado_jax.synthetic import train as st

KEY = jax.random.PRNGKey(0)


def test_sample_domains_matches_weights_and_skips_zeros():
    w = jnp.array([0.5, 0.0, 0.3, 0.2, 0.0])
    ids = np.asarray(sample_domains(KEY, w, (40000,)))
    freq = np.bincount(ids, minlength=5) / ids.size
    assert freq[1] == 0 and freq[4] == 0
    np.testing.assert_allclose(freq, np.asarray(w), atol=0.01)


def test_icl_pool_stream_is_linear_in_pool_tasks_and_respects_weights():
    s = ICLRegression(dim=3, num_points=5, noise_std=0.0, batch_size=16, num_tasks=4)
    state = s.init(KEY)
    batch, state2 = jax.jit(s.next)(state, jnp.array([0.0, 1.0, 0.0, 0.0]))
    assert batch["inputs"].shape == (16, 5, 3) and batch["targets"].shape == (16, 5)
    assert np.all(np.asarray(batch["domain"]) == 1)
    want = jnp.einsum("bnd,d->bn", batch["inputs"], state.pool_KD[1])
    np.testing.assert_allclose(batch["targets"], want, rtol=1e-5, atol=1e-5)
    assert int(state2.step) == 1 and not np.array_equal(state2.key, state.key)
    b_again, _ = s.next(state, jnp.array([0.0, 1.0, 0.0, 0.0]))  # pure: same state, same batch
    np.testing.assert_array_equal(b_again["inputs"], batch["inputs"])


def test_covariance_bias_matches_target_covariance():
    v = jnp.array([0.6, 0.8, 0.0])
    w = np.asarray(sample_tasks(KEY, 100000, 3, v, 0.7))
    want = 0.3 * np.eye(3) + 0.7 * np.outer(v, v)
    np.testing.assert_allclose(np.cov(w.T), want, atol=0.02)


def test_icl_rejects_bad_config():
    with pytest.raises(ValueError, match="cov_beta"):
        ICLRegression(cov_beta=1.5)
    with pytest.raises(ValueError, match="num_tasks"):
        ICLRegression(num_tasks=0)


def _ridge_np(xs, ys, sigma, cov):
    n, d = xs.shape
    out = []
    for i in range(n):
        x, y = xs[:i], ys[:i]
        w = np.linalg.solve(x.T @ x + sigma ** 2 * np.linalg.inv(cov), x.T @ y)
        out.append(xs[i] @ w)
    return np.array(out)


@pytest.mark.parametrize("isotropic", [True, False])
def test_ridge_matches_closed_form_per_prefix(isotropic):
    rng = np.random.default_rng(0)
    xs, ys = rng.normal(size=(2, 6, 3)), rng.normal(size=(2, 6))
    cov = np.eye(3) if isotropic else 0.4 * np.eye(3) + 0.6 * np.outer([1, 0, 0], [1, 0, 0])
    got = estimators.ridge_predict(jnp.asarray(xs), jnp.asarray(ys), 0.7, None if isotropic else jnp.asarray(cov))
    for b in range(2):
        np.testing.assert_allclose(got[b], _ridge_np(xs[b], ys[b], 0.7, cov), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[:, 0], 0.0, atol=1e-6)  # no context -> prior mean 0


def test_discrete_bayes_matches_brute_force_posterior():
    rng = np.random.default_rng(1)
    pool, prior = rng.normal(size=(3, 2)), np.array([0.5, 0.3, 0.2])
    xs, ys = rng.normal(size=(1, 4, 2)), rng.normal(size=(1, 4))
    got = np.asarray(estimators.discrete_bayes_predict(jnp.asarray(xs), jnp.asarray(ys), jnp.asarray(pool),
                                                       0.8, jnp.asarray(prior)))[0]
    for i in range(4):
        lik = np.array([multivariate_normal(xs[0, :i] @ w, 0.64 * np.eye(i)).pdf(ys[0, :i]) if i else 1.0
                        for w in pool])
        post = prior * lik / np.sum(prior * lik)
        np.testing.assert_allclose(got[i], xs[0, i] @ (post @ pool), rtol=1e-4, atol=1e-5)


def test_each_estimator_is_best_on_its_own_distribution():
    s = ICLRegression(dim=4, num_points=10, batch_size=1000, num_tasks=4)
    state = s.init(KEY)
    pool_batch, _ = s.next(state)
    gauss = s.test_batch(jax.random.PRNGKey(1), 1000)
    err = {}
    for name, b in [("pool", pool_batch), ("gauss", gauss)]:
        ridge = estimators.mse(estimators.ridge_predict(b["inputs"], b["targets"]), b["targets"])
        bayes = estimators.mse(estimators.discrete_bayes_predict(b["inputs"], b["targets"], state.pool_KD),
                               b["targets"])
        err[name] = (float(ridge), float(bayes))
    assert err["pool"][1] < err["pool"][0]    # eq. 6 wins on the finite pool
    assert err["gauss"][0] < err["gauss"][1]  # ridge wins on Gaussian tasks


def test_parity_target_brute_force_and_staircase():
    x = np.array(list(itertools.product([-1.0, 1.0], repeat=5)))
    np.testing.assert_array_equal(parity_target(jnp.asarray(x), 3), np.prod(x[:, :3], axis=1))
    stair = x[:, 0] + x[:, 0] * x[:, 1]
    np.testing.assert_allclose(parity_target(jnp.asarray(x), 3, 0.1), np.prod(x[:, :3], 1) + 0.1 * stair)
    acc = estimators.parity_accuracy(jnp.array([0.2, -3.0, 1.0]), jnp.array([1.0, -1.0, -1.0]))
    assert float(acc) == pytest.approx(2 / 3)


def test_parity_subsample_and_whole_chunk_batches():
    s = SparseParity(dim=8, k=3, batch_size=4, num_examples=400, num_chunks=100)
    state = s.init(KEY)
    w = diversity.subsample(100, 0.02)
    for _ in range(5):
        batch, state = s.next(state, w)
        assert np.all(np.asarray(batch["index"]) < 8)  # the first 2 chunks of 4 examples
    again, _ = s.next(s.init(KEY), w)
    first, _ = s.next(s.init(KEY), w)
    np.testing.assert_array_equal(again["inputs"], first["inputs"])  # virtual dataset is fixed
    sw = SparseParity(dim=8, k=3, batch_size=4, num_examples=400, num_chunks=100, whole_chunk=True)
    b, _ = sw.next(sw.init(KEY), jnp.zeros(100).at[7].set(1.0))
    np.testing.assert_array_equal(b["index"], [28, 29, 30, 31])
    with pytest.raises(ValueError, match="whole_chunk"):
        SparseParity(batch_size=4, num_examples=400, num_chunks=10, whole_chunk=True)


def test_facts_documents_follow_ground_truth():
    f = Facts(num_subjects=7, num_relations=3, answers_per_relation=5, num_noise=11, k_noise=2, batch_size=32)
    state = f.init(KEY)
    batch, _ = jax.jit(f.next)(state, diversity.truncate(7, 3))
    doc = np.concatenate([batch["inputs"], batch["targets"][:, -1:]], axis=1)
    s, r = doc[:, 0], doc[:, 1] - 7
    assert np.all(s < 3) and np.array_equal(s, batch["domain"])
    assert np.all((doc[:, 2:4] >= f.noise_offset) & (doc[:, 2:4] < f.vocab_size))
    np.testing.assert_array_equal(doc[:, -1], np.asarray(state.answer_SR)[s, r])
    lo = f.answer_offset + r * 5
    assert np.all((doc[:, -1] >= lo) & (doc[:, -1] < lo + 5))  # answer belongs to relation r
    np.testing.assert_array_equal(batch["targets"][:, :-1], batch["inputs"][:, 1:])


def test_fact_accuracy_counts_exact_greedy_matches():
    f = Facts(num_subjects=4, num_relations=2, answers_per_relation=3, num_noise=5, k_noise=1)
    state = f.init(KEY)
    prompts, answers = f.all_pairs(KEY, state.answer_SR)
    assert prompts.shape == (8, 3) and len({(int(a), int(b)) for a, b in prompts[:, :2]}) == 8

    def oracle(right_subjects):
        def fn(tokens_PT):
            s, r = tokens_PT[:, 0], tokens_PT[:, 1] - 4
            ans = jnp.where(s < right_subjects, state.answer_SR[s, r], 0)
            return jnp.broadcast_to(jax.nn.one_hot(ans, f.vocab_size)[:, None], tokens_PT.shape + (f.vocab_size,))
        return fn

    assert float(estimators.fact_accuracy(oracle(4), prompts, answers)) == 1.0
    assert float(estimators.fact_accuracy(oracle(2), prompts, answers)) == 0.5


def test_task_gpt_is_causal_and_icl_does_not_see_its_target():
    m = TaskGPT(KEY, max_len=8, dim=16, num_layers=2, num_heads=2, input_dim=3)
    xs, ys = jax.random.normal(KEY, (4, 3)), jnp.arange(4.0)
    assert interleave(xs, ys).shape == (8, 3)
    pred = eqx.filter_jit(icl_predict)
    base, moved = pred(m, xs, ys), pred(m, xs, ys.at[2].set(100.0))
    np.testing.assert_allclose(base[:3], moved[:3], rtol=1e-5)  # y_2 is invisible to preds 0..2
    assert not np.allclose(base[3], moved[3])
    tok = TaskGPT(KEY, max_len=5, dim=16, num_layers=1, num_heads=2, vocab_size=9)
    assert eqx.filter_eval_shape(tok, jnp.arange(5)).shape == (5, 9)


def test_trainer_learns_easy_parity_and_schedule_equals_static():
    task = make_task("sparse_parity", dim=6, k=2, num_examples=2000, num_chunks=10)
    w = diversity.subsample(10, 0.5)
    r = st.train(task, num_steps=1500, eval_every=500, seeds=2, weights=w)
    assert r["test_acc"].shape == (1, 2, 4) and r["train_loss"].shape == (1, 2, 3)
    assert np.all(r["test_acc"][0, :, -1] >= 0.95)
    r2 = st.train(task, num_steps=1500, eval_every=500, seeds=2, weights=lambda t: w)
    # same draws and updates; only float rounding differs between the two compiled programs
    np.testing.assert_allclose(r["test_loss"], r2["test_loss"], rtol=2e-2, atol=1e-6)
    np.testing.assert_array_equal(r["test_acc"], r2["test_acc"])
    with pytest.raises(ValueError, match="multiple"):
        st.train(task, num_steps=10, eval_every=3)


def test_facts_task_loss_and_eval_are_consistent():
    task = make_task("facts", model=dict(dim=8, layers=1, heads=2), num_subjects=5, num_noise=4, k_noise=1,
                     batch_size=8)
    model, state = task.make_model(KEY), task.stream.init(KEY)

    @eqx.filter_jit
    def go(model, state):
        batch, _ = task.stream.next(state)
        return task.loss_fn(model, batch), task.eval_fn(model, KEY, state)

    loss_B, ev = go(model, state)
    assert loss_B.shape == (8,) and np.all(np.isfinite(loss_B))
    # an untrained model is near chance: CE of the answer ~ log(vocab)
    assert abs(float(ev["test_loss"]) - np.log(task.stream.vocab_size)) < 1.0
    assert 0.0 <= float(ev["test_acc"]) <= 0.2


@pytest.mark.slow
def test_trainer_facts_and_icl_small_runs_with_cosine():
    for name, cfg in [("facts", dict(num_subjects=5, num_noise=4, k_noise=1, batch_size=8)),
                      ("icl_regression", dict(dim=2, num_points=3, batch_size=4))]:
        task = make_task(name, model=dict(dim=8, layers=1, heads=2), **cfg)
        r = st.train(task, num_steps=4, eval_every=2, seeds=2, track_cosine=True)
        assert r["test_loss"].shape == (1, 2, 3) and np.all(np.abs(r["grad_cosine"]) <= 1.0 + 1e-5)


def test_steps_to_threshold():
    steps = np.array([0, 10, 20, 30])
    curve = np.array([[1.0, 0.6, 0.4, 0.1], [1.0, 1.0, 1.0, 0.9]])
    np.testing.assert_array_equal(st.steps_to_threshold(steps, curve, 0.5), [20, np.nan])


def test_parity_data_seed_fixes_the_dataset_across_init_keys():
    s = SparseParity(dim=8, k=3, batch_size=4, num_examples=40, num_chunks=10, data_seed=3)
    a, b = s.init(jax.random.PRNGKey(1)), s.init(jax.random.PRNGKey(2))
    np.testing.assert_array_equal(a.data_key, b.data_key)
    assert not np.array_equal(a.key, b.key)
