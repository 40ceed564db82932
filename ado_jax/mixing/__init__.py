"""Optax-like data-mixture policies: ``Mixer(init, update)`` over pytree state."""

from ado_jax.mixing.base import DomainStats, Mixer, check_weights, normalize
from ado_jax.mixing.basic import WeightsState, balanced, natural, static
from ado_jax.mixing.combinators import ema, floor_probability, schedule, warmup, with_floor
from ado_jax.mixing.ado import AdoState, ado, fitted_values, set_fit

__all__ = ["DomainStats", "Mixer", "check_weights", "normalize"]
__all__ += ["WeightsState", "balanced", "natural", "static", "ema", "floor_probability", "schedule",
            "warmup", "with_floor", "AdoState", "ado", "fitted_values", "set_fit"]
from ado_jax.mixing.aioli import AioliState, aioli, normalize_a, smoothed_onehots, wants_heldout
from ado_jax.mixing.doremi import DoReMiState, doremi
from ado_jax.mixing.odm import ODMState, exploration_rate, odm
from ado_jax.mixing.skill_it import SkillItState, skill_it, skills_graph
from ado_jax.mixing.grid_search import GridResult, dirichlet_points, grid_search, simplex_grid

__all__ += ["AioliState", "aioli", "normalize_a", "smoothed_onehots", "wants_heldout", "DoReMiState",
            "doremi", "ODMState", "exploration_rate", "odm", "SkillItState", "skill_it", "skills_graph",
            "GridResult", "dirichlet_points", "grid_search", "simplex_grid"]
