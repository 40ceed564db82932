"""The optimizer (``ado_jax.optimizer``): weight decay reaches the matrices and nothing else."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ado_jax import optimizer
from ado_jax.config import load_config
from ado_jax.models.llama import Llama


def test_weight_decay_moves_the_matrices_and_leaves_the_norm_scales():
    cfg = load_config("tiny", ["train.warmup_steps=1", "train.weight_decay=0.1"])
    cfg.model.vocab_size = 64
    params = eqx.filter(Llama(cfg.model, jax.random.PRNGKey(0)), eqx.is_array)
    opt = optimizer.make_optimizer(cfg.train)
    zero, state = jax.tree.map(jnp.zeros_like, params), opt.init(params)
    update = jax.jit(opt.update)
    moved = []
    for _ in range(2):  # with a zero gradient only decay moves a weight, once warmup gives an lr
        updates, state = update(zero, state, params)
        moved.append(jax.tree.leaves(jax.tree.map(lambda u: bool(np.any(np.asarray(u))), updates)))
    mask = jax.tree.leaves(optimizer.decay_mask(params))
    assert moved[0] == [False] * len(mask)  # lr(0) = 0
    assert moved[1] == mask and any(mask) and not all(mask)
    names = {getattr(path[-1], "name", "") for path, _ in jax.tree_util.tree_leaves_with_path(params)}
    assert names - optimizer.DECAYED  # some leaves (the norms' scales) are not decayed
