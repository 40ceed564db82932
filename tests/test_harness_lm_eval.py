"""The lm-eval adapter (ado_jax/harness/lm.py) and ``ado-jax eval --harness`` (ado_jax/harness/run.py)
with lm-eval installed (pip install 'ado-jax[harness]'): tokenization as lm-eval's Hugging Face
backend does it, local task YAMLs (tests/harness_tasks) scored into a ``metrics.jsonl`` record
that ``ado-jax compare`` shows, and the one-line failure of a hub task without the network."""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import pytest
from test_harness import _model, _reference

from ado_jax import cli
from ado_jax.checkpoint import Checkpointer
from ado_jax.models.llama import Llama

pytest.importorskip("lm_eval", reason="harness tests need lm-eval (pip install 'ado-jax[harness]')")

ROOT = pathlib.Path(__file__).resolve().parents[1]
TASKS = ROOT / "tests" / "harness_tasks"

def _fake_run(run_dir, model: Llama, step: int = 4, data=None) -> None:
    """A run directory whose checkpoint holds ``model`` (the rest of a TrainState is not needed)."""
    ckpt = Checkpointer(str(run_dir / "checkpoints"))
    ckpt.save(step, {"model": model}, {"model": dataclasses.asdict(model.cfg), "data": data or {"source": "builtin"}})
    ckpt.close()
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": step, "loss": 5.0, "weights": {"a": 1.0}}) + "\n")


def test_adapter_tokenizes_as_lm_evals_hf_backend():
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
    with pytest.raises(ValueError, match="tokenizer has 301 ids but model.vocab_size is 300"):
        JaxLM(model, type("Tok", (), {"vocab_size": 301})())
    gen = Instance("generate_until", {}, ("ab", {"until": ["q"], "max_gen_toks": 5}), 0)
    text = byte_lm.generate_until([gen])[0]
    assert len(text) <= 5 and "q" not in text  # at most 5 bytes, cut before the stop string
    with pytest.raises(ValueError, match="greedily only"):
        byte_lm.generate_until([Instance("generate_until", {}, ("ab", {"do_sample": True}), 0)])


def test_eval_harness_appends_a_record_that_compare_shows(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the task YAMLs name their JSONL files relative to the repository root
    _fake_run(tmp_path / "run", _model(300))
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
    pytest.importorskip("matplotlib", reason="the plot extra's matplotlib draws harness.png")
    assert cli.main(["plot", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "plots" / "harness.png").stat().st_size > 0


def test_a_hub_task_without_network_fails_with_one_line(tmp_path):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "hub.yaml").write_text(
        "task: ado_hub_task\ndataset_path: ado-jax-test/not-downloaded\noutput_type: multiple_choice\n"
        "test_split: test\ndoc_to_text: '{{q}}'\ndoc_to_target: 0\ndoc_to_choice: '{{c}}'\n")
    _fake_run(tmp_path / "run", _model(300))
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


def test_harness_every_scores_the_training_model_into_metrics(tmp_path, monkeypatch):
    """``train.harness_every``: the loop runs the tasks on the model being trained, at the cadence
    and at the last step, and writes the records beside the losses (compare/plot read them)."""
    monkeypatch.chdir(ROOT)  # the task YAMLs name their JSONL files relative to the repository root
    from ado_jax.run_log import read_metrics

    run = tmp_path / "run"
    assert cli.main(["train", "--config", "tiny", "--steps", "5", "--run-dir", str(run),
                     "--set", "train.progress=false", "--set", "train.eval_every=0", "--set", "train.harness_every=3",
                     "--set", "train.harness_tasks=[\"ado_tiny_mc\"]", "--set", f"train.harness_include_path={TASKS}",
                     "--set", "train.harness_limit=4"]) == 0
    records = [r for r in read_metrics(run / "metrics.jsonl") if "harness" in r]
    assert [r["step"] for r in records] == [3, 5]
    assert all(0 <= r["harness"]["ado_tiny_mc"]["acc"] <= 1 and r["harness_samples"] == {"ado_tiny_mc": 4}
               for r in records)


def test_ado_table1_names_lm_eval_tasks_our_adapter_scores():
    """Offline: the seven names of the ``ado-table1`` suite are tasks in the installed lm-eval's
    index (read from its YAMLs, no download), each scored by log-likelihood (multiple choice or
    LAMBADA's last word), which the adapter computes."""
    from lm_eval.tasks import TaskManager

    from ado_jax.harness.run import SUITES

    manager = TaskManager()
    suite = SUITES["ado-table1"]
    assert [t for t in suite if t not in manager.all_tasks] == []
    for task in suite:
        cfg = getattr(manager.task_index[task], "cfg", None)  # lm-eval >= 0.4.10 keeps the YAML here
        if isinstance(cfg, dict):
            assert cfg.get("output_type") in ("multiple_choice", "loglikelihood"), (task, cfg.get("output_type"))


def test_heldout_tasks_from_a_corpus_score_through_the_harness_with_their_text_intact(tmp_path):
    """``ado-jax corpus tasks`` writes YAMLs lm-eval loads from the include path; each request our
    adapter gets is a row's context and one of its endings exactly (no delimiter added: the text is
    cut mid-line), and every task is scored on all its rows."""
    from test_local_tasks import _corpus, _read

    from ado_jax.data.tokenizer import ByteTokenizer
    from ado_jax.harness.lm import JaxLM
    from ado_jax.harness.local_tasks import build_heldout_tasks
    from ado_jax.harness.run import results_record, run_tasks

    _corpus(tmp_path / "corpus")
    tasks = build_heldout_tasks(tmp_path / "corpus", tmp_path / "tasks", domains=["verse"], num=8)
    seen = []

    class Recording(JaxLM):
        def loglikelihood(self, requests, disable_tqdm=False):
            seen.extend(tuple(r.args) for r in requests)
            return super().loglikelihood(requests, disable_tqdm)

    record = results_record(7, run_tasks(Recording(_model(300), ByteTokenizer(add_eos=False)), tasks,
                                         include_path=str(tmp_path / "tasks")))
    choice = _read(tmp_path / "tasks" / "heldout_choice_verse.jsonl")
    last = _read(tmp_path / "tasks" / "heldout_lastword_verse.jsonl")
    want = {(r["context"], c) for r in choice for c in r["choices"]} | {(r["context"], r["target"]) for r in last}
    assert set(seen) == want and len(seen) == 4 * 8 + 8
    assert record["harness_samples"] == {"heldout_choice_verse": 8, "heldout_lastword_verse": 8}
    assert 0 <= record["harness"]["heldout_choice_verse"]["acc"] <= 1
    assert record["harness"]["heldout_lastword_verse"]["perplexity"] > 1
