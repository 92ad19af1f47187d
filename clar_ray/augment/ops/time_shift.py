"""Time shift: a circular shift (samples leaving one end come back at the other), either way.

The paper (CLAR §3.1): up to half the clip either way. The official code (``clar-code``
preset) draws ``randint(-8000, 8000)`` samples whatever the clip length: half of a 1 s clip at
16 kHz, but a tenth of a 5 s ESC-50 clip: ``max_shift_seconds=0.5``.

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
    check_interval,
    check_non_negative,
    check_probability,
    check_range,
)

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor


@dataclasses.dataclass(frozen=True)
class TimeShiftParams:
    """Circular shift (samples leaving one end come back at the other), either direction.

    Attributes:
        p: Probability of applying the augmentation.
        min_shift_fraction: Most negative shift (earlier), as a fraction of the clip.
        max_shift_fraction: Most positive shift (later); the paper: half the clip.
        max_shift_seconds: Optional cap on ``|shift|`` in seconds (the official code shifts at
            most 8000 samples whatever the clip length); None for no cap.
    """

    p: float = 1.0
    min_shift_fraction: float = -0.5
    max_shift_fraction: float = 0.5
    max_shift_seconds: float | None = None

    def __post_init__(self) -> None:
        check_probability("p", self.p)
        check_interval("min_shift_fraction", self.min_shift_fraction, -1.0, 1.0)
        check_interval("max_shift_fraction", self.max_shift_fraction, -1.0, 1.0)
        check_range("min_shift_fraction", self.min_shift_fraction,
                    "max_shift_fraction", self.max_shift_fraction)
        if self.max_shift_seconds is not None:
            check_non_negative("max_shift_seconds", self.max_shift_seconds)


def draw_time_shift(rng: np.random.Generator, n_samples: int, sample_rate: int,
                    params: TimeShiftParams) -> Draw:
    """Draw one clip's circular shift: ``applied``, ``shift_samples`` (> 0 moves later)."""
    applied = bool(rng.random() < params.p)
    low = round(params.min_shift_fraction * n_samples)
    high = round(params.max_shift_fraction * n_samples)
    if params.max_shift_seconds is not None:
        cap = round(params.max_shift_seconds * sample_rate)
        low, high = min(max(low, -cap), cap), min(max(high, -cap), cap)
    return {"applied": applied, "shift_samples": int(rng.integers(low, high + 1))}


def apply_time_shift(waves: np.ndarray, draws: Draws, sample_rate: int) -> np.ndarray:
    """Circular shift of each row by ``shift_samples`` (``np.roll`` per row): (B, T) → (B, T)."""
    waves = as_batch(waves)
    out = waves.copy()
    n_samples = waves.shape[1]
    for row in applied_rows(draws):
        shift = int(draws["shift_samples"][row]) % n_samples
        if shift:
            out[row, shift:] = waves[row, :n_samples - shift]
            out[row, :shift] = waves[row, n_samples - shift:]
    return out


def apply_time_shift_torch(waves: Tensor, draws: Mapping[str, Tensor]) -> Tensor:
    """Circular shift of each row by ``shift_samples`` (``torch.roll`` per row): (B, T) → (B, T).

    Draw keys: ``applied``, ``shift_samples``.
    """
    import torch

    n_samples = waves.shape[1]
    t = torch.arange(n_samples, device=waves.device)[None, :]
    index = torch.remainder(t - draws["shift_samples"].to(torch.int64)[:, None], n_samples)
    return torch.where(draws["applied"].to(torch.bool)[:, None], torch.gather(waves, 1, index),
                       waves)


SPEC = AugmentationSpec(
    "time_shift", TimeShiftParams, draw_time_shift, apply_time_shift, cheap=True,
    cpu_ms_per_view=0.018, torch_function=apply_time_shift_torch,
    preset_overrides={"clar-code": {"p": 0.5, "max_shift_seconds": 0.5}},
)
time_shift = SPEC.function
