"""Typed configs: presets, overrides, and clear errors for bad values."""

import pytest

from ado_jax.config import PRESETS, describe, load_config, validate


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_load_and_validate(name):
    cfg = load_config(name)
    assert cfg.train.batch_size > 0


def test_overrides_are_typed():
    cfg = load_config("tiny", ["train.lr=1e-3", "model.qk_norm=true", "data.domains=python,docs", "mesh.fsdp=2"])
    assert cfg.train.lr == 1e-3 and cfg.model.qk_norm is True
    assert cfg.data.domains == ["python", "docs"] and cfg.mesh.fsdp == 2


@pytest.mark.parametrize("override, match", [
    ("train.lrr=1", "unknown config key 'train.lrr'"),
    ("bogus.lr=1", "unknown config section 'bogus'"),
    ("train.lr=-1", "train.lr=-1.0: must be non-negative"),
    ("train.lr=fast", "train.lr='fast': expected float"),
    ("model.qk_norm=maybe", "expected a boolean"),
    ("train.batch_size=10", None),
    ("model.n_heads=5", "not divisible by model.n_heads=5"),
    ("train.grad_accum=3", "not divisible by train.grad_accum=3"),
    ("model.remat=some", "model.remat='some'"),
    ("train.seq_len=5000", "exceeds model.max_seq_len"),
    ("train.steps", "expected key=value"),
])
def test_bad_values_name_the_field(override, match):
    if match is None:  # valid on its own; the batch axis check needs the device count
        cfg = load_config("tiny", [override])
        with pytest.raises(ValueError, match="micro-batch 10 .* not divisible by the batch axes data\\*fsdp=8"):
            validate(cfg, num_devices=8)
        return
    with pytest.raises(ValueError, match=match):
        load_config("tiny", [override])


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match="unknown config 'huge'.*tiny"):
        load_config("huge")


def test_describe_documents_every_field():
    import dataclasses

    from ado_jax.config import Config

    text = describe()
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(section.default_factory()):
            line = next(ln for ln in text.splitlines() if f"{section.name}.{f.name} =" in ln)
            assert len(line.split(":", 1)[1].strip()) > 5, line


def test_json_config_file(tmp_path):
    import json

    path = tmp_path / "c.json"
    path.write_text(json.dumps({"train": {"steps": 7}, "model": {"d_model": 32, "n_heads": 2, "n_kv_heads": 2}}))
    cfg = load_config(str(path))
    assert cfg.train.steps == 7 and cfg.model.d_model == 32
