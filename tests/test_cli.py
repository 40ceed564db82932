"""The ado-jax command: sub-commands, documented flags, clear errors, the synthetic-task hook."""

import json

import pytest

from ado_jax import cli


def test_train_help_lists_every_config_section(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for section in ("[model]", "[train]", "[mesh]", "[data]", "[mixer]", "--task", "--mixer"):
        assert section in out


def test_bad_config_is_one_clear_line(capsys, tmp_path):
    assert cli.main(["train", "--config", "tiny", "--set", "train.lr=-1", "--run-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: train.lr=-1.0: must be a finite number in [0, 1]"
    assert not (tmp_path / "checkpoints").exists()


def test_unknown_mixer_names_the_choices(capsys, tmp_path):
    args = ["train", "--config", "tiny", "--mixer", "magic", "--steps", "1", "--run-dir", str(tmp_path / "r"),
            "--set", "data.max_bytes_per_domain=100000"]
    assert cli.main(args) == 2
    assert "mixer.name='magic': expected one of" in capsys.readouterr().err


def test_synthetic_task_hook_trains_and_writes_curves(tmp_path):
    out = tmp_path / "parity.json"
    assert cli.main(["train", "--task", "sparse_parity", "--steps", "20", "--seeds", "2", "--eval-every", "10",
                     "--out", str(out)]) == 0
    curves = json.loads(out.read_text())
    assert len(curves["test_acc"][0]) == 2 and curves["args"]["task"] == "sparse_parity"


@pytest.mark.slow  # ~20-35 s on 2 loaded cores; CI runs it (pytest -m slow)
def test_relative_run_dir_trains_checkpoints_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", "--config", "tiny", "--run-dir", "runs/rel", "--set", "train.progress=false",
            "--set", "data.max_bytes_per_domain=100000", "--set", "train.ckpt_every=2"]
    assert cli.main([*args, "--steps", "2"]) == 0
    assert cli.main([*args, "--steps", "3"]) == 0
    assert sorted(p.name for p in (tmp_path / "runs/rel/checkpoints").iterdir() if p.name.isdigit()) == ["2", "3"]
