"""The sparse-parity MLP: three linear layers, hidden width 40, ReLU.

App. B.2 of "Lowering Data Diversity can Accelerate Training: Case Studies in Synthetic Tasks":
"A three layer MLP with hidden layers of dimension 40, mapping R^20 -> R^1": we read this as
Linear(d, 40) - ReLU - Linear(40, 40) - ReLU - Linear(40, 1), PyTorch-style uniform init
(Equinox's default). The last layer is ``layers[-1]`` (the readout, for freezing).
"""

from __future__ import annotations

import equinox as eqx
import jax


def parity_mlp(key: jax.Array, in_size: int = 20, width: int = 40, depth: int = 2) -> eqx.nn.MLP:
    """An MLP ``[d] -> []`` with ``depth`` hidden layers of ``width`` units (paper: 2 x 40)."""
    if in_size < 1 or width < 1 or depth < 1:
        raise ValueError(f"in_size, width, depth must be >= 1, got {in_size}, {width}, {depth}")
    return eqx.nn.MLP(in_size, "scalar", width, depth, activation=jax.nn.relu, key=key)
