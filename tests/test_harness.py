"""Downstream evaluation (ado_jax/harness/): bucketed batches score exactly what the unpadded
model scores, compile once per bucket and shard over the mesh; with lm-eval installed, the
``JaxLM`` adapter's tokenization rules, ``ado-jax eval --harness`` on local task YAMLs (record in
metrics.jsonl, seen by compare) and the one-line failure of a hub task without the network.
Parity with lm-eval's Hugging Face backend: tests/test_harness_parity.py."""

import dataclasses
import functools
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ado_jax import cli, sharding
from ado_jax.checkpoint import Checkpointer
from ado_jax.config import MeshConfig
from ado_jax.harness import batching
from ado_jax.harness.run import SUITES, expand_tasks
from ado_jax.models.llama import Llama, ModelConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]
TASKS = ROOT / "tests" / "harness_tasks"
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
    assert batching.bucket_lengths(2048) == (64, 128, 256, 512, 1024, 2048)
    assert batching.bucket_lengths(100) == (64, 100)
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
    monkeypatch.setattr(batching, "_score_batch", lambda *a: traces.append(a[1].shape) or real(*a))
    model = _model()
    rng = np.random.default_rng(0)
    lengths = [3, 9, 40, 64, 65, 66, 100, 129] + list(rng.integers(2, 60, 8))
    seqs = [rng.integers(0, 256, n).tolist() for n in lengths]
    scored = [int(rng.integers(1, n)) for n in lengths]
    for i in range(0, len(seqs), 3):  # every third request: a one-token continuation the model would choose
        seqs[i][-1], scored[i] = int(_logits(model, seqs[i][:-1])[-1].argmax()), 1
    runner = batching.BucketedRunner(model, 128, batch_size=8)
    logprob, greedy = runner.score(seqs, scored)
    assert sorted(set(traces)) == [(8, 64), (8, 128)]  # 2 buckets -> 2 compilations for 16 requests
    for seq, n, lp, g in zip(seqs, scored, logprob, greedy):
        want_lp, want_g = _reference(model, seq, n)
        assert abs(lp - want_lp) < 1e-4 * max(1.0, abs(want_lp)) and g == want_g, (len(seq), n, lp, want_lp)
    assert greedy.any() and not greedy.all()
    runner.score(seqs[::-1], scored[::-1])  # the same buckets again: nothing new to compile
    assert len(traces) == 2
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


# --- the lm-eval adapter and the command (need lm-eval: pip install 'ado-jax[harness]') ---

def _lm_eval():
    return pytest.importorskip("lm_eval", reason="harness tests need lm-eval (pip install 'ado-jax[harness]')")


def _fake_run(run_dir, model: Llama, step: int = 4, data=None) -> None:
    """A run directory whose checkpoint holds ``model`` (the rest of a TrainState is not needed)."""
    ckpt = Checkpointer(str(run_dir / "checkpoints"))
    ckpt.save(step, {"model": model}, {"model": dataclasses.asdict(model.cfg), "data": data or {"source": "builtin"}})
    ckpt.close()
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": step, "loss": 5.0, "weights": {"a": 1.0}}) + "\n")


def test_adapter_tokenizes_as_lm_evals_hf_backend():
    _lm_eval()
    pytest.importorskip("tokenizers", reason="the bpe extra's tokenizers builds an HF tokenizer")
    from lm_eval.api.instance import Instance

    from ado_jax.data.hf_tokenizer import HFTokenizer
    from ado_jax.data.tokenizer import BPETokenizer, ByteTokenizer
    from ado_jax.harness.lm import JaxLM

    model = _model(300)
    byte_lm = JaxLM(model, ByteTokenizer(add_eos=False))
    assert (byte_lm.eot_token_id, byte_lm.prefix_token_id) == (10, 10)  # built-in bytes: the newline
    bpe = BPETokenizer.train(["hello world, hello there"] * 20, vocab_size=280)
    hf = HFTokenizer(bpe._tok, "<|endoftext|>", bos_token="<|endoftext|>")
    hf_lm = JaxLM(model, hf)
    assert hf_lm.prefix_token_id == hf.bos_id and hf_lm.tok_encode("hello")[0] == hf.bos_id
    assert hf_lm.tok_encode("hello", add_special_tokens=False) == hf.encode("hello").tolist()
    # trailing spaces move to the continuation; an empty context becomes the prefix token
    req = lambda *args: Instance("loglikelihood", {}, args, 0)
    (lp_a, _), (lp_b, _), (lp_c, _) = byte_lm.loglikelihood([req("ab ", "cd"), req("ab", " cd"), req("", "x")])
    assert lp_a == pytest.approx(lp_b, abs=1e-6)
    assert lp_c == pytest.approx(_reference(model, [10, ord("x")], 1)[0], abs=1e-4)
    with pytest.raises(ValueError, match="tokenizer has 300 ids but model.vocab_size is 256"):
        JaxLM(_model(), type("Tok", (), {"vocab_size": 300})())
    gen = Instance("generate_until", {}, ("ab", {"until": ["q"], "max_gen_toks": 5}), 0)
    assert len(byte_lm.generate_until([gen])[0].encode()) <= 5
    with pytest.raises(ValueError, match="greedily only"):
        byte_lm.generate_until([Instance("generate_until", {}, ("ab", {"do_sample": True}), 0)])


def test_eval_harness_appends_a_record_that_compare_shows(tmp_path, monkeypatch, capsys):
    _lm_eval()
    monkeypatch.chdir(ROOT)  # the task YAMLs name their JSONL files relative to the repository root
    _fake_run(tmp_path / "run", _model())
    args = ["eval", "--run-dir", str(tmp_path / "run"), "--harness", "ado_tiny_mc,ado_tiny_lastword",
            "--harness-include-path", str(TASKS), "--limit", "6", "--harness-batch-size", "8"]
    assert cli.main(args) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["step"] == 4 and record["harness_limit"] == 6
    assert record["harness_samples"] == {"ado_tiny_mc": 6, "ado_tiny_lastword": 6}
    assert 0 <= record["harness"]["ado_tiny_mc"]["acc"] <= 1 and "acc_norm" in record["harness"]["ado_tiny_mc"]
    assert record["harness"]["ado_tiny_lastword"]["perplexity"] > 1
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1] == record and len(lines) == 2
    assert cli.main(["compare", str(tmp_path / "run"), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["harness"]["harness/ado_tiny_mc/acc"] == record["harness"]["ado_tiny_mc"]["acc"]
    assert row["steps"] == 4  # the harness record is not taken for a training step
    assert cli.main(args[:4] + ["no_such_task", "--harness-include-path", str(TASKS)]) == 2
    assert "unknown harness task(s) ['no_such_task']" in capsys.readouterr().err


def test_a_hub_task_without_network_fails_with_one_line(tmp_path):
    _lm_eval()
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "hub.yaml").write_text(
        "task: ado_hub_task\ndataset_path: ado-jax-test/not-downloaded\noutput_type: multiple_choice\n"
        "test_split: test\ndoc_to_text: '{{q}}'\ndoc_to_target: 0\ndoc_to_choice: '{{c}}'\n")
    _fake_run(tmp_path / "run", _model())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    run = subprocess.run([sys.executable, "-m", "ado_jax.cli", "eval", "--run-dir", str(tmp_path / "run"),
                          "--harness", "ado_hub_task", "--harness-include-path", str(tmp_path / "tasks")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: harness tasks ['ado_hub_task']: a dataset could not be fetched"), last
    for advice in ("ado-jax-test/not-downloaded", "HF_DATASETS_OFFLINE=1", "dataset_path", "--harness-include-path"):
        assert advice in last, last
