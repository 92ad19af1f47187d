"""Time mask: one segment of random position and length replaced by low noise or a constant.

The paper (CLAR §3.1): a mask of up to 1/8 of the clip, filled with low Gaussian noise or a
constant. The official code (``clar-code`` preset) masks exactly 1/8 of the clip, fills it
with N(0, 0.01) noise, and applies it only on an extra inner coin flip (p 0.5, so 0.25 in all).
It also writes the mask into its input in place, so the second view of a clip inherits the
first view's mask; that bug is not reproduced.

Legend: B clips in a batch, T samples per clip.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from clar_ray.augment.noise import hash_normal
from clar_ray.augment.spec import (
    AugmentationSpec,
    Draw,
    Draws,
    applied_rows,
    as_batch,
    check_choices,
    check_interval,
    check_non_negative,
    check_probability,
    check_range,
    noise_key,
    samples_between,
)

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

#: Fills of ``time_mask``.
MASK_FILLS = ("noise", "constant")


@dataclasses.dataclass(frozen=True)
class TimeMaskParams:
    """One segment of random position and length replaced by low noise or a constant.

    Attributes:
        p: Probability of applying the augmentation.
        min_mask_fraction: Shortest mask, as a fraction of the clip.
        max_mask_fraction: Longest mask (the paper: 1/8 of the clip).
        fills: Fills drawn uniformly: ``noise`` (Gaussian, ``noise_std``) or ``constant``.
        noise_std: Standard deviation of the noise fill (full scale 1).
        constant_value: Value of the constant fill.
    """

    p: float = 1.0
    min_mask_fraction: float = 0.0
    max_mask_fraction: float = 0.125
    fills: tuple[str, ...] = ("noise", "constant")
    noise_std: float = 0.01
    constant_value: float = 0.0

    def __post_init__(self) -> None:
        check_probability("p", self.p)
        check_interval("min_mask_fraction", self.min_mask_fraction, 0.0, 1.0)
        check_interval("max_mask_fraction", self.max_mask_fraction, 0.0, 1.0)
        check_range("min_mask_fraction", self.min_mask_fraction,
                    "max_mask_fraction", self.max_mask_fraction)
        check_choices("fills", self.fills, MASK_FILLS)
        check_non_negative("noise_std", self.noise_std)


def draw_time_mask(rng: np.random.Generator, n_samples: int, sample_rate: int,
                   params: TimeMaskParams) -> Draw:
    """Draw one clip's mask: ``applied``, ``start``, ``length``, its fill, ``key``."""
    applied = bool(rng.random() < params.p)
    length = samples_between(rng, params.min_mask_fraction, params.max_mask_fraction, n_samples)
    start = int(rng.integers(0, n_samples - length + 1))
    fill_noise = params.fills[int(rng.integers(len(params.fills)))] == "noise"
    return {"applied": applied, "start": start, "length": length, "fill_noise": fill_noise,
            "noise_std": params.noise_std, "constant_value": params.constant_value,
            "key": noise_key(rng)}


def apply_time_mask(waves: np.ndarray, draws: Draws, sample_rate: int) -> np.ndarray:
    """Replace ``[start, start + length)`` of each row by its fill: (B, T) → (B, T).

    The noise fill at sample t is ``noise_std * hash_normal(key)[t]``.
    """
    waves = as_batch(waves)
    out = waves.copy()
    for row in applied_rows(draws):
        start, length = int(draws["start"][row]), int(draws["length"][row])
        if length == 0:
            continue
        if bool(draws["fill_noise"][row]):
            noise = hash_normal(np.asarray(draws["key"][row:row + 1]), length, start)[0]
            out[row, start:start + length] = float(draws["noise_std"][row]) * noise
        else:
            out[row, start:start + length] = float(draws["constant_value"][row])
    return out


def apply_time_mask_torch(waves: Tensor, draws: Mapping[str, Tensor]) -> Tensor:
    """Replace ``[start, start + length)`` of each row by noise or a constant: (B, T) → (B, T).

    Draw keys: ``applied``, ``start``, ``length``, ``fill_noise``, ``noise_std``,
    ``constant_value``, ``key``.
    """
    import torch

    import clar_ray.augment.batch_noise as batch_noise

    n_samples = waves.shape[1]
    t = torch.arange(n_samples, device=waves.device)[None, :]
    start = draws["start"].to(torch.int64)[:, None]
    inside = (t >= start) & (t < start + draws["length"].to(torch.int64)[:, None])
    noise = (batch_noise.hash_normal(draws["key"], n_samples)
             * draws["noise_std"].to(torch.float32)[:, None])
    fill = torch.where(draws["fill_noise"].to(torch.bool)[:, None], noise,
                       draws["constant_value"].to(torch.float32)[:, None])
    return torch.where(inside & draws["applied"].to(torch.bool)[:, None], fill, waves)


SPEC = AugmentationSpec(
    "time_mask", TimeMaskParams, draw_time_mask, apply_time_mask, cheap=True,
    cpu_ms_per_view=0.035, torch_function=apply_time_mask_torch,
    preset_overrides={"clar-code": {"p": 0.25, "min_mask_fraction": 0.125, "fills": ("noise",)}},
)
time_mask = SPEC.function
