"""The augmentation registry and its two parameter presets, ``paper`` and ``clar-code``.

``AUGMENTATIONS`` maps the names a job uses to the :class:`AugmentationSpec` of each module of
:mod:`clar_ray.augment.ops`; :func:`resolve_params` merges a preset with a job's overrides and
validates them.

``paper`` (the default) follows the text of CLAR (Al-Tahan & Mohsenzadeh, AISTATS 2021, §3.1);
``clar-code`` follows the official code (github.com/haideraltahan/CLAR, ``utils.py`` and
``main_unsupervised.py``), which differs from the paper. Each augmentation's module says what
the two presets do for it and sets its ``clar-code`` values. Two differences concern them all:

* **probability**: every augmentation is wrapped in torchvision's ``RandomApply`` with its
  default p = 0.5 (so the time mask fires with 0.5 × 0.5 = 0.25). As published, the code passes
  a bare function where torchvision 0.7's ``RandomApply`` asserts a list, so it cannot have run
  as is; p = 0.5 is the evident intent.
* **order**: with ``order=True`` the code composes fade, time mask, time stretch, pitch shift,
  time shift, white noise, mixed noise: :data:`CLAR_CODE_ORDER`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from clar_ray.augment.ops import (
    fade,
    mixed_noise,
    pitch_shift,
    time_mask,
    time_shift,
    time_stretch,
    white_noise,
)
from clar_ray.augment.spec import AugmentationSpec
from clar_ray.coerce import ConfigError, coerce

#: The presets a job may name: the type of ``augment.preset`` in :mod:`clar_ray.config`.
PresetName = Literal["paper", "clar-code"]
#: The same names as a tuple (for checks, messages and tests).
PRESETS: tuple[str, ...] = typing.get_args(PresetName)

#: The order in which the official code composes the augmentations it is given.
CLAR_CODE_ORDER = (
    "fade",
    "time_mask",
    "time_stretch",
    "pitch_shift",
    "time_shift",
    "white_noise",
    "mixed_noise",
)

#: Every augmentation a job may name, in the order jobs and studies list them.
AUGMENTATIONS: dict[str, AugmentationSpec] = {
    module.SPEC.name: module.SPEC
    for module in (pitch_shift, white_noise, mixed_noise, fade, time_mask, time_shift,
                   time_stretch)
}


def get_spec(name: str) -> AugmentationSpec:
    """The spec of an augmentation, or a ValueError listing the known names."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; allowed: {list(AUGMENTATIONS)}")
    return AUGMENTATIONS[name]


def check_preset(preset: str) -> None:
    """Raise a ValueError listing the presets unless ``preset`` is one."""
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; allowed: {list(PRESETS)}")


def build_params(name: str, preset: str = "paper",
                 overrides: Mapping[str, object] | None = None) -> Any:
    """The validated parameter dataclass of ``name`` under ``preset`` with ``overrides``.

    Values are coerced from YAML types by :func:`clar_ray.coerce.coerce` (lists become tuples,
    integers become floats where the parameter is a float).

    Raises:
        ValueError: Unknown augmentation, preset or parameter key (naming the allowed keys),
            a value of the wrong type, or a bad value (naming it).
    """
    spec = get_spec(name)
    check_preset(preset)
    params = spec.defaults(preset)
    hints = typing.get_type_hints(spec.params_type)
    for key, value in (overrides or {}).items():
        if key not in params:
            raise ValueError(f"unknown parameter {key!r} for augmentation {name!r}; "
                             f"allowed: {list(spec.param_names)}")
        try:
            params[key] = coerce(value, hints[key], key)
        except ConfigError as error:
            raise ValueError(f"{name}.{error.key} must be {error.expected}, "
                             f"got {error.value!r}") from None
    try:
        return spec.params_type(**params)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None


def resolve_params(name: str, preset: str = "paper",
                   overrides: Mapping[str, object] | None = None) -> dict[str, Any]:
    """Merge a preset's parameters with a job's overrides and validate them.

    Args:
        name: Augmentation name, a key of :data:`AUGMENTATIONS`.
        preset: ``paper`` or ``clar-code``.
        overrides: Parameter values that replace the preset's (YAML lists become tuples,
            integers become floats where the parameter is a float).

    Returns:
        The complete parameter dict, e.g. ``{"p": 1.0, "min_semitones": -15.0, ...}``.

    Raises:
        ValueError: See :func:`build_params`.
    """
    return dataclasses.asdict(build_params(name, preset, overrides))


def resolve_sequence(
    sequence: Sequence[str],
    preset: str,
    params: Mapping[str, Mapping[str, object]] | None,
) -> list[tuple[AugmentationSpec, Any]]:
    """Each step's spec and validated parameter dataclass.

    ``params`` is keyed by augmentation name; names absent from ``sequence`` are allowed (a job
    may hold parameters for augmentations a grid switches on and off) but must be known.

    Raises:
        ValueError: Unknown augmentation, preset or parameter, or a bad value.
    """
    if isinstance(sequence, str):
        raise ValueError(f"sequence must be a list of augmentation names, got {sequence!r}")
    params = params or {}
    for name in params:
        get_spec(name)
    return [(get_spec(name), build_params(name, preset, params.get(name))) for name in sequence]
