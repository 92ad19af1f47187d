"""``section.key=value`` overrides: the ``--set`` syntax of the CLI and the ``set`` of a study.

Values are read as YAML (``3``, ``true``, ``[fade, time_mask]``); one string may hold several
pairs separated by whitespace outside brackets. :func:`apply_overrides` sets them in a plain
nested dict; whether the keys exist is checked when the dict becomes a
:class:`clar_ray.config.JobConfig`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from clar_ray.coerce import ConfigError, plain


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """Parse ``a.b=value`` strings (values as YAML: ``3``, ``true``, ``[fade, time_mask]``).

    One string may hold several pairs separated by whitespace outside brackets.
    """
    parsed: dict[str, Any] = {}
    for text in pairs:
        for pair in _split_pairs(text):
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise ConfigError(f"override {pair!r}: expected section.key=value")
            parsed[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return parsed


def _split_pairs(text: str) -> list[str]:
    pairs: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char.isspace() and depth == 0:
            if current:
                pairs.append("".join(current))
                current = []
            continue
        current.append(char)
    if current:
        pairs.append("".join(current))
    return pairs


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a deep copy of ``raw`` with dotted-key overrides set (unknown keys fail later)."""
    out = plain(dict(raw))
    for dotted, value in parse_overrides(overrides).items():
        set_leaf(out, dotted, value)
    return out


def set_leaf(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree[a][b] = value`` for ``dotted == "a.b"``, creating mappings on the way."""
    node = tree
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {part!r} is a value, not a section")
        node = child
    node[leaf] = value


__all__ = ["apply_overrides", "parse_overrides", "set_leaf"]
