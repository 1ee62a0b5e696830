"""Search spaces: YAML files mapping dotted config keys to distributions.

    train.lr: {loguniform: [1.0e-4, 3.0e-3]}
    loss.mel: {uniform: [0.5, 2.0]}
    train.warmup_steps: {int: [50, 500]}
    lora.rank: {choice: [4, 8, 16, 32, 64]}

Every key must exist in the config and every value a distribution can produce must be a valid
value of that key: both are checked before any trial starts, with errors that name the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import yaml

from voxray import uri
from voxray.config import Config, ConfigError, leaf_keys, with_values

KINDS = ("loguniform", "uniform", "int", "choice")


@dataclass(frozen=True)
class Dimension:
    key: str                      # dotted config key, e.g. "train.lr"
    kind: str                     # one of KINDS
    values: tuple                 # (low, high) or the choices

    def extremes(self) -> list[Any]:
        """Values that bound what this dimension can sample (all of them for a choice)."""
        return list(self.values)


def _dimension(key: str, spec: Any) -> Dimension:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"search space {key!r}: expected one of {{{', '.join(KINDS)}: ...}}, got {spec!r}")
    (kind, values), = spec.items()
    if kind not in KINDS:
        raise ConfigError(f"search space {key!r}: unknown distribution {kind!r} (choose from {', '.join(KINDS)})")
    if kind == "choice":
        if not isinstance(values, list) or not values:
            raise ConfigError(f"search space {key!r}: choice needs a non-empty list, got {values!r}")
        return Dimension(key, kind, tuple(values))
    if not (isinstance(values, list) and len(values) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        raise ConfigError(f"search space {key!r}: {kind} needs [low, high] numbers, got {values!r}")
    low, high = values
    if not low < high:
        raise ConfigError(f"search space {key!r}: {kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"search space {key!r}: loguniform needs low > 0, got {low}")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise ConfigError(f"search space {key!r}: int needs integer bounds, got [{low}, {high}]")
    return Dimension(key, kind, (int(low), int(high)) if kind == "int" else (float(low), float(high)))


def parse_space(data: Any, base: Config) -> list[Dimension]:
    """A mapping {dotted key: {distribution: values}} -> dimensions, checked against ``base``."""
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"a search space must be a non-empty mapping of config keys, got {data!r}")
    known = leaf_keys(type(base))
    dimensions = []
    for key, spec in data.items():
        if key not in known:
            raise ConfigError(f"search space: unknown config key {key!r} (of the {base.family} family)")
        dimension = _dimension(key, spec)
        for value in dimension.extremes():
            try:
                apply(base, {key: value})
            except ConfigError as exc:
                raise ConfigError(f"search space {key!r}: the value {value!r} is not valid: {exc}") from None
        dimensions.append(dimension)
    return dimensions


def load_space(path: str, base: Config) -> list[Dimension]:
    try:
        data = yaml.safe_load(uri.read_text(path))
    except FileNotFoundError:
        raise ConfigError(f"search space file {path!r} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"search space file {path!r} is not valid YAML: {exc}") from exc
    return parse_space(data, base)


def default_space(base: Config) -> list[Dimension]:
    """The family's default space, as its recipe declares it (``search_space``)."""
    from voxray.train.recipes import recipe

    return parse_space(recipe(base.family).search_space(base), base)


def apply(base: Config, values: dict[str, Any]) -> Config:
    """``base`` with the sampled dotted ``values`` set, validated like any config."""
    return with_values(base, values)


def to_tune(dimensions: list[Dimension]) -> dict[str, Any]:
    """Ray Tune distributions (what ``OptunaSearch`` takes as ``param_space``), keyed by dotted key."""
    from ray import tune

    space: dict[str, Any] = {}
    for d in dimensions:
        match d.kind:
            case "loguniform":
                space[d.key] = tune.loguniform(*d.values)
            case "uniform":
                space[d.key] = tune.uniform(*d.values)
            case "int":
                space[d.key] = tune.randint(d.values[0], d.values[1] + 1)
            case "choice":
                space[d.key] = tune.choice(list(d.values))
    return space


def describe(dimensions: list[Dimension]) -> str:
    return "; ".join(f"{d.key} ~ {d.kind}{list(d.values)}" for d in dimensions)


def optional_space(path: Optional[str], base: Config) -> list[Dimension]:
    return load_space(path, base) if path else default_space(base)
