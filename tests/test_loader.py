"""One data interface: the in-step stream and the host loader drive the same step and loop."""

import inspect
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ado_jax import cli, loop, sharding, train
from ado_jax.config import MeshConfig, load_config
from ado_jax.data import setup as data_setup
from ado_jax.data.base import FixedBatch, Loader
from ado_jax.mixing.basic import static

BASE = ["train.batch_size=16", "train.seq_len=32", "data.max_bytes_per_domain=100000"]
METHODS = ("sizes", "init_state", "start", "step_input", "state", "close")


def _copy(tree):
    return jax.tree.map(lambda x: jnp.array(x, copy=True) if eqx.is_array(x) else x, tree)


def test_device_and_host_loaders_have_the_loader_methods():
    cfg = load_config("tiny", BASE)
    mesh = sharding.make_mesh(MeshConfig(data=-1))
    for kind, cls in (("device", data_setup.DeviceLoader), ("host", data_setup.HostLoader)):
        loader = data_setup.train_loader(load_config("tiny", BASE + [f"data.loader={kind}"]), mesh)
        assert type(loader) is cls
        for name in METHODS:
            want = list(inspect.signature(getattr(Loader, name)).parameters)[1:]
            assert list(inspect.signature(getattr(loader, name)).parameters) == want, (kind, name)
        assert loader.names == data_setup.train_stream(cfg).names
        np.testing.assert_array_equal(loader.sizes(), data_setup.train_stream(cfg).sizes())


def test_host_batch_and_in_step_stream_take_the_same_step():
    cfg = load_config("tiny", BASE)
    mesh = sharding.make_mesh(MeshConfig(data=-1))
    stream, mixer = data_setup.train_stream(cfg), static([1, 2, 3, 4])
    opt = train.make_optimizer(cfg.train)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    state = train.create_state(cfg.model, opt, mixer, stream.init(k2), stream.num_domains, k1, mesh)
    step = train.make_train_step(cfg.train, opt, mixer, mesh, train.state_shardings(state, mesh), stream.num_domains)
    key_before = np.asarray(state.stream_state.key)  # uint32[2]
    batch, advanced = stream.next(state.stream_state, state.mixer_state.weights)
    s_stream, m_stream = step(_copy(state), stream)
    s_host, m_host = step(_copy(state), FixedBatch(batch))
    for k in ("loss", "domain_loss", "domain_count", "grad_norm"):
        np.testing.assert_allclose(np.asarray(m_host[k]), np.asarray(m_stream[k]), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(eqx.filter(s_host.model, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(s_stream.model, eqx.is_array))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    # The in-step stream advances its key; a fixed batch leaves the stream state as it was.
    np.testing.assert_array_equal(np.asarray(s_stream.stream_state.key), np.asarray(advanced.key))
    np.testing.assert_array_equal(np.asarray(s_host.stream_state.key), key_before)


def test_run_leaves_its_config_alone_and_eval_reads_a_host_loader_run(tmp_path, capsys):
    sets = ["data.max_bytes_per_domain=100000", "data.loader=host", "model.vocab_size=0"]
    cfg = load_config("tiny", sets + ["train.steps=2", "train.progress=false", "train.eval_every=0"])
    before = cfg.to_dict()
    loop.run(cfg, str(tmp_path))
    assert cfg.to_dict() == before  # model.vocab_size is still 0: the run resolved a copy
    assert json.loads((tmp_path / "config.json").read_text())["model"]["vocab_size"] == 256
    capsys.readouterr()
    flags = [a for s in sets for a in ("--set", s)]
    assert cli.main(["eval", "--config", "tiny", "--run-dir", str(tmp_path), "--batches", "1", *flags]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["step"] == 2 and np.isfinite(printed["eval_loss_mean"])
