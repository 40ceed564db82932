"""What the train step and the training loop read data through: batches, streams and loaders.

A *batch* is a dict of arrays::

    {"inputs":  int32[B, T]   token ids fed to the model,
     "targets": int32[B, T]   next-token ids (loss is taken on every position),
     "domain":  int32[B]      the domain each sequence was drawn from}

A *stream* is an ``equinox.Module`` whose array fields (e.g. an in-memory corpus) are passed
into the jitted step as arguments rather than baked in as constants::

    state = stream.init(key)                       # pytree of fixed-shape arrays
    batch, state = stream.next(state, weights_D)   # jittable; samples with the mixture

The train step (``ado_jax.train.make_train_step``) takes its ``data`` as a stream and calls only
``data.next(state.stream_state, weights_D)`` inside jit. A batch already drawn on the host enters
the step the same way, as ``FixedBatch(batch)``: a one-batch stream that leaves the state as is.

A *loader* (``Loader``) is what the training loop (``ado_jax.loop.run``) drives; the in-step
stream (``ado_jax.data.setup.DeviceLoader``) and the host-side sources
(``ado_jax.data.setup.HostLoader``: memmapped token files, array_record / TFDS) have the same
methods, so the loop does not know which one it runs::

    stream_state = loader.init_state(key, weights_D)           # a fresh run's stream state
    loader.start(train_state.stream_state)                     # after a restore (or a fresh init)
    data = loader.step_input(train_state.mixer_state.weights)  # a stream, for this step
    train_state, metrics = step(train_state, data)             # data.next(...) runs in the step
    saved = loader.state(train_state.stream_state)             # the stream state to checkpoint
    loader.close()

Host-side sources read the current weights from the train state each step; their position is
checkpointed in ``TrainState.stream_state`` too, so a resumed run sees the same batches.
"""

from __future__ import annotations

from typing import Any, Protocol

import equinox as eqx
import jax
import numpy as np

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


class FixedBatch(eqx.Module):
    """A batch drawn outside the step, given to the step as a stream: ``next`` returns it.

    Attributes:
      batch: ``{"inputs": int32[B, T], "targets": int32[B, T], "domain": int32[B]}`` (optionally
        ``"mask"``), numpy or global jax arrays; traced as arguments of the jitted step.
    """

    batch: Batch

    def next(self, state: Any, weights_D: Array) -> tuple[Batch, Any]:
        """``(batch, state)``: the fixed batch, and the stream state (any pytree) unchanged."""
        return self.batch, state


class Loader(Protocol):
    """The training data as the loop drives it, whether sampled in the step or on the host.

    Attributes:
      names: the ``D`` domain names, in the order of every ``[D]`` array.
    """

    names: tuple[str, ...]

    def sizes(self) -> np.ndarray:
        """``[D]`` tokens per domain (for the natural mixture)."""

    def init_state(self, key: Array, weights_D: Array) -> Any:
        """A fresh run's stream state (a pytree of arrays for ``TrainState.stream_state``), from the
        data PRNG key and the initial mixture ``weights_D: [D]``."""

    def start(self, stream_state: Any) -> None:
        """Starts (or resumes) at the position in ``stream_state`` (fresh or restored)."""

    def step_input(self, weights_D: Array) -> Any:
        """What the train step receives as ``data`` for the next step: a stream whose pure
        ``next(stream_state, weights_D) -> (batch, stream_state)`` runs inside the step.
        ``weights_D: [D]`` is the train state's current mixture."""

    def state(self, stream_state: Any) -> Any:
        """The stream state to checkpoint, given the train state's ``stream_state``."""

    def close(self) -> None:
        """Releases what ``start`` acquired (threads, files)."""
