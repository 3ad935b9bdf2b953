"""Typed configs: dataclasses loaded from YAML, with unknown keys rejected.

Every config section in tslayers is a plain dataclass that lives beside the code it configures
(``EncoderConfig`` in ``tslayers.model``, ``DataConfig`` in ``tslayers.data``...). This module
only knows how to turn nested dicts into those dataclasses strictly, apply ``key.sub=value``
overrides from the command line, and write the resolved config next to a run's outputs.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that cannot be turned into the expected dataclass."""


def check_ranges(section: str, obj: Any, rules: dict[str, tuple[bool, str]]) -> None:
    """Raise ``ConfigError`` for the first ``field: (ok, expected)`` rule that fails, naming
    the key, its value and the allowed range (so the message says how to fix it)."""
    for key, (ok, expected) in rules.items():
        if not ok:
            raise ConfigError(f"{section}.{key}={getattr(obj, key)!r} is out of range: "
                              f"{expected}")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown_key_message(key: str, where: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return (
        f"unknown config key '{where}{key}'.{hint} Allowed keys here: {', '.join(sorted(allowed))}."
    )


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type, recursing into dataclasses."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except (ConfigError, TypeError, ValueError) as err:
                errors.append(str(err))
        raise ConfigError(f"'{where}': {value!r} fits none of {tp}: {'; '.join(errors)}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"'{where}' must be a mapping of keys, got {value!r}")
        return from_dict(tp, value, prefix=f"{where}.")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value]
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{where}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"'{where}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"'{where}' must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"'{where}' must be an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"'{where}' must be a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"'{where}' must be a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise ``ConfigError`` naming them."""
    data = dict(data or {})
    types_ = _field_types(cls)
    for key in data:
        if key not in types_:
            raise ConfigError(_unknown_key_message(key, prefix, list(types_)))
    kwargs = {k: _coerce(v, types_[k], f"{prefix}{k}") for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as err:  # missing required fields
        raise ConfigError(f"config section '{prefix.rstrip('.') or cls.__name__}': {err}") from None
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass (possibly nested) to plain YAML-safe python."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            raise ConfigError(f"override '{item}': the value is not valid YAML; quote it "
                              "(key='text')") from None
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = value
    return data


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise ConfigError(f"duplicate key '{key}' at line {mark.line + 1}, column "
                                  f"{mark.column + 1} (first at line {seen[key] + 1}); "
                                  "keep only one")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; syntax errors name the line and column, and empty files,
    non-mappings and duplicate keys are refused (they would silently mean something else)."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(f"config file '{path}' {what}; pass a YAML file such as "
                          "configs/quickstart.yaml")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config file '{path}': {err}") from None
    try:
        loaded = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as err:
        raise ConfigError(f"config file '{path}': {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config file '{path}' is not valid YAML{where}: {problem}; fix the "
                          "file (indentation, quoting, a missing ':')") from None
    if loaded is None:
        raise ConfigError(f"config file '{path}' is empty; write the settings you want (see "
                          "configs/quickstart.yaml), or pass no file for the defaults")
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping (key: value lines) at the "
                          f"top level, got {type(loaded).__name__}")
    return loaded


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """Read YAML at ``path`` (or start empty), apply overrides, build ``cls`` strictly."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(path)
    apply_overrides(data, overrides or [])
    return from_dict(cls, data)


def save_config(obj: Any, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically) so a run can be reproduced from it."""
    from tslayers.io import atomic_write

    return atomic_write(Path(path), yaml.safe_dump(to_dict(obj), sort_keys=False))
