"""Typed experiment configs: fields declared with their default, one-line meaning and
valid names (`field`), checks shared by every config, `key=value` overrides parsed by
each field's declared type, and conversion to and from JSON."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Collection, Sequence
from typing import Any

_TRUE = ("true", "1")
_FALSE = ("false", "0")


def parse_bool(text: str, key: str) -> bool:
    """true/false (any case) or 1/0; anything else is an error (docs/background.md §7, pitfall
    8: a non-empty string is not True)."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"`{key}` expects a boolean (true/false or 1/0), got {text!r}.")


def _parse_scalar(kind: type, text: str, key: str):
    if kind is bool:
        return parse_bool(text, key)
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"`{key}` expects an integer, got {text!r}.") from None
    if kind is float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"`{key}` expects a number, got {text!r}.") from None
        if not math.isfinite(value):
            raise ValueError(f"`{key}` expects a finite number, got {text!r}.")
        return value
    return text.strip()


def describe_type(kind) -> str:
    """How a field type reads in messages: "integer", "comma-separated numbers"…"""
    origin = typing.get_origin(kind)
    if origin is tuple:
        return f"comma-separated {describe_type(typing.get_args(kind)[0])}s"
    return {bool: "boolean", int: "integer", float: "number", str: "text"}.get(kind, str(kind))


def field(default, meaning: str, *, choices: Sequence[str] = ()):
    """A config field: its `default`, its one-line `meaning` (what `pcscale show-config`
    prints) and, for a name, the `choices` it must be one of (checked by `check_config`).

    A subclass that only changes a default (`batch: int = 32`) keeps the meaning and
    choices declared by its base; one that declares the field again with `field` replaces
    them."""
    if not isinstance(meaning, str) or not meaning.strip():
        raise ValueError(f"`meaning` must be a non-empty sentence, got {meaning!r}.")
    return dataclasses.field(default=default, metadata={"meaning": meaning, "choices": tuple(choices)})


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """What a config declares about one field: its `name`, `kind` (the declared type),
    `default`, one-line `meaning` ("" when none is declared) and valid `choices` (empty:
    any value of the type)."""

    name: str
    kind: Any
    default: Any
    meaning: str
    choices: tuple[str, ...]


def config_fields(config_type: type) -> dict[str, FieldInfo]:
    """Every field of `config_type`, in declaration order, with its declaration: the
    meaning and choices come from the most derived class that declared the field with
    `field`."""
    hints = typing.get_type_hints(config_type)
    infos = {}
    for found in dataclasses.fields(config_type):
        declared = next((base.__dataclass_fields__[found.name].metadata for base in config_type.__mro__
                         if found.name in getattr(base, "__dataclass_fields__", {})
                         and "meaning" in base.__dataclass_fields__[found.name].metadata), {})
        infos[found.name] = FieldInfo(found.name, hints[found.name], found.default, declared.get("meaning", ""),
                                      declared.get("choices", ()))
    return infos


def field_types(config_type: type) -> dict[str, Any]:
    return {name: info.kind for name, info in config_fields(config_type).items()}


def parse_value(config_type: type, key: str, text: str):
    """Parse `text` as the value of field `key` of `config_type`, by its declared type."""
    kind = field_types(config_type)[key]
    if typing.get_origin(kind) is tuple:
        element = typing.get_args(kind)[0]
        parts = [part for part in text.split(",") if part.strip()]
        if not parts:
            raise ValueError(f"`{key}` expects {describe_type(kind)}, got {text!r}.")
        return tuple(_parse_scalar(element, part, key) for part in parts)
    return _parse_scalar(kind, text, key)


def valid_keys(config_type: type) -> str:
    return ", ".join(f"{name} ({describe_type(kind)})" for name, kind in field_types(config_type).items())


def apply_overrides(config, overrides: Sequence[str], *, experiment: str):
    """`config` with each `key=value` of `overrides` applied, parsed by the field's type.
    Unknown keys, missing '=' and values of the wrong type raise `ValueError` naming the
    valid keys; the config's own checks then run on the result."""
    config_type = type(config)
    names = {field.name for field in dataclasses.fields(config_type)}
    changes = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}; valid keys for {experiment}: "
                             f"{valid_keys(config_type)}.")
        if key not in names:
            raise ValueError(f"unknown key {key!r} for {experiment}; valid keys: {valid_keys(config_type)}.")
        try:
            changes[key] = parse_value(config_type, key, text)
        except ValueError as error:
            raise ValueError(f"{error} Valid keys for {experiment}: {valid_keys(config_type)}.") from None
    return dataclasses.replace(config, **changes)


def to_dict(config) -> dict[str, Any]:
    return {field.name: _jsonable(getattr(config, field.name)) for field in dataclasses.fields(config)}


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def from_dict(config_type: type, values: dict[str, Any]):
    """The config saved by `to_dict`: lists become tuples again; unknown keys are an
    error (a results folder written by another version of the experiment)."""
    types = field_types(config_type)
    unknown = set(values) - set(types)
    if unknown:
        raise ValueError(f"the saved config has keys {sorted(unknown)} that {config_type.__name__} does not know")
    return config_type(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def check_config(config) -> None:
    """Checks shared by every config: each field holds its declared type (ints are not
    bools, tuples are non-empty) and, where the field declares choices, one of them; so
    that a config built in Python is as strict as one parsed from the command line."""
    for name, info in config_fields(type(config)).items():
        value, kind = getattr(config, name), info.kind
        if typing.get_origin(kind) is tuple:
            element = typing.get_args(kind)[0]
            if not isinstance(value, tuple) or not value:
                raise TypeError(f"`{name}` must be a non-empty tuple of {describe_type(element)}s, got {value!r}.")
            for item in value:
                _check_scalar(element, item, name)
        else:
            _check_scalar(kind, value, name)
        if info.choices:
            check_choice(config, name, info.choices)


def _check_scalar(kind, value, name: str) -> None:
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
        return
    if kind in (int, float) and isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"`{name}` must be a {describe_type(kind)}, got {value!r} ({type(value).__name__}).")


def check_positive(config, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        values = value if isinstance(value, tuple) else (value,)
        if any(v <= 0 for v in values):
            raise ValueError(f"`{name}` must be positive, got {value!r}.")


def check_choice(config, name: str, choices: Collection[str]) -> None:
    value = getattr(config, name)
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if v not in choices:
            raise ValueError(f"`{name}` must be one of {', '.join(choices)}, got {v!r}.")


def describe_config(config, *, title: str) -> str:
    """Every field of `config`: its value as `--set` writes it, type, the config class's
    default, valid names, and one-line meaning (what `pcscale show-config` prints under
    `title`)."""
    from ._identity import format_value

    lines = [title]
    for name, info in config_fields(type(config)).items():
        value = getattr(config, name)
        notes = [describe_type(info.kind), f"default {format_value(info.default)}"]
        if info.choices:
            notes.append(f"one of {', '.join(info.choices)}")
        lines.append(f"  {name} = {format_value(value)}    ({'; '.join(notes)})")
        lines.append(f"      {info.meaning}")
    return "\n".join(lines)
