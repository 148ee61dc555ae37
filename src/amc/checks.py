"""Checks of a settings dataclass's values against its declared field types, for the search's and training's
configs alike: wrong types, non-finite numbers and values under their minimum, each one line naming the option."""

from __future__ import annotations

import math
from dataclasses import fields

from amc.errors import ConfigError

KINDS = {"int": "an integer", "float": "a finite number", "bool": "true or false", "str": "a string",
         "dict": "a dict"}


def check_fields(config, minimums: dict, positive: tuple[str, ...] = ()) -> None:
    """Refuse a setting of the wrong type (`episodes=2.5`, a list for a dict), a non-finite number, a number
    below its minimum or not above 0 (`positive`), naming the option."""
    for f in fields(config):
        value, kind = getattr(config, f.name), str(f.type).split(" |")[0]
        if value is None and "None" in str(f.type):
            continue
        option = "--" + f.name.replace("_", "-")
        if not fits(value, kind):
            raise ConfigError(f"{option} must be {KINDS[kind]}, got {value!r}")
        if f.name in minimums and value < minimums[f.name]:
            raise ConfigError(f"{option} must be at least {minimums[f.name]}, got {value}")
        if f.name in positive and value <= 0:
            raise ConfigError(f"{option} must be above 0, got {value}")


def fits(value, kind: str) -> bool:
    """Whether `value` is of the declared `kind` ("int", "float", ...; a bool is not a number here)."""
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return not (kind in KINDS and not isinstance(value, {"bool": bool, "str": str, "dict": dict}[kind]))


__all__ = ["KINDS", "check_fields", "fits"]
