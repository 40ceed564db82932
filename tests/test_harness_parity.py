"""Our lm-eval adapter (``ado_jax.harness.lm.JaxLM``) against lm-eval's own Hugging Face backend
(``hf``, transformers + torch, CPU, float32) on the checkpoint ``ado-jax export --format hf``
writes: the same local tasks (tests/harness_tasks: multiple choice, LAMBADA-style last word,
rolling log-likelihood) give the same per-request log-likelihoods (within 1e-4), the same
is-greedy flags and accuracies, and the same greedy generations, with the byte tokenizer and a
BPE one. Needs lm-eval, torch and transformers (CI's parity step installs them)."""

import dataclasses
import json
import pathlib

import jax
import pytest

from ado_jax.checkpoint import Checkpointer
from ado_jax.models.llama import Llama, ModelConfig

pytest.importorskip("lm_eval", reason="parity tests need lm-eval (pip install 'ado-jax[harness]')")
pytest.importorskip("torch", reason="parity tests need torch (pip install torch==<version> CPU build)")
pytest.importorskip("transformers", reason="parity tests need transformers (pip install 'ado-jax[hf]')")
pytest.importorskip("accelerate", reason="lm-eval's hf backend needs accelerate (pip install 'lm-eval[hf]')")
pytest.importorskip("safetensors", reason="ado-jax export needs safetensors (pip install 'ado-jax[hf]')")
pytest.importorskip("tokenizers", reason="the byte and BPE tokenizers for transformers need tokenizers")

ROOT = pathlib.Path(__file__).resolve().parents[1]
TASKS = ["ado_tiny_mc", "ado_tiny_lastword", "ado_tiny_rolling"]
TINY = dict(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, compute_dtype="float32", remat="none",
            max_seq_len=64, tie_embeddings=False)  # max_seq_len 64: the rolling texts take two windows


def byte_tokenizer_for_transformers(eos: str = "<|endoftext|>"):
    """A ``PreTrainedTokenizerFast`` with our ``ByteTokenizer``'s ids: UTF-8 byte b is id b, ``eos``
    is 256 (a byte-level BPE with no merges; ``ado-jax export`` writes no file for byte runs)."""
    import tokenizers as tk
    from transformers import PreTrainedTokenizerFast

    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]  # GPT-2's byte -> unicode map
    rest = [b for b in range(256) if b not in printable]
    chars = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(rest)}
    tok = tk.Tokenizer(tk.models.BPE(vocab={c: b for b, c in chars.items()} | {eos: 256}, merges=[]))
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = tk.decoders.ByteLevel()
    tok.add_special_tokens([eos])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos)


def _run(tmp_path, kind: str):
    """A run (checkpoint + corpus tokenizer) and its HF export; returns ``(run_dir, hf_dir, hf tokenizer)``."""
    import equinox as eqx

    from ado_jax.data.tokenizer import BPETokenizer, ByteTokenizer, save_tokenizer
    from ado_jax.hf_checkpoint import export_run

    docs = [json.loads(x)["text"] for x in (ROOT / "tests/harness_tasks/tiny_lastword.jsonl").read_text().splitlines()]
    tok = ByteTokenizer() if kind == "byte" else BPETokenizer.train(docs * 4, vocab_size=320)
    save_tokenizer(tok, tmp_path / "corpus")
    cfg = ModelConfig(vocab_size=tok.vocab_size, **TINY)
    model = eqx.filter_jit(lambda key: Llama(cfg, key))(jax.random.PRNGKey(1))
    model = eqx.tree_at(lambda m: m.unembed, model, model.unembed * 30)  # sharp, varied greedy choices
    ckpt = Checkpointer(str(tmp_path / "run" / "checkpoints"))
    ckpt.save(5, {"model": model}, {"model": dataclasses.asdict(cfg),
                                    "data": {"source": "corpus", "corpus_dir": str(tmp_path / "corpus")}})
    ckpt.close()
    export_run(str(tmp_path / "run"), str(tmp_path / "hf"))
    return tmp_path / "run", tmp_path / "hf", byte_tokenizer_for_transformers() if kind == "byte" else None


def _responses(out: dict) -> dict:
    """``{task: [per document: [per request: float log-likelihood or (float, is_greedy)]]}``."""
    return {task: [[r[0] for r in doc["resps"]] for doc in docs] for task, docs in out["samples"].items()}


@pytest.mark.parametrize("kind", ["byte", "bpe"])
def test_local_tasks_score_as_lm_evals_hf_backend(tmp_path, monkeypatch, kind):
    from lm_eval import simple_evaluate
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from ado_jax.harness.lm import JaxLM
    from ado_jax.harness.run import load_run_model, task_manager

    monkeypatch.chdir(ROOT)  # the task YAMLs name their JSONL files relative to the repository root
    run_dir, hf_dir, hf_tok = _run(tmp_path, kind)
    model, tokenizer, step, _ = load_run_model(str(run_dir))
    ours = JaxLM(model, tokenizer, batch_size=16)
    theirs = HFLM(pretrained=str(hf_dir), tokenizer=hf_tok, device="cpu", dtype="float32", batch_size=16)
    assert (ours.max_length, ours.prefix_token_id) == (theirs.max_length, theirs.prefix_token_id)
    manager = task_manager(TASKS, str(ROOT / "tests/harness_tasks"))
    kw = dict(tasks=TASKS, task_manager=manager, log_samples=True, bootstrap_iters=0)
    a, b = simple_evaluate(model=ours, **kw), simple_evaluate(model=theirs, **kw)
    worst = 0.0
    for task, docs in _responses(a).items():
        assert len(docs) == 12
        for doc_a, doc_b in zip(docs, _responses(b)[task]):
            for x, y in zip(doc_a, doc_b):
                lp_x, lp_y = (x[0], y[0]) if isinstance(x, tuple) else (x, y)
                worst = max(worst, abs(lp_x - lp_y))
                assert abs(lp_x - lp_y) <= 1e-4, (task, x, y)
                if isinstance(x, tuple):
                    assert x[1] == y[1], (task, x, y)  # is_greedy
    for task in ("ado_tiny_mc", "ado_tiny_lastword"):
        for metric in ("acc", "acc_norm") if task == "ado_tiny_mc" else ("acc",):
            assert a["results"][task][f"{metric},none"] == b["results"][task][f"{metric},none"], (task, metric)
    print(f"{kind}: max |loglikelihood ours - hf| = {worst:.3g} over {sum(map(len, _responses(a).values()))} docs")
    gens = [Instance("generate_until", {}, (ctx, {"until": ["."], "max_gen_toks": 12, "do_sample": False}), i)
            for i, ctx in enumerate(["The old man told", "We planted tomatoes and", "She"])]
    assert ours.generate_until(gens) == theirs.generate_until(gens)
