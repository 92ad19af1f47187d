"""Plain YAML values into typed dataclass fields, and back: the one coercer of the project.

A job's YAML (:mod:`clar_ray.config`) and an augmentation's parameters
(:mod:`clar_ray.augment.presets`) both arrive as plain values (ints, floats, strings, lists,
mappings) and become frozen dataclasses. :func:`coerce` checks a value against a field's
annotation and returns it in the dataclass's form (lists become tuples, ints become floats
where the field is a float, a YAML 1.1 string such as ``"1e-4"`` becomes a float);
:func:`build` makes a dataclass from a mapping, refusing unknown keys; :func:`plain` turns a
dataclass's ``asdict`` back into lists and dicts that YAML and Ray take.

A value that does not fit raises :class:`ConfigError`, which names the key, what was expected
and the value, so each caller can word its message its own way.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, get_args, get_origin


class ConfigError(ValueError):
    """A job configuration that names an unknown key, or holds a wrong type or value.

    Attributes:
        key: The dotted key (``train.epochs``, ``colors[0]``), or None.
        expected: What the key takes, in words (``an integer``, ``a number or null``), or None.
        value: The value that was refused.
    """

    def __init__(self, message: str, *, key: str | None = None, expected: str | None = None,
                 value: Any = None) -> None:
        super().__init__(message)
        self.key = key
        self.expected = expected
        self.value = value


def check(condition: bool, key: str, message: str) -> None:
    """Raise ``ConfigError("key: message")`` unless ``condition``."""
    if not condition:
        raise ConfigError(f"{key}: {message}", key=key)


def _refuse(key: str, expected: str, value: Any, message: str | None = None) -> ConfigError:
    return ConfigError(f"{key}: {message or f'expected {expected}, got {value!r}'}", key=key,
                       expected=expected, value=value)


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it in the dataclass's form.

    Args:
        value: A plain value as YAML reads it.
        tp: The field's annotation (resolved, e.g. by ``typing.get_type_hints``): ``bool``,
            ``int``, ``float``, ``str``, ``None``, ``Any``, a ``Literal``, a union, ``tuple[X,
            ...]``, ``dict[K, V]`` or a dataclass.
        key: The dotted key, for the message.

    Raises:
        ConfigError: The value does not fit (with ``key``, ``expected`` and ``value`` set).
        TypeError: An annotation the coercer does not know (a schema bug, not a user error).
    """
    origin = get_origin(tp)
    if origin is Literal:
        allowed = ", ".join(repr(a) for a in get_args(tp))
        if value not in get_args(tp):
            raise _refuse(key, f"one of {allowed}", value,
                          f"must be one of {allowed}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        expected = []
        for arg in get_args(tp):
            try:
                return coerce(value, arg, key)
            except ConfigError as error:
                expected.append(error.expected or str(arg))
        raise _refuse(key, " or ".join(expected), value, f"expected {tp}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _refuse(key, "a list", value,
                          f"expected a list, got {type(value).__name__} {value!r}")
        (item_tp, _ellipsis) = get_args(tp)
        return tuple(coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _refuse(key, "a mapping", value,
                          f"expected a mapping, got {type(value).__name__} {value!r}")
        key_tp, val_tp = get_args(tp)
        return {coerce(k, key_tp, key): coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is type(None):
        if value is not None:
            raise _refuse(key, "null", value)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _refuse(key, "true or false", value)
        return value
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _refuse(key, "an integer", value)
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _refuse(key, "a number", value)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _refuse(key, "a string", value)
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, prefix=key)
    raise TypeError(f"{key}: unsupported annotation {tp!r}")  # a schema bug, not a user error


def build(cls: Any, raw: Any, prefix: str = "") -> Any:
    """The dataclass ``cls`` from the mapping ``raw``, each field coerced to its annotation.

    Args:
        cls: A dataclass type (fields left out of ``raw`` keep their defaults).
        raw: A mapping of field names to plain values.
        prefix: The dotted key of ``raw`` itself ("" at the top of a job).

    Raises:
        ConfigError: ``raw`` is not a mapping, has a key ``cls`` lacks, or a value that does
            not fit; errors raised by ``cls`` itself pass through.
    """
    where = prefix or "job"
    check(isinstance(raw, Mapping), where, f"expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        raise ConfigError(f"{key}: unknown key; allowed in {where}: {', '.join(sorted(fields))}",
                          key=key)
    kwargs = {
        name: coerce(value, hints[name], f"{prefix}.{name}" if prefix else name)
        for name, value in raw.items()
    }
    return cls(**kwargs)


def plain(value: Any) -> Any:
    """``value`` with every tuple turned into a list, recursively (dicts copied)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


__all__ = ["ConfigError", "build", "check", "coerce", "plain"]
