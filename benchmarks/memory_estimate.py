"""The memory estimate (``ado_jax.memory``) beside XLA's own analysis of the compiled step.

For a few shapes and every remat policy it compiles the train step's core (loss, gradient, AdamW
update, one device) and prints ``argument + temp`` bytes from ``compiled.memory_analysis()`` next
to ``ado_jax.memory.estimate``; writes ``benchmarks/results/memory_estimate.json``. Runs in about a
minute on 2 CPU cores (compilation only; nothing is executed).

    python benchmarks/memory_estimate.py
"""

from __future__ import annotations

import os
import sys

import equinox as eqx
import jax
import jax.numpy as jnp

from ado_jax import memory
from ado_jax.optimizer import make_optimizer
from ado_jax.config import load_config
from ado_jax.models.llama import Llama, sequence_losses

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_io import save_json  # noqa: E402

SHAPES = {"d256_L4_T256": ["model.d_model=256", "model.n_layers=4", "model.n_heads=4", "train.batch_size=16",
                           "train.seq_len=256", "model.vocab_size=512"],
          "demo_shape": ["model.d_model=192", "model.n_layers=4", "model.n_heads=6", "model.n_kv_heads=2",
                         "train.batch_size=32", "train.seq_len=128", "model.vocab_size=4096"]}


def xla_bytes(cfg) -> int:
    """``argument + temp`` bytes of the compiled step (params and AdamW state donated)."""
    opt = make_optimizer(cfg.train)
    params, static = eqx.partition(Llama(cfg.model, jax.random.PRNGKey(0)), eqx.is_array)

    def step(params, opt_state, tokens_BT):
        loss_fn = lambda p: jnp.mean(sequence_losses(eqx.combine(p, static)(tokens_BT), tokens_BT))
        grads = jax.grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return jax.tree.map(jnp.add, params, updates), opt_state

    tokens = jax.ShapeDtypeStruct((cfg.train.batch_size, cfg.train.seq_len), jnp.int32)
    abstract = lambda t: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), t)
    analysis = jax.jit(step, donate_argnums=(0, 1)).lower(
        abstract(params), abstract(opt.init(params)), tokens).compile().memory_analysis()
    return analysis.argument_size_in_bytes + analysis.temp_size_in_bytes


def main() -> None:
    rows = []
    for shape, sets in SHAPES.items():
        for remat in ("none", "dots", "full"):
            cfg = load_config("tiny", [*sets, f"model.remat={remat}"])
            est, xla = memory.estimate(cfg, (1, 1, 1))["total"], xla_bytes(cfg)
            rows.append({"shape": shape, "remat": remat, "estimate_mib": est / 2**20, "xla_mib": xla / 2**20,
                         "ratio": est / xla})
            print(f"{shape:14s} remat={remat:5s} estimate {est / 2**20:8.1f} MiB   XLA {xla / 2**20:8.1f} MiB   "
                  f"ratio {est / xla:.2f}")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "memory_estimate.json")
    save_json(out, {"backend": jax.default_backend(), "rows": rows})


if __name__ == "__main__":
    main()
