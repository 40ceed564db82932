"""Interventions on the data (diversity, uniformity, upsampling) and on optimization
(gradient bias, PCGrad, SAM, frozen readout, per-layer learning rates).

Sources: diversity and optimization interventions from "Lowering Data Diversity can Accelerate
Training: Case Studies in Synthetic Tasks"; uniformity from "Data Uniformity Improves Training
Efficiency and More, with a Convergence Framework Beyond the NTK Regime" (arXiv:2506.24120); SAM
and upsampling from "Data Distribution as a Lever for Guiding Optimizers Toward Superior
Generalization in LLMs" (Gangavarapu et al.).
"""

from ado_jax.synthetic.interventions import diversity, optimization, uniformity, upsample

__all__ = ["diversity", "optimization", "uniformity", "upsample"]
