"""Pitch shift, tempo kept: a phase-vocoder time stretch by 2**(-n/12), then resampling back.

The paper (CLAR §3.1): a shift in ±15 semitones. The official code (``clar-code`` preset)
draws an integer number of semitones in {-15, ..., 14} (``torch.randint(-15, 15)``); its
librosa 0.8 resampled with resampy ``kaiser_best``, here soxr HQ. The phase vocoder is
:mod:`clar_ray.augment.vocoder` (numpy, row by row) and :mod:`clar_ray.augment.batch_vocoder`
(torch, the whole batch).

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
    check_non_negative,
    check_probability,
    check_range,
    uniform,
)
from clar_ray.augment.vocoder import shift_pitch

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor


@dataclasses.dataclass(frozen=True)
class PitchShiftParams:
    """Pitch shift, tempo kept (time stretch by 2**(-n/12), then resampling back).

    Attributes:
        p: Probability of applying the augmentation.
        min_semitones: Lowest shift; the paper draws from ±15 semitones.
        max_semitones: Highest shift.
        semitone_step: 0 draws a continuous shift; k > 0 draws ``min + k * i`` (integer steps).
    """

    p: float = 1.0
    min_semitones: float = -15.0
    max_semitones: float = 15.0
    semitone_step: float = 0.0

    def __post_init__(self) -> None:
        check_probability("p", self.p)
        check_range("min_semitones", self.min_semitones, "max_semitones", self.max_semitones)
        check_non_negative("semitone_step", self.semitone_step)


def draw_pitch_shift(rng: np.random.Generator, n_samples: int, sample_rate: int,
                     params: PitchShiftParams) -> Draw:
    """Draw one clip's pitch shift: ``applied``, ``semitones``."""
    applied = bool(rng.random() < params.p)
    semitones = uniform(rng, params.min_semitones, params.max_semitones, params.semitone_step)
    return {"applied": applied, "semitones": semitones}


def apply_pitch_shift(waves: np.ndarray, draws: Draws, sample_rate: int) -> np.ndarray:
    """Pitch shift each applied row by its ``semitones`` (row by row): (B, T) → (B, T)."""
    waves = as_batch(waves)
    out = waves.copy()
    for row in applied_rows(draws):
        out[row] = shift_pitch(waves[row], float(draws["semitones"][row]), sample_rate)
    return out


def apply_pitch_shift_torch(waves: Tensor, draws: Mapping[str, Tensor]) -> Tensor:
    """Pitch shift each applied row: :func:`clar_ray.augment.batch_vocoder.pitch_shift`."""
    from clar_ray.augment.batch_vocoder import pitch_shift

    return pitch_shift(waves, draws)


SPEC = AugmentationSpec(
    "pitch_shift", PitchShiftParams, draw_pitch_shift, apply_pitch_shift, cheap=False,
    cpu_ms_per_view=1.4, torch_function=apply_pitch_shift_torch,
    preset_overrides={"clar-code": {"p": 0.5, "max_semitones": 14.0, "semitone_step": 1.0}},
    host_draws=True,
)
pitch_shift = SPEC.function
