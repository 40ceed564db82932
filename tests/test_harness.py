"""Downstream evaluation (ado_jax/harness/batching.py), without lm-eval: bucketed batches score
exactly what the unpadded model scores, compile once per bucket, shard over the mesh, and
extend greedily. The lm-eval adapter and command: tests/test_harness_lm_eval.py; parity with
lm-eval's Hugging Face backend: tests/test_harness_parity.py."""

import dataclasses
import functools
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ado_jax import cli, sharding
from ado_jax.config import MeshConfig
from ado_jax.harness import batching
from ado_jax.harness.run import SUITES, expand_tasks
from ado_jax.models.llama import Llama, ModelConfig

CFG = ModelConfig(vocab_size=256, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_seq_len=256,
                  compute_dtype="float32", remat="none")


@functools.lru_cache(maxsize=None)
def _model(vocab_size: int = CFG.vocab_size) -> Llama:
    """A random Llama (``CFG``, one jitted init: an eager one compiles every op, ~6 s here) with
    its tied embedding scaled up: sharp next-token distributions, greedy choices that vary."""
    import equinox as eqx

    cfg = dataclasses.replace(CFG, vocab_size=vocab_size)
    init = eqx.filter_jit(lambda key: Llama(cfg, key))
    model = init(jax.random.PRNGKey(0))
    return eqx.tree_at(lambda m: m.embed, model, model.embed * 40)


@functools.lru_cache(maxsize=None)
def _forward():
    import equinox as eqx

    return eqx.filter_jit(lambda model, tokens: model(tokens))


def _logits(model: Llama, seq: list[int], pad_to: int = 129) -> np.ndarray:
    """``[len(seq), V]`` float64 logits of ``seq``, computed in one padded call whose padding is
    random tokens (the model is causal: tests/test_model.py), one compilation for every length."""
    tokens = np.random.default_rng(len(seq)).integers(0, model.cfg.vocab_size, pad_to)
    tokens[:len(seq)] = seq
    return np.asarray(_forward()(model, jnp.asarray(tokens[None], jnp.int32))[0, :len(seq)], np.float64)


def _reference(model: Llama, seq: list[int], n: int) -> tuple[float, bool]:
    """The log-probability of the last ``n`` tokens of ``seq`` given the rest, and is-greedy."""
    logits = _logits(model, seq[:-1])
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    rows, targets = np.arange(len(seq) - 1 - n, len(seq) - 1), np.asarray(seq[-n:])
    return float(logp[rows, targets].sum()), bool((logits[rows].argmax(-1) == targets).all())


def test_bucket_lengths():
    assert batching.bucket_lengths(2048) == (64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
    assert batching.bucket_lengths(100) == (64, 96, 100)
    assert batching.bucket_lengths(128) == (64, 96, 128)
    assert batching.bucket_lengths(16) == (16,)
    assert batching.bucket_for(65, (64, 128)) == 128
    with pytest.raises(ValueError, match="longer than the longest bucket 128"):
        batching.bucket_for(129, (64, 128))
    with pytest.raises(ValueError, match="max_length=0"):
        batching.bucket_lengths(0)


def test_suite_names_expand():
    assert expand_tasks("ado-table1") == list(SUITES["ado-table1"])
    suite = list(SUITES["ado-table1"])
    assert expand_tasks("piqa, ado-table1,piqa") == ["piqa"] + [t for t in suite if t != "piqa"]
    assert len(SUITES["ado-table1"]) == 7
    with pytest.raises(ValueError, match="expected task names"):
        expand_tasks(" , ")


def test_scores_equal_the_unpadded_model_one_compile_per_bucket(monkeypatch):
    traces = []
    real = batching._score_batch
    monkeypatch.setattr(batching, "_score_batch", lambda *a: traces.append((a[1].shape, a[5])) or real(*a))
    jax.clear_caches()  # the jitted functions are module-level: another test may have compiled these shapes
    model = _model()
    rng = np.random.default_rng(0)
    lengths = [3, 9, 40, 64, 65, 66, 100, 129] + list(rng.integers(2, 60, 8))
    seqs = [rng.integers(0, 256, n).tolist() for n in lengths]
    scored = [int(rng.integers(1, n)) for n in lengths]
    for i in range(0, len(seqs), 3):  # every third request: a one-token continuation the model would choose
        seqs[i][-1], scored[i] = int(_logits(model, seqs[i][:-1])[-1].argmax()), 1
    runner = batching.BucketedRunner(model, 128, batch_size=8)
    logprob, greedy = runner.score(seqs, scored)
    # 13 requests of <= 64 tokens: a full batch of 8 and 5 in 8 rows; 1 of 65 (96); 2 of 99, 128 (128)
    assert {shape for shape, _ in traces} == {(1, 96), (2, 128), (8, 64)} and len(set(traces)) == len(traces)
    for seq, n, lp, g in zip(seqs, scored, logprob, greedy):
        want_lp, want_g = _reference(model, seq, n)
        assert abs(lp - want_lp) < 1e-4 * max(1.0, abs(want_lp)) and g == want_g, (len(seq), n, lp, want_lp)
    assert greedy.any() and not greedy.all()
    n = len(traces)
    runner.score(seqs[::-1], scored[::-1])  # the same shapes again: nothing new to compile
    assert len(traces) == n <= 4
    short = [s for s in seqs if len(s) <= 65][:8]  # one-token continuations: only 16 of 64 positions projected
    logprob, _ = runner.score(short, [1] * len(short))
    assert traces[-1] == ((8, 64), 16)
    np.testing.assert_allclose(logprob, [_reference(model, s, 1)[0] for s in short], rtol=1e-5, atol=1e-5)
    # A new runner (what every harness evaluation during training builds) of a model of the same
    # shapes, other weights, compiles nothing new, and scores with the new weights.
    n = len(traces)
    other = jax.tree.map(lambda x: x * 1.5 if eqx.is_inexact_array(x) else x, model)
    logprob, _ = batching.BucketedRunner(other, 128, batch_size=8).score(short, [1] * len(short))
    assert len(traces) == n
    np.testing.assert_allclose(logprob, [_reference(other, s, 1)[0] for s in short], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="request 0: 0 scored tokens of 5"):
        runner.score([[1, 2, 3, 4, 5]], [0])


def test_sharded_runner_gives_the_single_device_scores():
    model = _model()
    mesh = sharding.make_mesh(MeshConfig(data=4, fsdp=2))
    placed = jax.tree.map(lambda x, s: jax.device_put(x, s), model, sharding.tree_shardings(model, mesh))
    rng = np.random.default_rng(1)
    seqs = [rng.integers(0, 256, n).tolist() for n in (5, 30, 60, 12, 40)]
    scored = [2, 10, 1, 11, 39]
    runner = batching.BucketedRunner(placed, 128, batch_size=3, mesh=mesh)
    assert runner.rows(64) == 8  # rounded up to the 8 devices of the batch axes
    lp_sharded, g_sharded = runner.score(seqs, scored)
    lp_single, g_single = batching.BucketedRunner(model, 128, batch_size=4).score(seqs, scored)
    np.testing.assert_allclose(lp_sharded, lp_single, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(g_sharded, g_single)


def test_greedy_extension_is_the_stepwise_argmax():
    model = _model()
    contexts = [[5, 6, 7], list(range(40, 90)), [200]]
    runner = batching.BucketedRunner(model, 128, batch_size=4, gen_chunk=4)
    got = runner.extend(contexts, 6)
    for context, new in zip(contexts, got):
        seq = list(context)
        for _ in range(6):
            seq.append(int(_logits(model, seq)[-1].argmax()))
        assert new == seq[len(context):]
    assert len({tuple(g) for g in got}) == 3
    stopped = runner.extend(contexts, 12, finished=lambda r, new: r == 1)
    assert len(stopped[1]) == 4 and len(stopped[0]) == 12  # row 1 stops after the first chunk


def test_eval_harness_without_lm_eval_says_what_to_install(monkeypatch, capsys, tmp_path):
    import ado_jax.harness.lm  # noqa: F401  (imported with lm-eval, if installed, for the later tests)

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if lm-eval were not installed
    assert cli.main(["eval", "--run-dir", str(tmp_path), "--harness", "ado-table1"]) == 2
    assert "pip install 'ado-jax[harness]'" in capsys.readouterr().err
    assert cli.main(["eval", "--run-dir", str(tmp_path), "--limit", "3"]) == 2
    assert "apply to --harness evaluations only" in capsys.readouterr().err


def test_harness_every_needs_tasks_and_the_package():
    """``train.harness_every`` is checked with the config; without lm-eval a run that asks for it
    fails before it trains, with the install line."""
    from ado_jax.config import load_config

    with pytest.raises(ValueError, match="train.harness_every=5 needs train.harness_tasks"):
        load_config("tiny", ["train.harness_every=5", "train.harness_tasks=[]"])
    with pytest.raises(ValueError, match="train.harness_every=-1: must be"):
        load_config("tiny", ["train.harness_every=-1"])
    import importlib.util

    if importlib.util.find_spec("lm_eval") is None:
        from ado_jax.harness.run import check_installed

        with pytest.raises(ValueError, match="pip install 'ado-jax\\[harness\\]'"):
            check_installed()
