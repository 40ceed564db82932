"""Device mesh, a rule table mapping parameter names to shardings, and multi-host start-up.

Mesh axes: ``data`` (pure data parallel), ``fsdp`` (data parallel with parameters and
optimizer state sharded), ``tensor`` (heads / ff / vocab split). The batch is split over
``("data", "fsdp")``; the global batch size is global, whatever the number of hosts.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Leaf name -> logical spec of its trailing dims (a leading stacked-layer axis stays unsharded).
# Optimizer moments have the same leaf names as the parameters, so one table serves both.
PARAM_RULES: dict[str, tuple] = {
    "embed": ("tensor", "fsdp"),  # [V, D]
    "unembed": ("fsdp", "tensor"),  # [D, V]
    "wq": ("fsdp", "tensor"), "wk": ("fsdp", "tensor"), "wv": ("fsdp", "tensor"),  # [D, heads*E]
    "wo": ("tensor", "fsdp"),  # [H*E, D]
    "w_gate": ("fsdp", "tensor"), "w_up": ("fsdp", "tensor"),  # [D, F]
    "w_down": ("tensor", "fsdp"),  # [F, D]
}


def maybe_initialize_distributed() -> bool:
    """Calls ``jax.distributed.initialize()`` when the environment describes a multi-process job.

    TPU pod VMs (``TPU_WORKER_HOSTNAMES`` with several hosts, or ``MEGASCALE_*``), SLURM, and the
    explicit ``JAX_COORDINATOR_ADDRESS`` + ``JAX_NUM_PROCESSES`` all count. Returns whether it did.
    ``ADO_JAX_HEARTBEAT_TIMEOUT`` (seconds) sets how long the others wait on a host that died
    before they abort (JAX's default, 100 s, when unset).
    """
    env = os.environ
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
    explicit = "JAX_COORDINATOR_ADDRESS" in env and int(env.get("JAX_NUM_PROCESSES", "1")) > 1
    slurm = int(env.get("SLURM_NTASKS", "1")) > 1
    if not (len(hosts) > 1 or explicit or slurm or "MEGASCALE_COORDINATOR_ADDRESS" in env):
        return False
    if jax.distributed.is_initialized():
        return True
    kw = {}
    if env.get("ADO_JAX_HEARTBEAT_TIMEOUT"):
        kw["heartbeat_timeout_seconds"] = int(env["ADO_JAX_HEARTBEAT_TIMEOUT"])
    if explicit:
        jax.distributed.initialize(env["JAX_COORDINATOR_ADDRESS"], int(env["JAX_NUM_PROCESSES"]),
                                   int(env.get("JAX_PROCESS_ID", "0")), **kw)
    else:
        jax.distributed.initialize(**kw)
    return True


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, int, int]:
    """Resolves ``-1`` entries of (data, fsdp, tensor) so that the product is ``num_devices``."""
    sizes = [mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor]
    fixed = int(np.prod([s for s in sizes if s != -1]))
    n_fill = sizes.count(-1)
    if n_fill > 1:
        raise ValueError(f"mesh {dict(zip(AXES, sizes))}: at most one axis may be -1")
    if n_fill == 1:
        if num_devices % fixed:
            raise ValueError(f"mesh {dict(zip(AXES, sizes))}: {num_devices} devices not divisible by {fixed}")
        sizes[sizes.index(-1)] = num_devices // fixed
    if int(np.prod(sizes)) != num_devices:
        raise ValueError(f"mesh {dict(zip(AXES, sizes))} needs {int(np.prod(sizes))} devices, have {num_devices}")
    return tuple(sizes)


def make_mesh(mesh_cfg, devices=None) -> Mesh:
    """A ``Mesh`` with axes ("data", "fsdp", "tensor") over all (or the given) devices."""
    devices = jax.devices() if devices is None else list(devices)
    shape = mesh_shape(mesh_cfg, len(devices))
    # Auto axes: XLA propagates shardings from the constraints we place (params, batch).
    auto = (jax.sharding.AxisType.Auto,) * len(AXES)
    if len(devices) == len(jax.devices()):
        return jax.make_mesh(shape, AXES, axis_types=auto)
    return Mesh(np.asarray(devices).reshape(shape), AXES, axis_types=auto)


def _leaf_name(path) -> str:
    for entry in reversed(path):
        name = getattr(entry, "name", None) or getattr(entry, "key", None)
        if isinstance(name, str):
            return name
    return ""


def spec_for(path, shape: tuple, mesh: Mesh) -> P:
    """The PartitionSpec of one array leaf, by its name in the rule table.

    A dim is only sharded over an axis that divides it; otherwise that dim stays replicated.
    """
    rule = PARAM_RULES.get(_leaf_name(path))
    if rule is None or len(shape) < len(rule):
        return P()
    lead = (None,) * (len(shape) - len(rule))
    dims = tuple(ax if ax and shape[len(lead) + i] % mesh.shape[ax] == 0 else None for i, ax in enumerate(rule))
    return P(*lead, *dims)


def tree_shardings(tree, mesh: Mesh):
    """Maps every array leaf of ``tree`` (params, optimizer state, whole TrainState) to a NamedSharding."""
    def one(path, leaf):
        if not hasattr(leaf, "shape"):
            return None
        return NamedSharding(mesh, spec_for(path, tuple(leaf.shape), mesh))

    return jax.tree_util.tree_map_with_path(one, tree)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a batch array: leading (batch) axis over ("data", "fsdp"), the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
    """Assembles each host's slice of the batch into global arrays (multi-host safe)."""
    return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v)), np.asarray(v))
            for k, v in local_batch.items()}


def replicated(tree, mesh):
    """``tree``'s arrays (host values, the same on every process) as global arrays replicated over
    ``mesh``: what orbax can save from a multi-process run, where a process-local array is refused.
    Arrays that are global already are returned as they are."""
    spec = NamedSharding(mesh, P())

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return x  # already global (an in-step stream's state, part of the train state)
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, spec, lambda index: host[index])

    return jax.tree.map(one, tree)
