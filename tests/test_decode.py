"""Cached decoding (``ado_jax.models.decode``) gives the logits of the whole-sequence forward."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ado_jax.config import load_config
from ado_jax.models import decode
from ado_jax.models.llama import Llama


@pytest.mark.parametrize("qk_norm,kv_heads", [(False, 4), (True, 2)])
def test_prefill_and_each_decode_step_match_the_full_forward_on_ragged_rows(qk_norm, kv_heads):
    cfg = load_config("tiny", [f"model.qk_norm={str(qk_norm).lower()}", f"model.n_kv_heads={kv_heads}",
                               "model.compute_dtype=float32", "model.vocab_size=64"]).model
    model = Llama(cfg, jax.random.PRNGKey(0))
    S, steps = 24, 6
    lengths = np.array([3, 11, 1, 16])
    rng = np.random.default_rng(0)
    seq_BS = rng.integers(0, 64, (4, S)).astype(np.int32)  # each row's context, then its fed tokens
    full = eqx.filter_jit(lambda m, x: m(x))
    prefill, step = eqx.filter_jit(decode.prefill), eqx.filter_jit(decode.decode_step)
    # Padding past each row's context is garbage: the cache must not read it.
    padded = np.where(np.arange(S)[None] < lengths[:, None], seq_BS, rng.integers(0, 64, (4, S))).astype(np.int32)
    logits_BV, cache = prefill(model, jnp.asarray(padded), jnp.asarray(lengths))
    want = np.asarray(full(model, jnp.asarray(seq_BS)))  # causal: position t sees only seq_BS[:, :t+1]
    rows = np.arange(4)
    np.testing.assert_allclose(np.asarray(logits_BV), want[rows, lengths - 1], atol=1e-4)
    for k in range(steps):
        pos = lengths + k
        logits_BV, cache = step(model, cache, jnp.asarray(seq_BS[rows, pos]), jnp.asarray(pos))
        np.testing.assert_allclose(np.asarray(logits_BV), want[rows, pos], atol=1e-4)
    assert cache.k_LBSKE.shape == (cfg.n_layers, 4, S, kv_heads, cfg.d_model // cfg.n_heads)
