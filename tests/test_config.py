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
    ("mixer.name=adoo", "mixer.name='adoo': expected one of static, natural"),
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


def test_field_names_are_unique_per_section():
    import ast
    import inspect

    from ado_jax import config

    tree = ast.parse(inspect.getsource(config))
    for cls in [n for n in tree.body if isinstance(n, ast.ClassDef)]:
        names = [s.target.id for s in cls.body if isinstance(s, ast.AnnAssign)]
        assert len(names) == len(set(names)), f"{cls.name} defines a field twice: {names}"


@pytest.mark.parametrize("name, extra", [
    ("static", ["mixer.weights=1,2,3"]), ("natural", []), ("balanced", []), ("ado", ["mixer.smoothing=savgol"]),
    ("aioli", ["mixer.variant=diagonal"]), ("doremi", ["mixer.reference_losses=2,2,2"]), ("odm", []),
    ("skill_it", ["mixer.graph=[[1,0,0],[0,1,0],[0,0,1]]"])])
def test_every_mixer_builds_from_config_and_stays_on_the_simplex(name, extra):
    import jax.numpy as jnp
    import numpy as np

    from ado_jax.mixing import DomainStats
    from ado_jax.mixing.from_config import build_mixer

    cfg = load_config("demo", [f"mixer.name={name}", *extra])
    mixer = build_mixer(cfg.mixer, [3.0, 1.0, 1.0], total_steps=1000)
    state = mixer.init(3)
    stats = DomainStats.create(jnp.array([6.0, 2.0, 3.0]), jnp.array([2.0, 1.0, 1.0]), 0, jnp.array([3.0, 2, 3]))
    w, _ = mixer.update(stats, state)
    assert np.all(np.asarray(w) >= 0) and float(w.sum()) == pytest.approx(1.0, abs=1e-5)


def test_mixer_config_errors_name_the_field():
    from ado_jax.mixing.from_config import build_mixer

    with pytest.raises(ValueError, match="mixer.reference_losses"):
        build_mixer(load_config("tiny", ["mixer.name=doremi"]).mixer, [1.0, 1.0])
    with pytest.raises(ValueError, match=r"mixer.graph has shape \(0,\)"):
        build_mixer(load_config("tiny", ["mixer.name=skill_it"]).mixer, [1.0, 1.0], total_steps=10)
