"""Mixer configurations by name: each mixer module declares a dataclass and registers it.

As Levanter does for its config choices, a run's ``mixer`` section is *one* registered
dataclass, chosen by its name; its fields are that mixer's hyperparameters, and ``build``
turns it into a ``Mixer``::

    @register("balanced")
    @dataclasses.dataclass
    class BalancedConfig(MixerConfig):
        def build(self, sizes_D, total_steps=None, seed=0) -> Mixer:
            return balanced()

    spec = config_class("ado")(gamma2=0.2)        # from --set mixer.name=ado mixer.gamma2=0.2
    mixer = spec.build(sizes_D, total_steps=10_000)
    metrics = mixer.metrics(mixer.init(D))        # what the train loop logs for this mixer

Every field carries a ``help`` string (``option``): ``ado-jax train --help`` and
``docs/config.md`` list each mixer's fields from it. The hyperparameters are checked once, by
the mixer's constructor, when ``build`` runs; ``build`` names the mixer in the error.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ado_jax.mixing.base import Mixer
from ado_jax.options import option

__all__ = ["MixerConfig", "config_class", "mixer_names", "option", "prior_weights", "register"]
_REGISTRY: dict[str, type] = {}


@dataclasses.dataclass
class MixerConfig:
    """The fields every mixer has; subclasses add their hyperparameters and ``build``."""

    name: ClassVar[str] = ""
    heldout_batches: int = option(1, "held-out batches per domain evaluated in-step when the mixer asks "
                                     "(aioli; doremi with use_heldout)")

    def build(self, sizes_D, total_steps: int | None = None, seed: int = 0) -> Mixer:
        """Returns the ``Mixer`` for domains of sizes ``sizes_D: [D]`` (tokens per domain).

        ``total_steps``: the run's planned length (``train.decay_steps``), for round-based
        mixers; ``seed``: for mixers with randomness of their own (Aioli's interleaving order).
        """
        raise NotImplementedError(f"mixer {self.name!r} has no build()")

    def describe(self, sizes_D, total_steps: int | None = None) -> str:
        """A line for the run's start-up output about what ``build`` chose on its own (e.g. Aioli
        sized to the run's steps), or "" when there is nothing to say."""
        del sizes_D, total_steps
        return ""

    def resolve(self, domains: tuple[str, ...], run_dir: str) -> "MixerConfig":
        """This config with its inputs from other runs read in (DoReMi's ``reference_run``,
        Skill-It's ``graph_from``), for the trained ``domains`` of the run at ``run_dir``; the
        run's ``config.json`` keeps the fields as given. The base class has none: ``self``."""
        del domains, run_dir
        return self

    def prerequisite_runs(self, cfg, run_dir: str) -> list[tuple[str, object]]:
        """``[(run_dir, Config)]``: runs ``ado-jax train`` trains before this one, in order
        (DoReMi's reference model when none is given). Each is an ordinary run directory, so
        it resumes, and one that is complete is not trained again. The base class: none."""
        del cfg, run_dir
        return []

    def to_dict(self) -> dict:
        """``{"name": ..., field: value, ...}``: what ``config.json`` stores for the mixer."""
        return {"name": self.name, **dataclasses.asdict(self)}


def register(name: str):
    """Class decorator: registers a ``MixerConfig`` subclass under ``name`` (``mixer.name``)."""

    def deco(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"mixer name {name!r} is registered twice ({_REGISTRY[name].__name__}, {cls.__name__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def mixer_names() -> tuple[str, ...]:
    """The registered mixer names, in registration order."""
    return tuple(_REGISTRY)


def config_class(name: str) -> type:
    """The ``MixerConfig`` subclass registered as ``name``; ValueError naming the choices."""
    if name not in _REGISTRY:
        raise ValueError(f"mixer.name={name!r}: expected one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def prior_weights(prior: str, sizes_D) -> np.ndarray | None:
    """The prior a config's ``prior`` field names: ``natural`` (``sizes_D / sum``) or ``uniform`` (None)."""
    if prior not in ("natural", "uniform"):
        raise ValueError(f"mixer.prior={prior!r}: expected natural | uniform")
    if prior == "uniform":
        return None
    sizes_D = np.asarray(sizes_D, np.float64)
    return sizes_D / sizes_D.sum()
