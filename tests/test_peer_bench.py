"""benchmarks/peer_bench.py --peer maxtext: where MaxText cannot run (Python < 3.12, or not
installed) its row is skipped with a one-line reason, no traceback and no results file; and the
MaxText config that maxtext_peer derives from our presets has our shapes (no MaxText needed)."""

import sys
from pathlib import Path

import jax
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        import maxtext_peer
        import peer_bench
    finally:
        sys.path.remove(str(BENCH))
    return peer_bench, maxtext_peer


def test_maxtext_row_is_skipped_with_its_reason(bench, tmp_path, capsys):
    peer_bench, maxtext_peer = bench
    reason = maxtext_peer.skip_reason()
    if reason is None:
        pytest.skip("MaxText can run here (the comparison itself is not a unit test)")
    if sys.version_info < (3, 12):
        assert "MaxText needs Python >= 3.12" in reason and "pip install -e '.[peer]'" in reason
    assert "\n" not in reason
    out_file = tmp_path / "peer.json"
    result = peer_bench.main(["--peer", "maxtext", "--out", str(out_file)])
    assert result["rows"] == [{"shape": s, "codebase": "maxtext", "skipped": reason} for s in peer_bench.SHAPES]
    assert result["peers"] == {"maxtext": reason}
    assert not out_file.exists()  # nothing was timed
    out = capsys.readouterr().out
    assert f"maxtext: skipped: {reason}" in out and "Traceback" not in out


@pytest.mark.parametrize("shape,expect", [
    ("demo", dict(base_emb_dim=192, base_num_decoder_layers=4, base_num_query_heads=6, base_num_kv_heads=2,
                  head_dim=32, base_mlp_dim=512, vocab_size=257, max_target_length=128,
                  dtype="float32", weight_dtype="float32", remat_policy="minimal_with_context", scan_layers=True,
                  logits_via_embedding=True, hardware="cpu", attention="dot_product")),
    ("gpt2-124m", dict(base_emb_dim=768, base_num_decoder_layers=12, base_num_query_heads=12, base_num_kv_heads=12,
                       head_dim=64, base_mlp_dim=2048, vocab_size=50304, max_target_length=256,
                       dtype="float32", remat_policy="full")),
])
def test_maxtext_config_has_our_shape(bench, shape, expect):
    peer_bench, maxtext_peer = bench
    from ado_jax.config import load_config

    preset, overrides = peer_bench.SHAPES[shape]
    cfg = load_config(preset, overrides)
    cfg.model.vocab_size = cfg.model.vocab_size or 257  # as peer_bench.ours
    kw = maxtext_peer.config_kwargs(cfg, "cpu", out_dir=".")
    assert {k: kw[k] for k in expect} == expect
    assert kw["per_device_batch_size"] * jax.device_count() == cfg.train.batch_size  # the global batch
    assert kw["learning_rate"] == cfg.train.lr and kw["adam_b2"] == cfg.train.b2
    assert kw["gradient_clipping_threshold"] == cfg.train.grad_clip and kw["skip_jax_distributed_system"]


def test_maxtext_config_refuses_what_it_cannot_match(bench):
    _, maxtext_peer = bench
    from ado_jax.config import load_config

    with pytest.raises(ValueError, match="no MaxText counterpart"):
        maxtext_peer.config_kwargs(load_config("demo", ["model.qk_norm=false", "model.remat=none"]), "cpu", ".")
    with pytest.raises(ValueError, match="QK-norm"):
        maxtext_peer.config_kwargs(load_config("demo", []), "cpu", ".")
    gpu = maxtext_peer.config_kwargs(load_config("gpt2-124m", []), "gpu", ".")
    assert gpu["hardware"] == "gpu" and gpu["dtype"] == "bfloat16" and gpu["attention"] == "cudnn_flash_jax"
