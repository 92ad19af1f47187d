"""Time stretch by a phase vocoder (pitch kept), then back to the clip's length.

The paper (CLAR §3.1): a rate in [0.5, 1.5] with the pitch kept, then cropped or zero-padded
to the clip length. The official code (``clar-code`` preset) resamples the stretched clip back
to the original length (``librosa.resample(x, len(x) / length, sr)``), which undoes the tempo
change and scales the pitch by 1/rate instead: ``restore_length="resample"``. The phase
vocoder is :mod:`clar_ray.augment.vocoder` (numpy, row by row) and
:mod:`clar_ray.augment.batch_vocoder` (torch, the whole batch).

Legend: B clips in a batch, T samples per clip.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from clar_ray.augment.spec import (
    AugmentationSpec,
    Draw,
    Draws,
    applied_rows,
    as_batch,
    check_probability,
    check_range,
    uniform,
)
from clar_ray.augment.vocoder import stretch_time

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor


@dataclasses.dataclass(frozen=True)
class TimeStretchParams:
    """Time stretch by a phase vocoder (pitch kept), then back to the clip's length.

    Attributes:
        p: Probability of applying the augmentation.
        min_rate: Slowest rate (< 1 slows down); the paper draws rates in [0.5, 1.5].
        max_rate: Fastest rate.
        restore_length: ``crop_pad`` crops the end or pads zeros at the end (the paper: tempo
            changes, pitch kept); ``resample`` resamples the stretched signal back to the
            clip's length (the official code: tempo kept, pitch scaled by 1/rate).
    """

    p: float = 1.0
    min_rate: float = 0.5
    max_rate: float = 1.5
    restore_length: str = "crop_pad"

    def __post_init__(self) -> None:
        check_probability("p", self.p)
        if not self.min_rate > 0.0:
            raise ValueError(f"min_rate must be > 0, got {self.min_rate}")
        check_range("min_rate", self.min_rate, "max_rate", self.max_rate)
        if self.restore_length not in ("crop_pad", "resample"):
            raise ValueError(
                f"restore_length must be 'crop_pad' or 'resample', got {self.restore_length!r}")


def draw_time_stretch(rng: np.random.Generator, n_samples: int, sample_rate: int,
                      params: TimeStretchParams) -> Draw:
    """Draw one clip's stretch: ``applied``, ``rate``, ``resample`` (how the length is restored)."""
    applied = bool(rng.random() < params.p)
    rate = uniform(rng, params.min_rate, params.max_rate)
    return {"applied": applied, "rate": rate, "resample": params.restore_length == "resample"}


def apply_time_stretch(waves: np.ndarray, draws: Draws, sample_rate: int) -> np.ndarray:
    """Time stretch each applied row by its ``rate`` (row by row): (B, T) → (B, T)."""
    waves = as_batch(waves)
    out = waves.copy()
    for row in applied_rows(draws):
        out[row] = stretch_time(waves[row], float(draws["rate"][row]),
                                bool(draws["resample"][row]))
    return out


def apply_time_stretch_torch(waves: Tensor, draws: Mapping[str, Tensor]) -> Tensor:
    """Time stretch each applied row: :func:`clar_ray.augment.batch_vocoder.time_stretch`."""
    from clar_ray.augment.batch_vocoder import time_stretch

    return time_stretch(waves, draws)


SPEC = AugmentationSpec(
    "time_stretch", TimeStretchParams, draw_time_stretch, apply_time_stretch, cheap=False,
    cpu_ms_per_view=0.9, torch_function=apply_time_stretch_torch,
    preset_overrides={"clar-code": {"p": 0.5, "restore_length": "resample"}},
    host_draws=True,
)
time_stretch = SPEC.function
