"""What a data stream is: pure ``init`` / ``next`` over a pytree state, with domain ids.

A *batch* is a dict of arrays::

    {"inputs":  int32[B, T]   token ids fed to the model,
     "targets": int32[B, T]   next-token ids (loss is taken on every position),
     "domain":  int32[B]      the domain each sequence was drawn from}

A *stream* is an ``equinox.Module`` whose array fields (e.g. an in-memory corpus) are passed
into the jitted step as arguments rather than baked in as constants::

    state = stream.init(key)                       # pytree of fixed-shape arrays
    batch, state = stream.next(state, weights_D)   # jittable; samples with the mixture

Host-side sources (memmapped token files, TFDS) follow the same shape but run in Python and
read the current weights from the train state each step; their state is also checkpointed.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax

Array = jax.Array
Batch = dict[str, Array]


class Stream(Protocol):
    """A pure, jittable data stream sampling domains with given mixture weights."""

    num_domains: int
    batch_size: int
    seq_len: int

    def init(self, key: Array) -> Any:
        """Returns the stream's initial state (pytree) from a PRNG key."""

    def next(self, state: Any, weights_D: Array) -> tuple[Batch, Any]:
        """Draws one global batch of ``batch_size`` sequences; domains ~ Categorical(weights_D)."""
