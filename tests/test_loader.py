"""One data interface: the in-step stream and the host loader drive the same step and loop."""

import inspect
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ado_jax import cli, loop, sharding, train
from ado_jax.optimizer import make_optimizer
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


@pytest.mark.slow  # 16-26 s in a quiet default run; CI runs it (pytest -m slow)
def test_host_batch_and_in_step_stream_take_the_same_step():
    cfg = load_config("tiny", BASE)
    mesh = sharding.make_mesh(MeshConfig(data=-1))
    stream, mixer = data_setup.train_stream(cfg), static([1, 2, 3, 4])
    opt = make_optimizer(cfg.train)
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


def test_groups_merge_domains_and_eval_only_domains_are_never_trained(tmp_path, capsys):
    sets = ["data.max_bytes_per_domain=60000", "data.eval_only_domains=legal",
            'data.groups=["src=python+c_headers"]']
    cfg = load_config("tiny", [*BASE, *sets])
    full = data_setup._source_arrays(cfg, "train", 34)
    train_arrays, eval_only = data_setup._domain_arrays(cfg, "train", 34)
    assert list(eval_only) == ["legal"]
    np.testing.assert_array_equal(eval_only["legal"], full["legal"])
    assert list(train_arrays) == ["src", "docs"]  # the group at its first member's place; legal left out
    np.testing.assert_array_equal(train_arrays["src"], np.concatenate([full["python"], full["c_headers"]]))
    evaluation = data_setup.heldout_stream(cfg, with_eval_only=True)
    assert evaluation.names == ("src", "docs", "legal")
    # a short run: the mixer and the batches see 2 domains; the evaluation scores 3, and the OOD aggregate
    run = ["train.steps=2", "train.progress=false", "train.eval_every=2", "train.eval_batches=1"]
    loop.run(load_config("tiny", [*BASE, *sets, *run, "mixer.name=natural"]), str(tmp_path))
    recs = [json.loads(ln) for ln in open(tmp_path / "metrics.jsonl")]
    assert list(recs[0]["weights"]) == ["src", "docs"]
    ev = [r for r in recs if "eval_loss" in r][-1]
    assert list(ev["eval_loss"]) == ["src", "docs", "legal"]
    assert ev["eval_loss_ood"] == ev["eval_loss"]["legal"]
    assert ev["eval_loss_mean"] == (ev["eval_loss"]["src"] + ev["eval_loss"]["docs"]) / 2
    sizes = np.array([train_arrays["src"].size, train_arrays["docs"].size], np.float64)
    natural = sizes / sizes.sum()
    assert np.isclose(ev["eval_loss_natural"], natural @ [ev["eval_loss"]["src"], ev["eval_loss"]["docs"]])


def test_bad_groups_and_eval_only_domains_name_the_value():
    import pytest

    for sets, match in [(['data.groups=["src=python+nope"]'], r"names 'nope', which is not a trained domain"),
                        (['data.groups=["bad"]'], r"expected name=domain\+domain"),
                        (['data.groups=["a=python","b=python"]'], r"'python' is in two groups"),
                        (["data.eval_only_domains=nope"], r"eval_only_domains: unknown domain\(s\) \['nope'\]"),
                        (["data.eval_only_domains=docs", "data.domains=docs,python"], "both in data.domains")]:
        with pytest.raises(ValueError, match=match):
            cfg = load_config("tiny", [*BASE, "data.max_bytes_per_domain=60000", *sets])
            data_setup._domain_arrays(cfg, "train", 34)
