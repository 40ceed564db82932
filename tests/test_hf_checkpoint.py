"""Hugging Face checkpoints in and out (ado_jax/hf_checkpoint.py): round trips with safetensors only;
logits parity with transformers (CPU, float32) when torch and transformers are installed."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from ado_jax import cli, hf_checkpoint as hfc
from ado_jax.checkpoint import Checkpointer
from ado_jax.models.llama import Llama, ModelConfig

pytest.importorskip("safetensors", reason="the hf extra's safetensors is needed to read and write the files")

TINY = dict(vocab_size=96, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, compute_dtype="float32",
            remat="none", rope_theta=500.0, norm_eps=1e-6)
CASES = {"untied_gqa": dict(tie_embeddings=False), "tied_gqa": dict(tie_embeddings=True),
         "qk_norm_mqa": dict(tie_embeddings=False, qk_norm=True, n_kv_heads=1)}


def _random_model(cfg: ModelConfig, seed: int = 0) -> Llama:
    """A Llama with every weight random, norms included (ones would hide a transposed norm); the
    unused q_norm/k_norm of a model without qk_norm stay ones, as training leaves them."""
    model = Llama(cfg, jax.random.PRNGKey(seed))
    arrays = hfc.model_arrays(model)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(arrays))
    used = lambda k: "norm" in k and (cfg.qk_norm or k not in ("blocks.q_norm", "blocks.k_norm"))
    noisy = {k: np.asarray(a + 0.1 * jax.random.normal(kk, a.shape)) if used(k) else np.asarray(a)
             for (k, a), kk in zip(sorted(arrays.items()), keys)}
    return hfc.with_arrays(model, noisy)


def _fake_run(run_dir, model: Llama, step: int = 3, data=None) -> None:
    """A run directory whose checkpoint holds ``model`` (the rest of a TrainState is not needed)."""
    ckpt = Checkpointer(str(run_dir / "checkpoints"))
    ckpt.save(step, {"model": model}, {"model": dataclasses.asdict(model.cfg), "data": data or {"source": "builtin"}})
    ckpt.close()


@pytest.mark.parametrize("case", sorted(CASES))
def test_round_trip_ours_hf_ours_is_exact(tmp_path, case):
    cfg = ModelConfig(**{**TINY, **CASES[case]})
    model = _random_model(cfg)
    _fake_run(tmp_path / "run", model)
    out = hfc.export_run(str(tmp_path / "run"), str(tmp_path / "hf"))
    assert out["architecture"] == ("Qwen3ForCausalLM" if cfg.qk_norm else "LlamaForCausalLM")
    hf, tensors = hfc.read_hf_dir(str(tmp_path / "hf"))
    assert ("lm_head.weight" in tensors) == (not cfg.tie_embeddings)
    assert hfc.model_fields(hf) == {k: getattr(cfg, k) for k in hfc.model_fields(hf)}
    back = hfc.load_model(str(tmp_path / "hf"), Llama(cfg, jax.random.PRNGKey(9)))
    for name, a in hfc.model_arrays(model).items():
        np.testing.assert_array_equal(np.asarray(hfc.model_arrays(back)[name]), np.asarray(a), err_msg=name)
    assert sorted(os.listdir(tmp_path)) == ["hf", "run"]  # no temporary folder left behind


def test_sharded_and_bfloat16_checkpoints_are_read(tmp_path):
    import ml_dtypes
    from safetensors.numpy import save_file

    cfg = ModelConfig(**TINY)
    tensors = hfc.to_hf(hfc.model_arrays(_random_model(cfg)), cfg)
    names = sorted(tensors)
    os.makedirs(tmp_path / "hf")
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, part in shards.items():
        save_file({k: tensors[k].astype(ml_dtypes.bfloat16) for k in part}, str(tmp_path / "hf" / file))
    index = {"weight_map": {k: file for file, part in shards.items() for k in part}}
    (tmp_path / "hf" / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "hf" / "config.json").write_text(json.dumps(hfc.hf_config(cfg)))
    _, back = hfc.read_hf_dir(str(tmp_path / "hf"))
    assert sorted(back) == names
    for k in names:
        np.testing.assert_array_equal(back[k].astype(np.float32),
                                      tensors[k].astype(ml_dtypes.bfloat16).astype(np.float32))


def test_export_refuses_a_non_empty_out_and_replaces_it_with_force(tmp_path, capsys):
    _fake_run(tmp_path / "run", _random_model(ModelConfig(**TINY)))
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "old.txt").write_text("x")
    args = ["export", str(tmp_path / "run"), "--format", "hf", "--out", str(tmp_path / "hf")]
    assert cli.main(args) == 2
    assert "not empty; pass --force" in capsys.readouterr().err
    assert cli.main(args + ["--force"]) == 0
    assert sorted(os.listdir(tmp_path / "hf")) == ["config.json", "model.safetensors"]
    assert cli.main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "hf2")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert cli.main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "hf2"), "--step", "7"]) == 2
    assert "no complete checkpoint at step 7 (steps: [3])" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["hf", "run"]


def test_export_carries_the_corpus_tokenizer(tmp_path):
    tokenizers = pytest.importorskip("tokenizers", reason="the bpe extra's tokenizers builds the test tokenizer")
    from ado_jax.data.tokenizer import BPETokenizer, save_tokenizer

    tok = BPETokenizer.train(["hello world, hello there"] * 20, vocab_size=300)
    save_tokenizer(tok, tmp_path / "corpus")
    cfg = ModelConfig(**{**TINY, "vocab_size": tok.vocab_size})
    _fake_run(tmp_path / "run", _random_model(cfg), data={"source": "corpus", "corpus_dir": str(tmp_path / "corpus")})
    assert hfc.export_run(str(tmp_path / "run"), str(tmp_path / "hf"))["tokenizer"] == "tokenizer.json"
    back = tokenizers.Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    assert back.encode("hello world").ids == tok.encode("hello world").tolist()
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["eos_token_id"] == tok.eos_id
    assert json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())["eos_token"] == "<|endoftext|>"


def _write_hf(directory, cfg: ModelConfig, **config_changes) -> None:
    from safetensors.numpy import save_file

    os.makedirs(directory, exist_ok=True)
    save_file(hfc.to_hf(hfc.model_arrays(_random_model(cfg)), cfg), str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({**hfc.hf_config(cfg), **config_changes}))


@pytest.mark.parametrize("change, message", [
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 500.0, "factor": 4.0}}, "rope_scaling"),
    ({"attention_bias": True}, "attention_bias=True is not supported"),
    ({"mlp_bias": True}, "mlp_bias=True is not supported"),
    ({"head_dim": 16}, "head_dim=16 is not hidden_size/num_attention_heads = 32/4"),
    ({"model_type": "mistral"}, "model_type='mistral' is not supported"),
    ({"hidden_size": 64, "head_dim": 16}, "model.d_model=32 but the checkpoint has 64"),
    ({"rms_norm_eps": 1e-5}, "model.norm_eps=1e-06 but the checkpoint has 1e-05"),
    ({"tie_word_embeddings": True}, "--set model.tie_embeddings=true"),
])
def test_bad_checkpoints_are_refused_with_a_reason(tmp_path, change, message):
    cfg = ModelConfig(**{**TINY, "tie_embeddings": False})
    _write_hf(tmp_path / "hf", cfg, **change)
    with pytest.raises(ValueError) as e:
        hfc.load_model(str(tmp_path / "hf"), Llama(cfg, jax.random.PRNGKey(0)))
    assert message in str(e.value)


def test_missing_folder_and_bias_tensors_are_refused(tmp_path):
    from safetensors.numpy import save_file

    cfg = ModelConfig(**TINY)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        hfc.load_model(str(tmp_path / "absent"), Llama(cfg, jax.random.PRNGKey(0)))
    _write_hf(tmp_path / "hf", cfg)
    tensors = hfc.to_hf(hfc.model_arrays(_random_model(cfg)), cfg)
    tensors["model.layers.0.self_attn.q_proj.bias"] = np.zeros(32, np.float32)
    save_file(tensors, str(tmp_path / "hf" / "model.safetensors"))
    with pytest.raises(ValueError, match="bias tensors are not supported"):
        hfc.load_model(str(tmp_path / "hf"), Llama(cfg, jax.random.PRNGKey(0)))


# --- parity with transformers (needs torch and transformers: the `hf` extra) ---

def _torch():
    return pytest.importorskip("torch", reason="parity tests need torch (pip install torch==<version> CPU build)")


def _transformers():
    _torch()
    return pytest.importorskip("transformers", reason="parity tests need transformers (pip install 'ado-jax[hf]')")


def _hf_logits(directory, tokens):
    torch = _torch()
    model = _transformers().AutoModelForCausalLM.from_pretrained(str(directory))  # float32: config.json
    assert model.dtype == torch.float32
    with torch.no_grad():
        return model(torch.tensor(np.asarray(tokens))).logits.numpy()


@pytest.mark.parametrize("case", sorted(CASES))
def test_exported_model_gives_our_logits_in_transformers(tmp_path, case):
    _transformers()
    cfg = ModelConfig(**{**TINY, **CASES[case]})
    model = _random_model(cfg, seed=3)
    _fake_run(tmp_path / "run", model)
    assert cli.main(["export", str(tmp_path / "run"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    tokens = jax.random.randint(jax.random.PRNGKey(4), (2, 24), 0, cfg.vocab_size)
    delta = np.abs(np.asarray(model(tokens)) - _hf_logits(tmp_path / "hf", tokens)).max()
    print(f"{case}: max |dlogits| = {delta:.3g}")
    assert delta <= 1e-4


def test_init_from_starts_a_run_with_the_checkpoints_first_step_loss(tmp_path, capsys):
    """A run with train.init_from: its first step's loss is transformers' loss on the same batch."""
    torch = _torch()  # skips, with the reason, where the hf extra's torch is not installed
    _transformers()
    from ado_jax.config import load_config
    from ado_jax.data import setup as data_setup

    cfg_model = ModelConfig(**{**TINY, "vocab_size": 256, "tie_embeddings": False})
    _write_hf(tmp_path / "hf", cfg_model)
    sets = ["train.progress=false", "data.max_bytes_per_domain=100000", "train.eval_every=0", "train.batch_size=8",
            "train.seq_len=32", "model.d_model=32", "model.d_ff=64", "model.tie_embeddings=false",
            f"train.init_from={tmp_path / 'hf'}"]
    args = ["train", "--config", "tiny", "--steps", "1", "--run-dir", str(tmp_path / "run")]
    flags = [x for s in sets for x in ("--set", s)]
    assert cli.main(args + flags[:-1] + [f"train.init_from={tmp_path / 'absent'}"]) == 2
    assert "absent: no such directory" in capsys.readouterr().err
    assert cli.main(args + flags) == 2  # rope_theta / norm_eps of the tiny preset differ: refused, named
    assert "model.rope_theta=10000.0 but the checkpoint has 500.0" in capsys.readouterr().err
    sets += ["model.rope_theta=500.0", "model.norm_eps=1e-06"]
    flags = [x for s in sets for x in ("--set", s)]
    assert cli.main(args + flags) == 0
    loss = [json.loads(ln) for ln in open(tmp_path / "run" / "metrics.jsonl")][0]["loss"]

    cfg = load_config("tiny", sets)
    loader = data_setup.train_loader(cfg, None)  # the loop's first batch, drawn the loop's way
    mixer = cfg.mixer.build(loader.sizes(), cfg.train.decay_steps, cfg.train.seed)
    _, key_data = jax.random.split(jax.random.PRNGKey(cfg.train.seed))
    weights = mixer.init(len(loader.names)).weights
    batch, _ = loader.stream.next(loader.init_state(key_data, weights), weights)
    logits = torch.tensor(_hf_logits(tmp_path / "hf", batch["inputs"]))
    targets = torch.tensor(np.asarray(batch["targets"], np.int64))
    want = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), targets.reshape(-1)).item()
    with capsys.disabled():
        print(f"first-step loss: ours {loss:.7f}, transformers {want:.7f}, |delta| {abs(loss - want):.3g}")
    assert abs(loss - want) <= 1e-5, (loss, want)
    hfc.export_run(str(tmp_path / "run"), str(tmp_path / "back"), step=1)  # lr warms up from 0: unchanged
    _, a = hfc.read_hf_dir(str(tmp_path / "hf"))
    _, b = hfc.read_hf_dir(str(tmp_path / "back"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # A resume ignores train.init_from (the run's own checkpoint), even when the folder is gone.
    import shutil

    shutil.rmtree(tmp_path / "hf")
    assert cli.main(args[:4] + ["2"] + args[5:] + flags) == 0
    rows = [json.loads(ln) for ln in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
