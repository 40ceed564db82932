"""Interventions on the data (diversity, uniformity, upsampling) and on optimization
(gradient bias, PCGrad, SAM, frozen readout, per-layer learning rates) — paper 000, 001, 003."""

from ado_jax.synthetic.interventions import diversity, optimization, uniformity, upsample

__all__ = ["diversity", "optimization", "uniformity", "upsample"]
