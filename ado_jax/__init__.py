"""ado_jax: pretraining language models in JAX/Equinox with online data-mixture optimization."""

__version__ = "0.1.0"
