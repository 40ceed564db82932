"""One train step on 8 fake devices, for several mesh shapes, matches the single-device step."""

import equinox as eqx
import jax
import numpy as np
import pytest

from ado_jax import sharding, train
from ado_jax.optimizer import make_optimizer
from ado_jax.config import MeshConfig, load_config
from ado_jax.data.setup import train_stream

CFG = load_config("tiny", ["train.batch_size=16", "train.seq_len=32", "data.max_bytes_per_domain=100000"])


def _one_step(mesh):
    stream = train_stream(CFG)
    mixer = CFG.mixer.build(stream.sizes())
    opt = make_optimizer(CFG.train)
    k_model, k_data = jax.random.split(jax.random.PRNGKey(0))
    state = train.create_state(CFG.model, opt, mixer, stream.init(k_data), stream.num_domains, k_model, mesh)
    shardings = train.state_shardings(state, mesh)
    step = train.make_train_step(CFG.train, opt, mixer, mesh, shardings, stream.num_domains)
    state, metrics = step(state, stream)
    state, metrics = step(state, stream)  # second step: Adam moments are non-zero, so a real update
    return state, jax.device_get(metrics)


@pytest.fixture(scope="module")
def reference():
    mesh = sharding.make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
    return _one_step(mesh)


@pytest.mark.parametrize("data, fsdp, tensor", [(8, 1, 1), (2, 4, 1), (1, 4, 2), (2, 2, 2)])
def test_sharded_step_matches_single_device(reference, data, fsdp, tensor):
    assert jax.device_count() == 8
    mesh = sharding.make_mesh(MeshConfig(data=data, fsdp=fsdp, tensor=tensor))
    state, metrics = _one_step(mesh)
    ref_state, ref_metrics = reference
    np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-5)
    np.testing.assert_allclose(metrics["domain_loss"], ref_metrics["domain_loss"], rtol=1e-5)
    ref_params = jax.tree.leaves(eqx.filter(ref_state.model, eqx.is_array))
    for got, want in zip(jax.tree.leaves(eqx.filter(state.model, eqx.is_array)), ref_params):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-4, atol=2e-6)
    if fsdp > 1:  # parameters really are sharded, not replicated
        wq = state.model.blocks.wq
        assert wq.sharding.spec[1] == "fsdp"
        assert wq.addressable_shards[0].data.shape[1] == wq.shape[1] // fsdp


def test_rule_table_falls_back_to_replicated_when_not_divisible():
    mesh = sharding.make_mesh(MeshConfig(data=1, fsdp=8, tensor=1))
    path = (jax.tree_util.GetAttrKey("wq"),)
    P = jax.sharding.PartitionSpec
    assert sharding.spec_for(path, (2, 64, 64), mesh) == P(None, "fsdp", "tensor")
    assert sharding.spec_for(path, (2, 12, 64), mesh) == P(None, None, "tensor")  # 12 % 8 != 0: replicated
    assert sharding.spec_for((jax.tree_util.GetAttrKey("attn_norm"),), (2, 64), mesh) == P()


def test_mesh_shape_errors_name_the_mesh():
    with pytest.raises(ValueError, match="needs 6 devices, have 8"):
        sharding.mesh_shape(MeshConfig(data=3, fsdp=2, tensor=1), 8)
    with pytest.raises(ValueError, match="at most one axis may be -1"):
        sharding.mesh_shape(MeshConfig(data=-1, fsdp=-1, tensor=1), 8)
    assert sharding.mesh_shape(MeshConfig(data=-1, fsdp=2, tensor=2), 8) == (2, 2, 2)
