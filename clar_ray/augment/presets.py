"""The augmentation registry and its two parameter presets, ``paper`` and ``clar-code``.

``AUGMENTATIONS`` maps the names a job uses to an :class:`AugmentationSpec`; ``resolve_params``
merges a preset with a job's overrides and validates them.

``paper`` (the default) follows the text of CLAR (Al-Tahan & Mohsenzadeh, AISTATS 2021, §3.1):
pitch shift in ±15 semitones; white noise, and mixed noise of a colour drawn from white, pink
and brown, at a random SNR; fade in/out with a linear, logarithmic or exponential curve (as
torchaudio's ``Fade`` defines them), each side up to half the clip; time mask of up to 1/8 of
the clip filled with low Gaussian noise or a constant; circular time shift of up to half the
clip either way; time stretch at a rate in [0.5, 1.5] with the pitch kept, then cropped or
zero-padded to the clip length. The paper gives no SNR range, so ``paper`` uses the official
code's 0-20 dB, drawn continuously.

``clar-code`` follows the official code (github.com/haideraltahan/CLAR, ``utils.py`` and
``main_unsupervised.py``), which differs from the paper:

* **time stretch** resamples the stretched clip back to the original length
  (``librosa.resample(x, len(x) / length, sr)``), which undoes the tempo change and scales the
  pitch by 1/rate instead: ``restore_length="resample"``.
* **fade** draws one of torchaudio's five curves (linear, exponential ``2**(t-1) * t``,
  logarithmic, quarter-sine, half-sine) where the paper names three, the same curve on both
  sides, lengths in [0, T/2) (here [0, T/2], one sample apart).
* **time mask** is always exactly 1/8 of the clip, filled with N(0, 0.01) noise, and applied
  only on an extra inner coin flip (p 0.5). The code also writes the mask into its input in
  place, so the second view of a clip inherits the first view's mask; that bug is not
  reproduced.
* **mixed noise** picks uniformly among brown, pink and fan noise read from files, white noise,
  and nothing; file noise is mixed as ``clip(x * U(0.5, 1.2)[t] + n * U(0, 0.9)[t], 0, 1)``
  (per-sample gains, the result clipped to [0, 1]); white noise is added at an SNR. Here
  pink and brown noise are generated (peak-normalised, as a noise file would be) and the fan
  recording, which is not public, is dropped: brown, pink, white, none with 1/4 each.
* **white noise** draws an integer SNR in {0, ..., 19} dB (``torch.randint(0, 20)``); the code
  scales Gaussian noise by the target RMS, here the noise is normalised to it exactly.
* **pitch shift** draws an integer number of semitones in {-15, ..., 14}
  (``torch.randint(-15, 15)``); librosa 0.8 resampled with resampy ``kaiser_best``, here soxr HQ.
* **time shift** draws ``randint(-8000, 8000)`` samples whatever the clip length: half of a
  1 s clip at 16 kHz, but a tenth of a 5 s ESC-50 clip: ``max_shift_seconds=0.5``.
* **probability**: every augmentation is wrapped in torchvision's ``RandomApply`` with its
  default p = 0.5 (so the time mask fires with 0.5 × 0.5 = 0.25). As published, the code passes
  a bare function where torchvision 0.7's ``RandomApply`` asserts a list, so it cannot have run
  as is; p = 0.5 is the evident intent.
* **order**: with ``order=True`` the code composes fade, time mask, time stretch, pitch shift,
  time shift, white noise, mixed noise: :data:`CLAR_CODE_ORDER`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from clar_ray.augment import signal

PRESETS = ("paper", "clar-code")

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


@dataclasses.dataclass(frozen=True)
class AugmentationSpec:
    """Everything the composition needs to know about one augmentation.

    Attributes:
        name: The name a job uses.
        function: Per-clip numpy function ``(wave, rng, *, sample_rate, **params) -> wave``.
        params_type: Frozen dataclass of its parameters (defaults = the ``paper`` preset).
        draw: ``(rng, n_samples, sample_rate, params) -> Draw``: one clip's random parameters.
        apply: ``(waves (B, T), draws, sample_rate) -> (B, T)``: numpy batch transform.
        cheap: True when ``apply`` is vectorised over the batch (well under 1 ms a view on a
            CPU core); False for the phase-vocoder augmentations (a few ms a view), which
            placement by cost (``clar_ray.augment.placement``) moves to a GPU.
        torch_name: Name of the torch batch function in ``clar_ray.augment.batch``, or None.
        preset_overrides: Per preset, the values that differ from ``params_type``'s defaults.
    """

    name: str
    function: Callable[..., np.ndarray]
    params_type: type
    draw: Callable[[np.random.Generator, int, int, Any], signal.Draw]
    apply: Callable[[np.ndarray, signal.Draws, int], np.ndarray]
    cheap: bool
    torch_name: str | None
    preset_overrides: Mapping[str, Mapping[str, Any]]

    @property
    def param_names(self) -> tuple[str, ...]:
        """The parameter keys a job may set."""
        return tuple(field.name for field in dataclasses.fields(self.params_type))

    @property
    def torch_function(self) -> Callable[..., Any] | None:
        """The torch batch function (imports torch on first use), or None."""
        if self.torch_name is None:
            return None
        batch = importlib.import_module("clar_ray.augment.batch")
        return getattr(batch, self.torch_name)  # type: ignore[no-any-return]

    def defaults(self, preset: str) -> dict[str, Any]:
        """The full parameter dict of a preset."""
        _check_preset(preset)
        params = dataclasses.asdict(self.params_type())
        params.update(self.preset_overrides.get(preset, {}))
        return params


def _check_preset(preset: str) -> None:
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; allowed: {list(PRESETS)}")


AUGMENTATIONS: dict[str, AugmentationSpec] = {
    spec.name: spec
    for spec in (
        AugmentationSpec(
            "pitch_shift", signal.pitch_shift, signal.PitchShiftParams,
            signal.draw_pitch_shift, signal.apply_pitch_shift, cheap=False,
            torch_name="pitch_shift",
            preset_overrides={"clar-code": {"p": 0.5, "max_semitones": 14.0,
                                            "semitone_step": 1.0}},
        ),
        AugmentationSpec(
            "white_noise", signal.white_noise, signal.WhiteNoiseParams,
            signal.draw_white_noise, signal.apply_white_noise, cheap=True,
            torch_name="white_noise",
            preset_overrides={"clar-code": {"p": 0.5, "max_snr_db": 19.0, "snr_step_db": 1.0}},
        ),
        AugmentationSpec(
            "mixed_noise", signal.mixed_noise, signal.MixedNoiseParams,
            signal.draw_mixed_noise, signal.apply_mixed_noise, cheap=True,
            torch_name="mixed_noise",
            preset_overrides={"clar-code": {"p": 0.5, "max_snr_db": 19.0, "snr_step_db": 1.0,
                                            "colors": ("brown", "pink", "white", "none"),
                                            "style": "clar-code"}},
        ),
        AugmentationSpec(
            "fade", signal.fade, signal.FadeParams, signal.draw_fade, signal.apply_fade,
            cheap=True, torch_name="fade",
            preset_overrides={"clar-code": {
                "p": 0.5,
                "shapes": ("linear", "exponential", "logarithmic", "quarter_sine",
                           "half_sine")}},
        ),
        AugmentationSpec(
            "time_mask", signal.time_mask, signal.TimeMaskParams, signal.draw_time_mask,
            signal.apply_time_mask, cheap=True, torch_name="time_mask",
            preset_overrides={"clar-code": {"p": 0.25, "min_mask_fraction": 0.125,
                                            "fills": ("noise",)}},
        ),
        AugmentationSpec(
            "time_shift", signal.time_shift, signal.TimeShiftParams, signal.draw_time_shift,
            signal.apply_time_shift, cheap=True, torch_name="time_shift",
            preset_overrides={"clar-code": {"p": 0.5, "max_shift_seconds": 0.5}},
        ),
        AugmentationSpec(
            "time_stretch", signal.time_stretch, signal.TimeStretchParams,
            signal.draw_time_stretch, signal.apply_time_stretch, cheap=False,
            torch_name="time_stretch",
            preset_overrides={"clar-code": {"p": 0.5, "restore_length": "resample"}},
        ),
    )
}


def get_spec(name: str) -> AugmentationSpec:
    """The spec of an augmentation, or a ValueError listing the known names."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; allowed: {list(AUGMENTATIONS)}")
    return AUGMENTATIONS[name]


def _coerce(name: str, key: str, value: Any, annotation: str) -> Any:
    """Turn a YAML value into the parameter's annotated type, or raise naming both."""
    if annotation.endswith("| None") and value is None:
        return None
    if annotation.startswith("float"):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        expected = "a number" + (" or null" if annotation.endswith("| None") else "")
    elif annotation == "bool":
        if isinstance(value, bool):
            return value
        expected = "true or false"
    elif annotation == "str":
        if isinstance(value, str):
            return value
        expected = "a string"
    elif annotation.startswith("tuple"):
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        expected = "a list of strings"
    else:  # pragma: no cover - every parameter type is handled above
        raise TypeError(f"{name}.{key}: unsupported parameter type {annotation}")
    raise ValueError(f"{name}.{key} must be {expected}, got {value!r}")


def build_params(name: str, preset: str = "paper",
                 overrides: Mapping[str, object] | None = None) -> Any:
    """The validated parameter dataclass of ``name`` under ``preset`` with ``overrides``.

    Raises:
        ValueError: Unknown augmentation, preset or parameter key (naming the allowed keys),
            a value of the wrong type, or a bad value (naming it).
    """
    spec = get_spec(name)
    params = spec.defaults(preset)
    annotations = {field.name: str(field.type) for field in dataclasses.fields(spec.params_type)}
    for key, value in (overrides or {}).items():
        if key not in params:
            raise ValueError(f"unknown parameter {key!r} for augmentation {name!r}; "
                             f"allowed: {list(spec.param_names)}")
        params[key] = _coerce(name, key, value, annotations[key])
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
