"""Fade in and fade out, each up to a fraction of the clip, one curve for both sides.

The paper (CLAR §3.1): a linear, logarithmic or exponential curve (as torchaudio's ``Fade``
defines them), each side up to half the clip. The official code (``clar-code`` preset) draws
one of torchaudio's five curves (linear, exponential ``2**(t-1) * t``, logarithmic,
quarter-sine, half-sine), the same curve on both sides, lengths in [0, T/2) (here [0, T/2],
one sample apart).

Legend: B clips in a batch, T samples per clip.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from clar_ray.augment.spec import (
    AugmentationSpec,
    Draw,
    Draws,
    applied_rows,
    as_batch,
    check_choices,
    check_interval,
    check_probability,
    check_range,
    samples_between,
)

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

#: Fade curves by id (the ``shape`` in a fade draw indexes this tuple).
FADE_SHAPES = (
    "linear",
    "logarithmic",
    "exponential",
    "quarter_sine",
    "half_sine",
)


@dataclasses.dataclass(frozen=True)
class FadeParams:
    """Fade in and fade out, each up to a fraction of the clip, one curve for both sides.

    Attributes:
        p: Probability of applying the augmentation.
        min_fade_in_fraction: Shortest fade-in, as a fraction of the clip.
        max_fade_in_fraction: Longest fade-in (the paper: half the clip).
        min_fade_out_fraction: Shortest fade-out.
        max_fade_out_fraction: Longest fade-out.
        shapes: Curves drawn uniformly, from ``FADE_SHAPES``.
    """

    p: float = 1.0
    min_fade_in_fraction: float = 0.0
    max_fade_in_fraction: float = 0.5
    min_fade_out_fraction: float = 0.0
    max_fade_out_fraction: float = 0.5
    shapes: tuple[str, ...] = ("linear", "logarithmic", "exponential")

    def __post_init__(self) -> None:
        check_probability("p", self.p)
        for side in ("in", "out"):
            low, high = f"min_fade_{side}_fraction", f"max_fade_{side}_fraction"
            check_interval(low, getattr(self, low), 0.0, 1.0)
            check_interval(high, getattr(self, high), 0.0, 1.0)
            check_range(low, getattr(self, low), high, getattr(self, high))
        check_choices("shapes", self.shapes, FADE_SHAPES)


def draw_fade(rng: np.random.Generator, n_samples: int, sample_rate: int,
              params: FadeParams) -> Draw:
    """Draw one clip's fade: ``applied``, ``shape`` (id), ``fade_in/out_samples``."""
    applied = bool(rng.random() < params.p)
    shape = FADE_SHAPES.index(params.shapes[int(rng.integers(len(params.shapes)))])
    fade_in = samples_between(rng, params.min_fade_in_fraction, params.max_fade_in_fraction,
                              n_samples)
    fade_out = samples_between(rng, params.min_fade_out_fraction, params.max_fade_out_fraction,
                               n_samples)
    return {"applied": applied, "shape": shape, "fade_in_samples": fade_in,
            "fade_out_samples": fade_out}


# --------------------------------------------------------------------------- numpy

_LOG10_E = np.float32(1.0 / math.log(10.0))
_HALF_PI = np.float32(math.pi / 2)


def _fade_ramp(n: int) -> np.ndarray:
    """float32 ``i / (n - 1)`` for i in [0, n): the ramp ``linspace(0, 1, n)`` of a fade."""
    return np.arange(n, dtype=np.float32) / np.float32(max(n - 1, 1))


def _fade_curve(shape: str, ramp: np.ndarray, fade_in: bool) -> np.ndarray:
    """Gain of a fade curve at ramp positions in [0, 1] (the curves of torchaudio's Fade).

    float32 throughout, like the torch version below: the gains agree with float64 to a few
    float32 ulps, and float32 is the cheaper (the fade is the costliest step of the cheap set).
    ``ramp`` is float32 and may be overwritten.
    """
    t = ramp if fade_in else np.subtract(np.float32(1.0), ramp, out=ramp)  # the mirrored ramp
    if shape == "linear":
        gain = t
    elif shape == "exponential":  # 2**(t - 1) * t
        gain = np.exp2(t - np.float32(1.0)) * t
    elif shape == "logarithmic":  # log10(0.1 + t) + 1
        gain = np.log(t + np.float32(0.1)) * _LOG10_E + np.float32(1.0)
    elif shape == "quarter_sine":  # sin(t * pi / 2)
        gain = np.sin(t * _HALF_PI)
    elif shape == "half_sine":  # sin(t * pi - pi / 2) / 2 + 0.5
        half = np.float32(0.5)
        gain = np.sin((t - half) * np.float32(math.pi)) * half + half
    else:
        raise ValueError(f"unknown fade shape {shape!r}; allowed: {list(FADE_SHAPES)}")
    return np.minimum(np.maximum(gain, np.float32(0.0), out=gain), np.float32(1.0), out=gain)


def apply_fade(waves: np.ndarray, draws: Draws, sample_rate: int) -> np.ndarray:
    """Fade in and out: (B, T) → (B, T).

    The fade-in of length L multiplies the first L samples by the row's curve at
    ``linspace(0, 1, L)``, the fade-out the last L samples (torchaudio's ``Fade``); each
    fade-out curve is its fade-in curve mirrored (``curve_out(t) == curve_in(1 - t)`` for every
    shape). Rows are processed one by one: only the faded samples are touched, which beats
    (B, T) array ops.
    """
    waves = as_batch(waves)
    out = waves.copy()
    n_samples = waves.shape[1]
    for row in applied_rows(draws):
        shape = FADE_SHAPES[int(draws["shape"][row])]
        fade_in, fade_out = int(draws["fade_in_samples"][row]), int(draws["fade_out_samples"][row])
        if fade_in:
            out[row, :fade_in] *= _fade_curve(shape, _fade_ramp(fade_in), True)
        if fade_out:
            out[row, n_samples - fade_out:] *= _fade_curve(shape, _fade_ramp(fade_out), False)
    return out


# --------------------------------------------------------------------------- torch


def _torch_fade_curve(shape: str, t: Tensor) -> Tensor:
    """A fade-in curve at ramp positions t in [0, 1], computed in place in t.

    Its value at 1 is 1 for every shape, so positions outside a fade (set to 1) keep their
    samples.
    """
    if shape == "exponential":  # 2**(t - 1) * t
        gain = (t - 1.0).exp2_().mul_(t)
    elif shape == "logarithmic":  # log10(0.1 + t) + 1
        gain = t.add_(0.1).log10_().add_(1.0)
    elif shape == "quarter_sine":  # sin(t * pi / 2)
        gain = t.mul_(math.pi / 2).sin_()
    elif shape == "half_sine":  # sin(t * pi - pi / 2) / 2 + 0.5
        gain = t.mul_(math.pi).sub_(math.pi / 2).sin_().mul_(0.5).add_(0.5)
    else:  # linear
        gain = t
    return gain.clamp_(0.0, 1.0)


def apply_fade_torch(waves: Tensor, draws: Mapping[str, Tensor]) -> Tensor:
    """Fade in and out per row: (B, T) → (B, T).

    Draw keys (each (B,), on the host: ``SPEC.host_draws``): ``applied``, ``shape`` (index of
    ``FADE_SHAPES``), ``fade_in_samples``, ``fade_out_samples``. Rows are taken a curve at a
    time (five at most, never a loop over rows), so each sample is computed for its own curve
    only. The fade-out curve is the fade-in curve at the mirrored ramp ``(T - 1 - t) / (L - 1)``
    (``curve_out(t) == curve_in(1 - t)`` for every shape).
    """
    import torch

    out = waves.clone()
    n_samples, device = waves.shape[1], waves.device
    applied = draws["applied"].numpy().astype(bool)
    shapes = draws["shape"].numpy()
    t = torch.arange(n_samples, device=device, dtype=torch.float32)[None, :]  # (1, T)
    for shape_id, name in enumerate(FADE_SHAPES):  # over the curves, never rows
        rows = np.flatnonzero(applied & (shapes == shape_id))
        if rows.size == 0:
            continue
        index = torch.as_tensor(rows, device=device)
        fade_in, fade_out = (draws[key][rows].to(device=device, dtype=torch.float32)[:, None]
                             for key in ("fade_in_samples", "fade_out_samples"))
        ramp_in = torch.where(t < fade_in, t / (fade_in - 1.0).clamp_min(1.0), 1.0)
        ramp_out = torch.where(t >= n_samples - fade_out,
                               (n_samples - 1.0 - t) / (fade_out - 1.0).clamp_min(1.0), 1.0)
        gain = _torch_fade_curve(name, ramp_in).mul_(_torch_fade_curve(name, ramp_out))
        out.index_copy_(0, index, out.index_select(0, index).mul_(gain))
    return out


SPEC = AugmentationSpec(
    "fade", FadeParams, draw_fade, apply_fade, cheap=True, cpu_ms_per_view=0.05,
    torch_function=apply_fade_torch,
    preset_overrides={"clar-code": {
        "p": 0.5,
        "shapes": ("linear", "exponential", "logarithmic", "quarter_sine", "half_sine")}},
    host_draws=True,
)
fade = SPEC.function
