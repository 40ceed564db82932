"""Named run configurations: nested ``{section: {field: value}}`` overrides of the defaults.

``tiny`` (tests, seconds, built-in data), ``demo`` (CPU, a few minutes, the built corpus with
ADO), ``gpt2-124m``, ``350m`` and ``1b`` (accelerators; bfloat16 compute, full remat).
"""

from __future__ import annotations


def _cpu_model(**kw) -> dict:
    # remat="dots" (keep matmul outputs, recompute the rest) is the fastest policy on CPU: writing
    # and re-reading every activation costs more than recomputing the elementwise ops
    # (benchmarks/remat_bench.py: demo 1.19x the tokens/s of "none", 1.06x "full").
    return {"compute_dtype": "float32", "remat": "dots", **kw}


PRESETS: dict[str, dict] = {
    "tiny": {"model": _cpu_model(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2),
             "train": {"batch_size": 16, "seq_len": 64, "steps": 100, "decay_steps": 100, "lr": 3e-3}},
    "demo": {"data": {"source": "corpus"},
             "model": _cpu_model(vocab_size=0, d_model=192, n_layers=4, n_heads=6, n_kv_heads=2, qk_norm=True),
             "train": {"batch_size": 32, "seq_len": 128, "steps": 200, "decay_steps": 200, "lr": 2e-3,
                       "warmup_steps": 20, "eval_every": 50, "ckpt_every": 50, "log_every": 10},
             "mixer": {"name": "ado", "fit_start": 60, "fit_every": 40, "skip_first": 20, "subsample_every": 2,
                       "history_len": 64}},
    "gpt2-124m": {"model": {"vocab_size": 50304, "d_model": 768, "n_layers": 12, "n_heads": 12, "n_kv_heads": 12,
                            "d_ff": 2048, "max_seq_len": 1024},
                  "train": {"batch_size": 512, "seq_len": 1024, "steps": 60000, "decay_steps": 60000,
                            "lr": 6e-4, "warmup_steps": 2000, "eval_every": 1000, "ckpt_every": 1000, "log_every": 50}},
    "350m": {"model": {"vocab_size": 50304, "d_model": 1024, "n_layers": 24, "n_heads": 16, "n_kv_heads": 16,
                       "max_seq_len": 2048},
             "train": {"batch_size": 512, "seq_len": 2048, "steps": 60000, "decay_steps": 60000, "lr": 3e-4,
                       "warmup_steps": 2000, "eval_every": 1000, "ckpt_every": 1000, "log_every": 50}},
    "1b": {"model": {"vocab_size": 50304, "d_model": 2048, "n_layers": 24, "n_heads": 16, "n_kv_heads": 8,
                     "max_seq_len": 2048, "qk_norm": True},
           "train": {"batch_size": 1024, "seq_len": 2048, "steps": 100000, "decay_steps": 100000, "lr": 3e-4,
                     "warmup_steps": 2000, "eval_every": 1000, "ckpt_every": 1000, "log_every": 50},
           "mesh": {"fsdp": -1, "data": 1}},
}
