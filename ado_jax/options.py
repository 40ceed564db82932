"""``option(default, help)``: a dataclass field that carries its help text.

Every configuration dataclass (the model's, the mixers', the run's sections) declares its fields
with it, so ``ado-jax train --help`` and ``docs/config.md`` are generated from one place.
"""

from __future__ import annotations

import dataclasses


def option(default, help: str):
    """A dataclass field with ``metadata["help"]`` (list and dict defaults are copied per instance)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})
