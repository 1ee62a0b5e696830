"""Configs from YAML files and dotted ``key=value`` overrides, one schema per model family.

Unknown keys are errors that name the key (and the family it belongs to, when it is another
family's); bad values are errors that name the field and the value. The family comes from the
command (``voxray train vocoder``), else from the file's ``family:`` key, else it is acoustic.
"""

from __future__ import annotations

from typing import Any, Optional

import yaml
from pydantic import BaseModel, ValidationError

from voxray import uri
from voxray.config.acoustic import AcousticConfig
from voxray.config.root import Config
from voxray.config.talker import TalkerConfig
from voxray.config.vocoder import VocoderConfig

# The one place a family name becomes a config type.
FAMILIES: dict[str, type[Config]] = {"acoustic": AcousticConfig, "vocoder": VocoderConfig, "talker": TalkerConfig}
DEFAULT_FAMILY = "acoustic"


class ConfigError(ValueError):
    """A config file, key or value is wrong; the message names it."""


def config_class(family: str) -> type[Config]:
    if family not in FAMILIES:
        raise ConfigError(f"unknown model family {family!r} (choose from {', '.join(FAMILIES)})")
    return FAMILIES[family]


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> nested dict; values are parsed as YAML scalars/lists."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {pair!r} is not of the form key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {key}: cannot parse value {raw!r}: {exc}") from exc
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {part!r} is set both as a value and a section")
        node[parts[-1]] = value
    return nested


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _section(model: type[BaseModel], name: str) -> Optional[type[BaseModel]]:
    field = model.model_fields.get(name)
    sub = field.annotation if field is not None else None
    return sub if isinstance(sub, type) and issubclass(sub, BaseModel) else None


def leaf_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every dotted key of a config type, e.g. ``train.lr``."""
    keys = set()
    for name in model.model_fields:
        sub = _section(model, name)
        keys |= leaf_keys(sub, f"{prefix}{name}.") if sub else {f"{prefix}{name}"}
    return keys


def _owners(path: str, family: str) -> list[str]:
    """Other families whose schema knows the dotted key ``path``."""
    return [name for name, cls in FAMILIES.items()
            if name != family and (path in leaf_keys(cls) or any(k.startswith(path + ".") for k in leaf_keys(cls)))]


def _check_keys(model: type[BaseModel], data: Any, family: str, prefix: str = "") -> None:
    """Raise on the first unknown key, naming its full dotted path and the known ones."""
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in model.model_fields:
            owners = _owners(path, family)
            if owners:
                raise ConfigError(f"config key {path!r} belongs to the {' and '.join(owners)} family, "
                                  f"not to this {family} config")
            known = ", ".join(sorted(model.model_fields))
            raise ConfigError(f"unknown config key {path!r} (known here: {known})")
        sub = _section(model, key)
        if sub is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"config key {path!r} is a section; got the value {value!r}")
            _check_keys(sub, value, family, path + ".")


def build_config(data: dict[str, Any], family: Optional[str] = None) -> Config:
    """A validated config of ``family`` (else the one ``data`` names, else acoustic)."""
    named = data.get("family")
    if family and named and named != family:
        raise ConfigError(f"the config is for the {named!r} family (family: {named}); this command "
                          f"needs a {family!r} config")
    family = family or named or DEFAULT_FAMILY
    cls = config_class(family)
    _check_keys(cls, data, family)
    try:
        return cls.model_validate({**data, "family": family})
    except ValidationError as exc:
        raise ConfigError("invalid config: " + "; ".join(_explain(cls, err) for err in exc.errors())) from None


BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"), "less_than_equal": ("le", "<="),
          "less_than": ("lt", "<")}


def _explain(cls: type[BaseModel], err: dict[str, Any]) -> str:
    """One pydantic error -> ``key = 'value': why``, or ``key=value must be >= bound`` for bounds."""
    where = ".".join(str(p) for p in err["loc"]) or "(root)"
    bad = err.get("input")
    if err["type"] in BOUNDS:
        attr, op = BOUNDS[err["type"]]
        model, field = cls, None
        for part in err["loc"]:
            field = model.model_fields.get(str(part)) if model else None
            model = _section(model, str(part)) if model else None
        if field is not None and field.annotation is float:
            bad = float(bad)
        return f"{where}={bad} must be {op} {err['ctx'][attr]}"
    shown = "" if isinstance(bad, dict) else f" = {bad!r}"
    return f"{where}{shown}: {err['msg']}"


def load_config(path: Optional[str] = None, overrides: Optional[list[str]] = None,
                family: Optional[str] = None) -> Config:
    data: dict[str, Any] = {}
    if path:
        try:
            text = uri.read_text(path)
        except FileNotFoundError:
            raise ConfigError(f"config file {path!r} does not exist") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path!r} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path!r} must hold a mapping, got {type(data).__name__}")
    return build_config(_merge(data, parse_overrides(overrides or [])), family)


def with_values(config: Config, values: dict[str, Any]) -> Config:
    """``config`` with dotted keys set to (already typed) values, validated like any config."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        node = nested
        *sections, leaf = key.split(".")
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    return build_config(_merge(config.model_dump(mode="json"), nested), config.family)


def to_yaml(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def save_config(config: Config, path: str) -> None:
    uri.write_text(path, to_yaml(config))


def entries(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default as YAML, meaning with its bounds) for every key of a config type."""
    rows = []
    for name, field in model.model_fields.items():
        sub = _section(model, name)
        if sub is not None:
            rows.extend(entries(sub, f"{prefix}{name}."))
            continue
        bounds = [f"{op} {getattr(m, attr)}" for m in field.metadata
                  for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")) if hasattr(m, attr)]
        default = field.get_default(call_default_factory=True)
        shown = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip() \
            if not isinstance(default, tuple) else yaml.safe_dump(list(default), default_flow_style=True).strip()
        choices = _choices(field.annotation)
        bounds += [f"one of {', '.join(map(str, choices))}"] if choices and len(choices) > 1 else []
        rows.append((f"{prefix}{name}", shown, (field.description or "") + (f" [{', '.join(bounds)}]" if bounds else "")))
    return rows


def _choices(annotation: Any) -> list[Any]:
    """The values a ``Literal`` (or ``Optional[Literal]``) key takes; [] for any other type."""
    import typing

    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return [value for arg in typing.get_args(annotation) for value in _choices(arg)]
    return []


def describe(model: type[BaseModel], prefix: str = "") -> list[str]:
    """One line per key of a config type: ``key = default  # meaning [bounds]``."""
    return [f"{key} = {shown}" + (f"  # {note}" if note else "") for key, shown, note in entries(model, prefix)]


REFERENCE_HEADER = """# Config reference

Generated from the schema (`platform/voxray/config/`) by `make docs`; a test fails when this file
is out of date. Every key can be set in a YAML file (`--config FILE`) or on the command line as
`section.key=value`; unknown keys and bad values fail before any work, naming the key.
`voxray train FAMILY --help-config` prints the same list.
"""


def reference_markdown() -> str:
    """docs/config.md: one table per family (key, default, meaning)."""
    cell = lambda text: text.replace("|", "\\|").replace("\n", " ")        # noqa: E731
    parts = [REFERENCE_HEADER]
    parts.append("Families: " + ", ".join(f"[{family}](#{family})" for family in FAMILIES) + ".\n")
    for family, cls in FAMILIES.items():
        parts.append(f"## {family}\n\n| key | default | meaning |\n| --- | --- | --- |")
        parts.extend(f"| `{key}` | `{cell(shown)}` | {cell(note)} |" for key, shown, note in entries(cls))
        parts.append("")
    return "\n".join(parts)
