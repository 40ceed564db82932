"""TensorBoard and W&B (offline) sinks: every scalar of metrics.jsonl, per-domain ones included,
read back from the event files and the offline W&B run directory."""

import json
import struct
import time

import pytest

from ado_jax import loop
from ado_jax.config import load_config
from ado_jax.metric_sinks import LogConfig, Tee, flatten

BASE = ["train.batch_size=16", "train.seq_len=32", "data.max_bytes_per_domain=60000", "train.steps=2",
        "train.progress=false", "train.eval_every=2", "train.eval_batches=1", "train.ckpt_every=100"]


def _expected(run_dir) -> dict:
    """{(step, tag): value} of every scalar in metrics.jsonl."""
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        step, scalars = flatten(json.loads(line))
        out.update({(step, k): v for k, v in scalars.items()})
    return out


def _read_events(folder) -> dict:
    """{(step, tag): value} from TensorBoard event files (TFRecord framing, tensorboardX protos)."""
    from tensorboardX.proto import event_pb2

    out = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                out[(event.step, v.tag)] = v.simple_value
    return out


def _wandb_records(path):
    """The protobuf payloads of a .wandb file: a 7-byte header, then LevelDB-log framing (32 KiB
    blocks; per chunk crc32 [4], length [2], type [1]: 1 full, 2 first, 3 middle, 4 last)."""
    data, pos, out, pending = path.read_bytes(), 7, [], b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding at the end of a block
            pos += left
            continue
        if pos + 7 + n > len(data):  # a chunk W&B's service process is still writing
            break
        pending += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            out.append(pending)
            pending = b""
    return out


def test_flatten_names_domains_and_matrices():
    rec = {"step": 3, "loss": 2.5, "weights": {"code": 0.25, "legal": 0.75}, "A": {"code": {"legal": 0.5}},
           "note": "text", "nan": float("nan")}
    assert flatten(rec) == (3, {"loss": 2.5, "weights/code": 0.25, "weights/legal": 0.75, "A/code/legal": 0.5})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One short run logging to every sink whose extra is installed."""
    import importlib.util

    path = tmp_path_factory.mktemp("run")
    sinks = ["log.tensorboard=true"] if importlib.util.find_spec("tensorboardX") else []
    if importlib.util.find_spec("wandb"):
        sinks += ["log.wandb_project=ado-test", "log.wandb_mode=offline"]
    if not sinks:
        pytest.skip("neither the tensorboard nor the wandb extra is installed")
    loop.run(load_config("tiny", [*BASE, *sinks]), str(path))
    return path


def test_tensorboard_event_files_hold_every_scalar(run_dir):
    pytest.importorskip("tensorboardX", reason="the tensorboard extra (tensorboardX) is not installed")
    tmp_path = run_dir
    want = _expected(tmp_path)
    got = _read_events(tmp_path / "tensorboard")
    assert any(tag.startswith("weights/") for _, tag in want) and any(tag.startswith("eval_loss/") for _, tag in want)
    assert set(got) == set(want)
    assert all(got[k] == pytest.approx(v, rel=1e-6) for k, v in want.items())


def test_wandb_offline_run_dir(run_dir):
    pytest.importorskip("wandb", reason="the wandb extra is not installed")
    from wandb.proto import wandb_internal_pb2

    tmp_path = run_dir
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    (log_file,) = run.glob("run-*.wandb")
    assert log_file.name == f"run-{(tmp_path / 'wandb_id').read_text()}.wandb"
    # W&B's service process writes the file after run.finish() returns: wait for its last record.
    def record_types():
        if log_file.stat().st_size < 7:
            return set()
        out = set()
        for data in _wandb_records(log_file):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(data)
            out.add(rec.WhichOneof("record_type"))
        return out

    deadline = time.time() + 60
    while time.time() < deadline and "exit" not in record_types():
        time.sleep(0.2)
    assert "exit" in record_types(), "W&B wrote no exit record within 60 s"
    got = {}
    for data in _wandb_records(log_file):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        if rec.WhichOneof("record_type") == "history":
            items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in rec.history.item}
            got.update({(items["_step"], k): v for k, v in items.items() if not k.startswith("_")})
    want = _expected(tmp_path)
    assert set(got) == set(want)
    assert all(got[k] == pytest.approx(v, rel=1e-6) for k, v in want.items())


def test_bad_wandb_mode_and_disabled_sinks(tmp_path):
    pytest.importorskip("wandb", reason="the wandb extra is not installed")

    class Log:
        enabled, written = True, []

        def write(self, records):
            self.written += records

    cfg = load_config("tiny", ["log.wandb_project=p", "log.wandb_mode=later"])
    with pytest.raises(ValueError, match=r"log.wandb_mode='later': expected offline \| online \| disabled"):
        Tee(Log(), cfg, tmp_path)
    Log.enabled = False  # not process 0: no sink is opened, metrics.jsonl still written
    tee = Tee(Log(), load_config("tiny", ["log.tensorboard=true"]), tmp_path)
    tee.write([{"step": 1, "loss": 1.0}])
    assert tee.sinks == [] and Log.written == [{"step": 1, "loss": 1.0}] and LogConfig().wandb_mode == "offline"
