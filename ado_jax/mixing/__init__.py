"""Optax-like data-mixture policies: ``Mixer(init, update, metrics)`` over pytree state.

Each mixer module also declares its configuration dataclass (``AdoConfig``, ``AioliConfig``,
...) with a ``build(...)`` returning the ``Mixer``, registered by name (``registry``); the
registration order (fixed mixers first) is the order ``mixer_names()`` lists them in.
"""

from ado_jax.mixing.base import DomainStats, Mixer, check_weights, normalize
from ado_jax.mixing.registry import MixerConfig, config_class, mixer_names, register
from ado_jax.mixing.basic import BalancedConfig, NaturalConfig, StaticConfig, WeightsState, balanced, natural, static
from ado_jax.mixing.combinators import ema, floor_probability, schedule, warmup, with_floor
from ado_jax.mixing.ado import AdoConfig, AdoState, ado, fitted_values, set_fit
from ado_jax.mixing.aioli import AioliConfig, AioliState, aioli, normalize_a, smoothed_onehots, wants_heldout
from ado_jax.mixing.doremi import DoReMiConfig, DoReMiState, doremi
from ado_jax.mixing.odm import ODMConfig, ODMState, exploration_rate, odm
from ado_jax.mixing.skill_it import SkillItConfig, SkillItState, skill_it, skills_graph
from ado_jax.mixing.doge import DoGEConfig, DoGEState, doge
from ado_jax.mixing.grid_search import GridResult, dirichlet_points, grid_search, simplex_grid
from ado_jax.mixing.scaling_law import FitBounds, FitInfo, PowerLaw, fit_power_law

__all__ = ["DomainStats", "Mixer", "check_weights", "normalize", "MixerConfig", "config_class", "mixer_names",
           "register", "BalancedConfig", "NaturalConfig", "StaticConfig", "WeightsState", "balanced", "natural",
           "static", "ema", "floor_probability", "schedule", "warmup", "with_floor", "AdoConfig", "AdoState", "ado",
           "fitted_values", "set_fit", "AioliConfig", "AioliState", "aioli", "normalize_a", "smoothed_onehots",
           "wants_heldout", "DoReMiConfig", "DoReMiState", "doremi", "ODMConfig", "ODMState", "exploration_rate",
           "odm", "SkillItConfig", "SkillItState", "skill_it", "skills_graph", "DoGEConfig", "DoGEState", "doge",
           "GridResult", "dirichlet_points",
           "grid_search", "simplex_grid", "FitBounds", "FitInfo", "PowerLaw", "fit_power_law"]
