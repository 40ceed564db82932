"""MaxText as a peer of ``benchmarks/peer_bench.py``: its own decoder and its own train step.

MaxText (AI-Hypercomputer/maxtext, PyPI ``maxtext``) needs Python >= 3.12; ``pip install -e
'.[peer]'`` on 3.12 installs it and the modules it imports (its wheel declares them only in its
``cuda12``/``tpu`` extras, which pin a full TPU/GPU stack). On 3.11 ``skip_reason()`` says why the
MaxText row is skipped. The model is built by MaxText's own config system (``pyconfig`` over its
``base.yml`` with the overrides of ``config_kwargs``), its state by ``train_utils.setup_train_loop``
and its step by ``train_utils.jit_train_and_eval_step`` around ``train.train_step`` — the calls
MaxText's ``train_loop`` makes — and fed one device-resident batch from its
``make_synthetic_batch`` (random tokens; no input pipeline in the timed loop).

Matched (ours -> MaxText key): d_model -> base_emb_dim; n_layers -> base_num_decoder_layers;
n_heads -> base_num_query_heads; n_kv_heads -> base_num_kv_heads; d_model/n_heads -> head_dim;
the SwiGLU width -> base_mlp_dim (mlp_activations silu x linear); vocab_size; seq_len ->
max_target_length; global batch -> per_device_batch_size x devices; compute_dtype -> dtype;
param_dtype -> weight_dtype; tie_embeddings -> logits_via_embedding; norm_eps ->
normalization_layer_epsilon; rope_theta -> rope_max_timescale (half-split rotation, as ours);
layers scanned (scan_layers); remat full -> full, dots -> minimal_with_context, dots_no_batch ->
minimal (see below); AdamW lr, b1, b2, weight decay, global-norm clipping, cosine to
lr * min_lr_ratio; decoder_block llama2 (pre-norm RMSNorm, GQA, no QK-norm: the shapes drop ours).

Not matched:
  * remat: MaxText saves *named* tensors; ``minimal_with_context`` keeps the q/k/v/out projections,
    the MLP matmuls and the attention output, while our ``dots`` (``checkpoint_dots``) also keeps
    the QK^T scores. MaxText has no un-rematerialized scan (``none`` still wraps each layer in
    ``jax.checkpoint``), so our ``none`` has no counterpart (``build`` raises).
  * attention: on CPU MaxText's ``dot_product`` (its own einsums, with a causal *and* segment-id
    mask, since its batches carry segment ids for packing) against ours
    ``jax.nn.dot_product_attention`` (XLA); on GPU both use cuDNN's fused kernel
    (``cudnn_flash_jax``) in bfloat16; on TPU MaxText's ``autoselected`` (splash) against ours XLA.
  * initialisation: MaxText embeds with std 1.0 and divides tied logits by sqrt(d_model)
    (normalize_embedding_logits), so its loss at init is far above ln(vocab) (8.3 on ``demo``);
    ours starts at ~ln(vocab). Numerics only, no timing effect.
  * optimizer details: weight decay on every parameter (ours: matrices only); warmup as a fraction
    of the steps; ours also skips non-finite steps. MaxText's step computes more metrics (raw and
    clipped gradient norms, MoE/MTP/z-loss zeros).
  * data: ours samples its batch inside the step from in-memory domains and runs the mixer and
    tracker; MaxText gets the same fixed batch each step.
"""

from __future__ import annotations

import platform
import sys
import tempfile

import jax

# Our remat policy -> MaxText's remat_policy (module docstring: what each keeps).
REMAT = {"full": "full", "dots": "minimal_with_context", "dots_no_batch": "minimal"}


def skip_reason() -> str | None:
    """None when MaxText can run here, else one line saying why its row is skipped."""
    if sys.version_info < (3, 12):
        return (f"MaxText needs Python >= 3.12 (this is {platform.python_version()}); "
                "on 3.12: pip install -e '.[peer]'")
    try:
        # What the step imports, and what train_utils.setup_train_loop imports when it runs.
        from maxtext.input_pipeline import input_pipeline_interface  # noqa: F401
        from maxtext.trainers.pre_train import train  # noqa: F401
    except Exception as e:  # ImportError, or an incompatible jax/flax raising at import
        return f"maxtext is not importable ({type(e).__name__}: {e}); pip install -e '.[peer]' on Python >= 3.12"
    if jax.device_count() > 1:  # MaxText's global batch is per-device batch x every visible device
        return (f"ours is timed on one device and MaxText would shard over all {jax.device_count()}: expose one "
                "(CUDA_VISIBLE_DEVICES=0, or no --xla_force_host_platform_device_count)")
    return None


def version() -> str:
    from importlib.metadata import version as v

    return f"maxtext {v('maxtext')}"


def config_kwargs(cfg, backend: str | None = None, out_dir: str | None = None) -> dict:
    """MaxText config overrides (of its base.yml) for the shape and numerics of our ``cfg``."""
    m, t = cfg.model, cfg.train
    backend = backend or jax.default_backend()
    if m.remat not in REMAT:
        raise ValueError(f"model.remat={m.remat!r} has no MaxText counterpart (MaxText always remats a scanned "
                         f"layer); use one of {sorted(REMAT)}")
    if m.qk_norm:
        raise ValueError("model.qk_norm=true: MaxText's llama2 block has no QK-norm; set model.qk_norm=false")
    hardware = {"gpu": "gpu", "tpu": "tpu"}.get(backend, "cpu")
    fused = hardware == "gpu" and m.compute_dtype in ("bfloat16", "float16")
    attention = {"cpu": "dot_product", "gpu": "cudnn_flash_jax" if fused else "dot_product",
                 "tpu": "autoselected"}[hardware]
    return dict(
        # One process, no checkpoints, logs or monitoring; synthetic data (its pipeline is not timed).
        hardware=hardware, skip_jax_distributed_system=True, run_name="peer_bench",
        base_output_directory=out_dir or tempfile.mkdtemp(prefix="maxtext_peer_"), enable_checkpointing=False,
        enable_tensorboard=False, enable_goodput_recording=False, monitor_goodput=False, dataset_type="synthetic",
        packing=False, enable_dropout=False, init_weights_seed=0,
        # The model.
        decoder_block="llama2", base_emb_dim=m.d_model, base_num_query_heads=m.n_heads,
        base_num_kv_heads=m.n_kv_heads, head_dim=m.d_model // m.n_heads, base_mlp_dim=m.ff_dim,
        mlp_activations=["silu", "linear"], base_num_decoder_layers=m.n_layers, vocab_size=m.vocab_size,
        logits_via_embedding=m.tie_embeddings, normalization_layer_epsilon=m.norm_eps,
        rope_max_timescale=int(m.rope_theta), dtype=m.compute_dtype, weight_dtype=m.param_dtype,
        scan_layers=True, remat_policy=REMAT[m.remat], attention=attention,
        # The batch and the optimizer.
        max_target_length=t.seq_len, per_device_batch_size=t.batch_size / jax.device_count(),
        opt_type="adamw", learning_rate=t.lr, adam_b1=t.b1, adam_b2=t.b2, adam_weight_decay=t.weight_decay,
        gradient_clipping_threshold=t.grad_clip, learning_rate_final_fraction=t.min_lr_ratio, steps=t.steps,
        warmup_steps_fraction=min(t.warmup_steps / max(t.steps, 1), 1.0))


def build(cfg, backend: str | None = None):
    """MaxText's jitted train step at ``cfg``'s shape: a ``run(n) -> loss`` closure (n steps, the
    last step's loss), as ``peer_bench`` times it."""
    import os

    import maxtext
    from flax import nnx
    from flax.core.spmd import logical_axis_rules
    from maxtext.configs import pyconfig
    from maxtext.trainers.pre_train import train as mt_train
    from maxtext.utils import maxtext_utils, sharding, train_utils

    base_yml = os.path.join(os.path.dirname(maxtext.__file__), "configs", "base.yml")
    config = pyconfig.initialize(["peer_bench", base_yml], **config_kwargs(cfg, backend))
    # As MaxText's train_loop: model, optimizer and state, split into graph and state, then jitted.
    (_, _, state_shardings, _, mesh, *_rest, state) = train_utils.setup_train_loop(config, None)
    graphdef, state = nnx.split(state)
    params_shardings, state_shardings = sharding.maybe_update_params_sharding_with_opt(config, state_shardings)
    step, _ = train_utils.jit_train_and_eval_step(config, graphdef, mesh, state, state_shardings,
                                                  mt_train.train_step, params_shardings=params_shardings)
    rules = config.logical_axis_rules
    with jax.set_mesh(mesh), logical_axis_rules(rules):
        shaped = maxtext_utils.get_shaped_batch(config, batch_sharding=sharding.get_input_data_sharding(config, mesh))
        batch = mt_train.make_synthetic_batch(config, shaped)
    box = {"state": state}

    def run(n: int) -> float:
        with jax.set_mesh(mesh), logical_axis_rules(rules):
            for _ in range(n):
                box["state"], metrics = step(box["state"], batch)
        return float(metrics["scalar"]["learning/loss"])

    run.remat = config.remat_policy
    return run
