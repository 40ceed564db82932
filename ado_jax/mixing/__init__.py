"""Optax-like data-mixture policies: ``Mixer(init, update)`` over pytree state."""

from ado_jax.mixing.base import DomainStats, Mixer, check_weights, normalize

__all__ = ["DomainStats", "Mixer", "check_weights", "normalize"]
