"""Synthetic tasks as pure, jittable streams, with reference estimators.

The three tasks of "Lowering Data Diversity can Accelerate Training: Case Studies in Synthetic
Tasks": ``ICLRegression`` (in-context linear regression), ``SparseParity``, ``Facts`` — each has
``init(key)``, ``next(state, weights_D=None)`` over its task-like domains; ``estimators`` has
ridge / discrete-Bayes (eq. 6) predictors and the accuracies; ``tasks.make_task`` bundles a
stream with its model, loss and eval for ``ado_jax.synthetic.train``.
"""

from ado_jax.synthetic import estimators
from ado_jax.synthetic.facts import Facts
from ado_jax.synthetic.icl_regression import ICLRegression
from ado_jax.synthetic.sparse_parity import SparseParity, parity_target

__all__ = ["Facts", "ICLRegression", "SparseParity", "estimators", "parity_target"]
