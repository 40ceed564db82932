"""Fixed mixtures: ``static(weights)``, ``natural(sizes)`` and ``balanced()``.

They ignore what training observes, so their state is just the weights::

    mixer = natural([3e9, 1e9, 5e8])         # proportional to domain sizes
    state = mixer.init(3)
    weights_D, state = mixer.update(stats, state)   # unchanged weights
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ado_jax import storage
from ado_jax.mixing.registry import MixerConfig, option, register
from ado_jax.mixing.base import DomainStats, Mixer, check_num_domains, check_weights


class WeightsState(NamedTuple):
    """State of a fixed mixer. ``weights: [D] float32`` on the simplex."""

    weights: jax.Array


def _fixed(w_D: np.ndarray, name: str) -> Mixer:
    def init(num_domains) -> WeightsState:
        d = check_num_domains(num_domains)
        if d != w_D.size:
            raise ValueError(f"{name} has {w_D.size} entries but init got num_domains={d}")
        return WeightsState(jnp.asarray(w_D, jnp.float32))

    def update(stats: DomainStats, state: WeightsState):
        del stats
        return state.weights, state

    return Mixer(init, update)


def static(weights) -> Mixer:
    """A constant mixture.

    Args:
      weights: [D] non-negative, finite, not all zero; normalized to sum to 1.

    Raises:
      ValueError: naming the bad value (negative, non-finite, all zero, wrong shape), here or
        at ``init`` when ``num_domains != D``.
    """
    return _fixed(check_weights(weights, name="static weights"), "static weights")


def natural(sizes) -> Mixer:
    """The natural mixture: each domain sampled in proportion to its size.

    Args:
      sizes: [D] domain sizes (tokens, documents, ...), non-negative and finite; e.g. the
        estimated token counts the ADO paper uses as its prior (App. A.2).
    """
    return _fixed(check_weights(sizes, name="natural sizes"), "natural sizes")


def balanced() -> Mixer:
    """The balanced (stratified) mixture: uniform over the ``D`` domains given to ``init``."""

    def init(num_domains) -> WeightsState:
        d = check_num_domains(num_domains)
        return WeightsState(jnp.full((d,), 1.0 / d, jnp.float32))

    def update(stats: DomainStats, state: WeightsState):
        del stats
        return state.weights, state

    return Mixer(init, update)


def read_weights_file(path, num_domains: int | None = None) -> np.ndarray:
    """[D] float32 mixture read from a weights JSON (local or gs://), normalized.

    The file is ``{"weights": [D floats], ...}`` (what ``ado-jax fit-mixture`` and
    ``offline_fits.write_weights`` write; a ``"domains"`` list, if present, must have D names) or
    a bare ``[D floats]`` list. ValueError naming the path when it is missing, not JSON, or has
    the wrong number of entries for ``num_domains``.
    """
    obj = storage.read_json(path, f"mixer.weights_from={path}")
    weights = obj.get("weights") if isinstance(obj, dict) else obj
    if not isinstance(weights, list):
        raise ValueError(f"mixer.weights_from={path}: expected {{\"weights\": [...]}} or a list of weights")
    names = obj.get("domains") if isinstance(obj, dict) else None
    if names is not None and len(names) != len(weights):
        raise ValueError(f"mixer.weights_from={path}: {len(weights)} weights but {len(names)} domain names")
    if num_domains is not None and len(weights) != num_domains:
        named = f" (for domains {names})" if names else ""
        raise ValueError(f"mixer.weights_from={path}: {len(weights)} weights{named} but the run has {num_domains} "
                         "domains")
    return check_weights(weights, name=f"mixer.weights_from={path}")


def weights_for_domains(source: str, domains: tuple[str, ...]) -> np.ndarray:
    """[D] mixture for ``domains`` from ``source``: a run directory (local or gs://; the last
    record with a ``*_avg_weights`` metric) or a weights JSON (``read_weights_file``; its
    ``"domains"``, when present, matched by name, else taken in order)."""
    import json

    from ado_jax.mixing.run_inputs import per_domain, read_records

    field = "mixer.weights_from"
    records = read_records(source)
    if records is not None:  # a run directory
        for rec in reversed(records):
            key = next((k for k in rec if k.endswith("_avg_weights")), None)
            if key:
                return check_weights(per_domain(rec[key], domains, field, source), name=f"{field}={source}")
        raise ValueError(f"{field}={source}: that run logged no *_avg_weights (a doge or doremi run has them)")
    try:
        obj = json.loads(storage.read_text(source) or "null")
    except json.JSONDecodeError:
        obj = None  # read_weights_file says what is wrong
    if isinstance(obj, dict) and obj.get("domains"):
        named = read_weights_file(source)
        return check_weights(per_domain(dict(zip(obj["domains"], named.tolist())), domains, field, source),
                             name=f"{field}={source}")
    return read_weights_file(source, len(domains))


@register("static")
@dataclasses.dataclass
class StaticConfig(MixerConfig):
    """A constant mixture (``static``)."""

    weights: list[float] = option([], "one weight per domain (normalized to sum to 1)")
    weights_from: str = option("", "instead of weights: a weights JSON (local or gs://), e.g. written by "
                                   "ado-jax fit-mixture, matched by domain name when it names them; or a run "
                                   "directory: its last logged *_avg_weights (DoGE's, DoReMi's final mixture)")

    def resolve(self, domains, run_dir: str) -> "StaticConfig":
        """With ``weights`` read from ``weights_from`` for the run's ``domains`` (by name where the
        source names them: a run's metrics, a weights file with a ``"domains"`` list)."""
        del run_dir
        if not self.weights_from:
            return self
        if self.weights:
            raise ValueError("give mixer.weights or mixer.weights_from, not both")
        return dataclasses.replace(self, weights=weights_for_domains(self.weights_from, tuple(domains)).tolist(),
                                   weights_from="")

    def build(self, sizes_D, total_steps: int | None = None, seed: int = 0) -> Mixer:
        """``static(weights)`` (or the weights read from ``weights_from``); ValueError unless there is
        one weight per domain of ``sizes_D: [D]``."""
        del total_steps, seed
        if self.weights_from:
            if self.weights:
                raise ValueError("give mixer.weights or mixer.weights_from, not both")
            return static(read_weights_file(self.weights_from, len(sizes_D)))
        if len(self.weights) != len(sizes_D):
            raise ValueError(f"mixer.weights={self.weights} must have one entry per domain ({len(sizes_D)})")
        return static(self.weights)


@register("natural")
@dataclasses.dataclass
class NaturalConfig(MixerConfig):
    """Each domain in proportion to its size in tokens (``natural``)."""

    def build(self, sizes_D, total_steps: int | None = None, seed: int = 0) -> Mixer:
        """``natural(sizes_D)`` over the domain sizes ``sizes_D: [D]``."""
        del total_steps, seed
        return natural(sizes_D)


@register("balanced")
@dataclasses.dataclass
class BalancedConfig(MixerConfig):
    """Uniform over the domains (``balanced``, stratified sampling)."""

    def build(self, sizes_D, total_steps: int | None = None, seed: int = 0) -> Mixer:
        """``balanced()``; ``sizes_D`` is not used."""
        del sizes_D, total_steps, seed
        return balanced()
