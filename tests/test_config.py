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
    ("train.lr=-1", "train.lr=-1.0: must be a finite number in \\[0, 1\\]"),
    # Non-finite or absurd floats and zero evaluation batches (issue: these passed and ran).
    ("train.lr=inf", "train.lr=inf: must be a finite number"),
    ("train.lr=1e6", "train.lr=1000000.0: must be a finite number in \\[0, 1\\]"),
    ("train.lr=nan", "train.lr=nan: must be a finite number"),
    ("train.b2=nan", "train.b2=nan: must be a finite number in \\[0, 1\\)"),
    ("train.grad_clip=inf", "train.grad_clip=inf: must be a finite number"),
    ("train.weight_decay=1e30", "train.weight_decay=1e\\+30: must be a finite number"),
    ("train.eval_batches=0", "train.eval_batches=0: must be at least 1 when train.eval_every > 0"),
    ("data.heldout_fraction=nan", "data.heldout_fraction=nan: must be in"),
    ("train.lr=fast", "train.lr='fast': expected float"),
    ("model.qk_norm=maybe", "expected a boolean"),
    ("train.batch_size=10", None),
    ("model.n_heads=5", "not divisible by model.n_heads=5"),
    ("train.grad_accum=3", "not divisible by train.grad_accum=3"),
    ("model.remat=some", "model.remat='some'"),
    ("model.attention=flash", "model.attention='flash': expected one of"),
    ("model.attention=xla_blocks", "model.attention='xla_blocks' is inference only"),
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

    from ado_jax.mixing import config_class, mixer_names

    text = describe()
    sections = [(s.name, s.default_factory()) for s in dataclasses.fields(Config)]
    sections += [("mixer", config_class(name)()) for name in mixer_names()]
    for prefix, section in sections:
        for f in dataclasses.fields(section):
            line = next(ln for ln in text.splitlines() if f"{prefix}.{f.name} =" in ln)
            assert len(line.split(":", 1)[1].strip()) > 5, line
    for name in mixer_names():  # each mixer has its own table, headed by its name
        assert f"[mixer.name={name}]" in text


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

    from ado_jax import mixing

    modules = [config, mixing.basic, mixing.ado, mixing.aioli, mixing.doremi, mixing.odm, mixing.skill_it]
    classes = [n for m in modules for n in ast.parse(inspect.getsource(m)).body if isinstance(n, ast.ClassDef)]
    for cls in classes:
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

    cfg = load_config("demo", [f"mixer.name={name}", *extra])
    assert cfg.mixer.name == name
    mixer = cfg.mixer.build([3.0, 1.0, 1.0], total_steps=1000)
    state = mixer.init(3)
    stats = DomainStats.create(jnp.array([6.0, 2.0, 3.0]), jnp.array([2.0, 1.0, 1.0]), 0, jnp.array([3.0, 2, 3]))
    w, _ = mixer.update(stats, state)
    assert np.all(np.asarray(w) >= 0) and float(w.sum()) == pytest.approx(1.0, abs=1e-5)


def test_mixer_config_errors_name_the_field():
    with pytest.raises(ValueError, match="mixer.reference_losses"):
        load_config("tiny", ["mixer.name=doremi"]).mixer.build([1.0, 1.0])
    with pytest.raises(ValueError, match=r"mixer.graph has shape \(3, 3\)"):
        load_config("tiny", ["mixer.name=skill_it", "mixer.graph=[[1,0,0],[0,1,0],[0,0,1]]"]).mixer.build(
            [1.0, 1.0], total_steps=10)


def test_mixer_fields_belong_to_the_chosen_mixer():
    # the demo preset's ADO fields are kept; a field of another mixer is refused, naming its owner
    cfg = load_config("demo", ["mixer.gamma2=0.2"])
    assert cfg.mixer.name == "ado" and cfg.mixer.gamma2 == 0.2 and cfg.mixer.fit_every == 40
    with pytest.raises(ValueError, match=r"mixer.eps is not a field of mixer 'ado'.*aioli"):
        load_config("demo", ["mixer.eps=0.5"])
    # the name is applied first, whatever the order of the overrides
    cfg = load_config("tiny", ["mixer.eta=0.3", "mixer.name=aioli", "mixer.rounds=4"])
    assert (cfg.mixer.name, cfg.mixer.eta, cfg.mixer.rounds) == ("aioli", 0.3, 4)
    # the old flat, prefixed keys say what they became
    with pytest.raises(ValueError, match=r"mixer.aioli_eps was renamed mixer.eps"):
        load_config("tiny", ["mixer.name=aioli", "mixer.aioli_eps=0.5"])
    with pytest.raises(ValueError, match=r"mixer.doremi_eta was renamed mixer.eta"):
        load_config("tiny", ["mixer.doremi_eta=0.5"])


def test_mixer_section_round_trips_through_config_json(tmp_path):
    import json

    cfg = load_config("demo", ["mixer.name=aioli", "mixer.sweeps=2"])
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg.to_dict()))
    assert cfg.to_dict()["mixer"]["name"] == "aioli"
    again = load_config(str(path))
    assert again.mixer == cfg.mixer and again.to_dict() == cfg.to_dict()
