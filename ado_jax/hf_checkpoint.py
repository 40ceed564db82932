"""Hugging Face Llama checkpoints in and out (``ado-jax export --format hf``, ``train.init_from``).

Our Llama and transformers' ``LlamaForCausalLM`` compute the same function: both rotate the
(first half, second half) of each head ("rotate_half", so q/k weights need no permutation), both
RMS-normalize in float32 and then scale by the weight, the MLP is ``down(silu(gate(x)) * up(x))``,
the attention scale is ``1/sqrt(E)`` and logits are not scaled. Only the matrices' layout differs:
ours are ``[in, out]`` and stacked over layers (``blocks.wq: [L, D, H*E]``), HF's ``nn.Linear``
weights are ``[out, in]`` per layer (``model.layers.{l}.self_attn.q_proj.weight: [H*E, D]``).
A model with ``qk_norm`` is exported as ``Qwen3ForCausalLM``: Qwen3 RMS-normalizes each head's
query and key (weights ``[E]``, eps ``rms_norm_eps``) after the projection and before the
rotary embedding, exactly as ``Block`` does, and is otherwise a Llama.

Files are read and written with ``safetensors.numpy`` (no torch); bfloat16 tensors, which numpy
lacks, are read through ``ml_dtypes`` (installed with JAX). Exports are float32. Both ends may be
``gs://`` folders: an export is staged locally and uploaded with ``config.json`` last.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile

import numpy as np
from etils import epath

from ado_jax import storage
from ado_jax.models.llama import ModelConfig

# our Block field -> (name under ``model.layers.{l}.``, transposed: ours [in, out], HF [out, in])
BLOCK_MAP = {"attn_norm": ("input_layernorm.weight", False), "wq": ("self_attn.q_proj.weight", True),
             "wk": ("self_attn.k_proj.weight", True), "wv": ("self_attn.v_proj.weight", True),
             "wo": ("self_attn.o_proj.weight", True), "q_norm": ("self_attn.q_norm.weight", False),
             "k_norm": ("self_attn.k_norm.weight", False), "mlp_norm": ("post_attention_layernorm.weight", False),
             "w_gate": ("mlp.gate_proj.weight", True), "w_up": ("mlp.up_proj.weight", True),
             "w_down": ("mlp.down_proj.weight", True)}
QK_NORM = ("q_norm", "k_norm")
ARCH = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}  # model_type -> architecture


def hf_config(cfg: ModelConfig, eos_id: int | None = None, bos_id: int | None = None) -> dict:
    """The ``config.json`` of ``cfg``'s model: Llama, or Qwen3 when ``cfg.qk_norm``. Holds both the
    legacy ``rope_theta`` (transformers 4.x) and ``rope_parameters`` (5.x)."""
    model_type = "qwen3" if cfg.qk_norm else "llama"
    out = {"architectures": [ARCH[model_type]], "model_type": model_type, "vocab_size": cfg.vocab_size,
           "hidden_size": cfg.d_model, "intermediate_size": cfg.ff_dim, "num_hidden_layers": cfg.n_layers,
           "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads,
           "head_dim": cfg.d_model // cfg.n_heads, "hidden_act": "silu", "max_position_embeddings": cfg.max_seq_len,
           "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta, "rope_scaling": None,
           "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
           "tie_word_embeddings": cfg.tie_embeddings, "attention_bias": False, "attention_dropout": 0.0,
           "initializer_range": cfg.init_std, "bos_token_id": bos_id, "eos_token_id": eos_id,
           "torch_dtype": "float32", "dtype": "float32"}
    if cfg.qk_norm:
        out.update(use_sliding_window=False, sliding_window=None)
    else:
        out["mlp_bias"] = False
    return out


def model_fields(hf: dict, where: str = "config.json") -> dict:
    """Our ``ModelConfig`` fields from an HF ``config.json`` dict; raises ValueError naming the first
    setting our Llama cannot reproduce (another architecture, rope scaling, biases, a head_dim
    other than hidden_size / heads, a sliding window, an activation other than silu)."""
    model_type = hf.get("model_type")
    if model_type not in ARCH:
        raise ValueError(f"{where}: model_type={model_type!r} is not supported; expected one of {sorted(ARCH)}")
    rope = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
    if scaling and scaling.get("rope_type", scaling.get("type")) != "default":
        raise ValueError(f"{where}: rope_scaling={scaling} is not supported (only the default rotary embedding)")
    for key in ("attention_bias", "mlp_bias", "use_sliding_window"):
        if hf.get(key):
            raise ValueError(f"{where}: {key}={hf[key]} is not supported (our Llama has no biases, full attention)")
    if rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ValueError(f"{where}: partial_rotary_factor is not supported (rotary over the whole head dim only)")
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{where}: hidden_act={hf['hidden_act']!r} is not supported (SwiGLU with silu only)")
    d, h = hf["hidden_size"], hf["num_attention_heads"]
    if hf.get("head_dim") not in (None, d // h) or d % h:
        raise ValueError(f"{where}: head_dim={hf.get('head_dim')} is not hidden_size/num_attention_heads = {d}/{h}; "
                         "our Llama needs head_dim = d_model / n_heads")
    return {"vocab_size": hf["vocab_size"], "d_model": d, "n_layers": hf["num_hidden_layers"], "n_heads": h,
            "n_kv_heads": hf.get("num_key_value_heads") or h, "d_ff": hf["intermediate_size"],
            "rope_theta": float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
            "norm_eps": float(hf.get("rms_norm_eps", 1e-6)), "tie_embeddings": bool(hf.get("tie_word_embeddings")),
            "qk_norm": model_type == "qwen3"}


def check_model_config(cfg: ModelConfig, hf: dict, where: str) -> None:
    """Raises ValueError listing every field where the run's ``model`` config differs from the HF
    checkpoint's (both values, and the ``--set`` flags that make them agree)."""
    bad = []
    for key, want in model_fields(hf, f"{where}/config.json").items():
        have = cfg.ff_dim if key == "d_ff" else getattr(cfg, key)
        same = math.isclose(have, want, rel_tol=1e-9) if isinstance(want, float) else have == want
        if not same:
            bad.append((key, have, want))
    if bad:
        diffs = "; ".join(f"model.{k}={h!r} but the checkpoint has {w!r}" for k, h, w in bad)
        flags = " ".join(f"--set model.{k}={str(w).lower() if isinstance(w, bool) else w}" for k, _, w in bad)
        raise ValueError(f"train.init_from={where}: the run's model config does not match the checkpoint: "
                         f"{diffs}. The run's model must be the checkpoint's: {flags}")


def to_hf(arrays: dict, cfg: ModelConfig) -> dict:
    """Our named arrays (``model_arrays``: ``embed [V, D]``, ``blocks.wq [L, D, H*E]``, ...,
    ``unembed [D, V]`` when untied) as HF tensors, float32 (``model.layers.{l}.*``, ``lm_head.weight``)."""
    f32 = lambda a: np.ascontiguousarray(np.asarray(a, np.float32))
    out = {"model.embed_tokens.weight": f32(arrays["embed"]), "model.norm.weight": f32(arrays["final_norm"])}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = f32(np.asarray(arrays["unembed"]).T)
    for field, (name, transpose) in BLOCK_MAP.items():
        if field in QK_NORM and not cfg.qk_norm:
            continue
        for layer, a in enumerate(np.asarray(arrays[f"blocks.{field}"])):
            out[f"model.layers.{layer}.{name}"] = f32(a.T if transpose else a)
    return out


def from_hf(tensors: dict, cfg: ModelConfig, where: str = "checkpoint") -> dict:
    """The inverse of ``to_hf``: our named arrays (float32, layers stacked on a leading ``[L]``
    axis) from HF tensors. ``q_norm``/``k_norm`` are ones for a Llama (they are unused then)."""
    unused = [k for k in tensors if k.endswith(".bias")]
    if unused:
        raise ValueError(f"{where}: bias tensors are not supported (our Llama has none): {unused[:3]}")

    def get(name):
        if name not in tensors:
            raise ValueError(f"{where}: tensor {name} is missing")
        return np.asarray(tensors[name], np.float32)

    E = cfg.d_model // cfg.n_heads
    out = {"embed": get("model.embed_tokens.weight"), "final_norm": get("model.norm.weight")}
    if not cfg.tie_embeddings:
        out["unembed"] = get("lm_head.weight").T
    for field, (name, transpose) in BLOCK_MAP.items():
        if field in QK_NORM and not cfg.qk_norm:
            out[f"blocks.{field}"] = np.ones((cfg.n_layers, E), np.float32)
            continue
        layers = [get(f"model.layers.{layer}.{name}") for layer in range(cfg.n_layers)]
        out[f"blocks.{field}"] = np.stack([a.T if transpose else a for a in layers])
    return out


def model_arrays(model) -> dict:
    """``{name: array}`` of a ``Llama``'s weights: ``embed``, ``final_norm``, ``unembed`` (untied),
    ``blocks.<field>`` (stacked ``[L, ...]``)."""
    import jax

    leaves = jax.tree_util.tree_flatten_with_path(model)[0]
    return {jax.tree_util.keystr(p).lstrip("."): x for p, x in leaves}


def with_arrays(model, arrays: dict):
    """``model`` with every weight replaced by ``arrays[name]`` (``model_arrays`` names), each placed
    like the weight it replaces (same dtype and sharding, any number of hosts)."""
    import jax

    def put(path, old):
        new = np.asarray(arrays[jax.tree_util.keystr(path).lstrip(".")])
        if new.shape != old.shape:
            raise ValueError(f"{jax.tree_util.keystr(path)}: checkpoint shape {new.shape}, model {old.shape}")
        new = new.astype(old.dtype)
        return jax.make_array_from_callback(old.shape, old.sharding, lambda idx: new[idx])

    return jax.tree_util.tree_map_with_path(put, model)


def _safetensors():
    try:
        import safetensors.numpy
    except ImportError as e:
        raise ImportError("Hugging Face checkpoints need the `safetensors` package: pip install 'ado-jax[hf]' "
                          "(or pip install safetensors)") from e
    return safetensors.numpy


def _read_file(path: str) -> dict:
    """One ``.safetensors`` file (local, or ``gs://``: read whole into memory) as ``{name:
    np.ndarray}``; bfloat16 through ``ml_dtypes``."""
    remote = storage.is_object_store(path)
    blob = epath.Path(path).read_bytes() if remote else None
    try:
        return _safetensors().load(blob) if remote else _safetensors().load_file(path)
    except TypeError:  # bfloat16: numpy has no such dtype; read the (simple) format directly
        import ml_dtypes

        raw = np.frombuffer(blob, np.uint8) if remote else np.memmap(path, np.uint8, mode="r")
        n = int.from_bytes(bytes(raw[:8]), "little")
        header, data = json.loads(bytes(raw[8:8 + n])), raw[8 + n:]
        kinds = {"BF16": ml_dtypes.bfloat16, "F32": np.float32, "F16": np.float16}
        header.pop("__metadata__", None)
        bad = sorted({v["dtype"] for v in header.values()} - set(kinds))
        if bad:
            raise ValueError(f"{path}: tensors of dtype {bad} are not supported (float32, float16, bfloat16 are)")
        return {k: data[v["data_offsets"][0]:v["data_offsets"][1]].view(kinds[v["dtype"]]).reshape(v["shape"])
                for k, v in header.items()}


def read_config(directory: str) -> dict:
    """The ``config.json`` of an HF checkpoint folder (local or ``gs://``)."""
    path = epath.Path(directory) / "config.json"
    if not path.is_file():
        what = "the folder has no config.json" if epath.Path(directory).is_dir() else "no such directory"
        raise FileNotFoundError(f"train.init_from={directory}: {what} (expected a Hugging Face checkpoint folder, "
                                "local or gs://, with config.json and model.safetensors)")
    return json.loads(path.read_text())


def read_hf_dir(directory: str) -> tuple[dict, dict]:
    """``(config.json dict, {tensor name: np.ndarray})`` of an HF checkpoint folder (local or
    ``gs://``): one ``model.safetensors``, or shards listed in ``model.safetensors.index.json``."""
    hf = read_config(directory)
    folder = epath.Path(directory)
    if (folder / "model.safetensors.index.json").exists():
        files = sorted(set(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"{directory}: no model.safetensors nor model.safetensors.index.json "
                                "(only safetensors checkpoints are read)")
    tensors = {}
    for name in files:
        tensors.update(_read_file(str(folder / name) if storage.is_object_store(directory)
                                  else os.path.join(directory, name)))
    return hf, tensors


def load_model(directory: str, model):
    """``model`` (a ``Llama``, possibly sharded) with the weights of the HF checkpoint in
    ``directory``; its config must match ``model.cfg`` (``check_model_config``)."""
    hf, tensors = read_hf_dir(directory)
    check_model_config(model.cfg, hf, directory)
    return with_arrays(model, from_hf(tensors, model.cfg, directory))


def _tokenizer_files(stored: dict) -> tuple[dict, dict, dict]:
    """For the run's corpus tokenizer: ``({export name: source path}, tokenizer_config.json,
    {"eos_token_id", "bos_token_id"})``; no files for byte tokenizers, which HF has no file for."""
    data = stored.get("data", {})
    path = epath.Path(data.get("corpus_dir") or ".") / "tokenizer.json"
    if data.get("source") != "corpus" or not path.exists():
        return {}, {}, {}
    tok = json.loads(path.read_text())
    ids = {"eos_token_id": tok.get("eos_id"), "bos_token_id": tok.get("bos_id")}
    if tok.get("kind") not in ("bpe", "hf"):
        return {}, {}, ids
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": tok.get("eos_token", "<|endoftext|>"),
              "bos_token": tok.get("bos_token")}
    return {"tokenizer.json": str(path.parent / tok["file"])}, config, ids


def _check_out(out: str, force: bool) -> str:
    if storage.is_object_store(out):
        if storage.list_files(out) and not force:
            raise ValueError(f"{out} exists and is not empty; pass --force to replace it")
        return out.rstrip("/")
    out = os.path.abspath(out)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)) and not force:
        raise ValueError(f"{out} exists and is not empty; pass --force to replace it")
    return out


def write_dir(out: str, fill, force: bool = False) -> None:
    """Runs ``fill(folder)`` on a temporary sibling of ``out`` and renames it to ``out`` once it
    returns: ``out`` is never half-written. A non-empty ``out`` is replaced only with ``force``.

    An object store (``gs://``) has no rename: ``fill`` runs on a local temporary folder whose files
    are then uploaded with ``config.json`` last (``storage.publish_dir``), so a reader, which opens
    ``config.json`` first, never sees a half export."""
    out = _check_out(out, force)
    if storage.is_object_store(out):
        with tempfile.TemporaryDirectory(prefix="ado-jax-export-") as tmp:
            fill(tmp)
            storage.publish_dir(tmp, out, last="config.json")
        return
    parent, name = os.path.split(out)
    os.makedirs(parent, exist_ok=True)
    tmp, old = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent), None
    try:
        fill(tmp)
        for f in os.listdir(tmp):  # mkdtemp's folder is private; the export is an ordinary one
            os.chmod(os.path.join(tmp, f), 0o644)
        os.chmod(tmp, 0o755)
        if os.path.exists(out):
            old = os.path.join(tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent), name)
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException:
        if old and not os.path.exists(out):
            os.replace(old, out)  # put the previous folder back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old:
            shutil.rmtree(os.path.dirname(old), ignore_errors=True)


def export_run(run_dir: str, out: str, step: int | None = None, force: bool = False) -> dict:
    """Writes checkpoint ``step`` (default: the latest) of the run in ``run_dir`` as the HF folder
    ``out``: ``config.json``, ``model.safetensors`` (float32) and, for a corpus with a BPE or HF
    tokenizer, ``tokenizer.json`` + ``tokenizer_config.json``. Returns ``{"out", "step",
    "architecture", "tokenizer"}``."""
    import equinox as eqx
    import jax

    from ado_jax.checkpoint import _key, is_leaf_array, open_run_checkpoint
    from ado_jax.models.llama import Llama

    out = _check_out(out, force)  # before reading anything
    ckpt, step, stored = open_run_checkpoint(run_dir, step)
    try:
        names = {f.name for f in dataclasses.fields(ModelConfig)}
        cfg = ModelConfig(**{k: v for k, v in stored["model"].items() if k in names})
        abstract = eqx.filter(eqx.filter_eval_shape(Llama, cfg, jax.random.PRNGKey(0)), is_leaf_array)
        paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(abstract)[0]]
        target = {"model_" + _key(p): x for p, x in zip(paths, jax.tree.leaves(abstract))}
        restored = ckpt.restore_arrays(target, step)
    finally:
        ckpt.close()
    arrays = {jax.tree_util.keystr(p).lstrip("."): restored["model_" + _key(p)] for p in paths}
    tok_files, tok_config, ids = _tokenizer_files(stored)
    config = hf_config(cfg, ids.get("eos_token_id"), ids.get("bos_token_id"))

    def fill(folder):
        _safetensors().save_file(to_hf(arrays, cfg), os.path.join(folder, "model.safetensors"),
                                 metadata={"format": "pt"})
        for file, text in (("config.json", config), ("tokenizer_config.json", tok_config if tok_files else None)):
            if text is not None:
                with open(os.path.join(folder, file), "w") as f:
                    json.dump(text, f, indent=1)
        for file, source in tok_files.items():
            with open(os.path.join(folder, file), "wb") as f:
                f.write(epath.Path(source).read_bytes())

    write_dir(out, fill, force)
    return {"out": out, "step": step, "architecture": config["architectures"][0],
            "tokenizer": "tokenizer.json" if tok_files else None}
