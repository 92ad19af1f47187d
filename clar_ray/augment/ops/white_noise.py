"""White noise: additive white Gaussian noise at a signal-to-noise ratio drawn in dB.

The paper (CLAR §3.1) gives no SNR range, so the ``paper`` preset uses the official code's
0-20 dB, drawn continuously. The official code (``clar-code`` preset) draws an integer SNR in
{0, ..., 19} dB (``torch.randint(0, 20)``) and scales Gaussian noise by the target RMS; here the
noise is normalised to it exactly.

Legend: B clips in a batch, T samples per clip.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from clar_ray.augment.noise import hash_normal, snr_scale, unit_rms
from clar_ray.augment.spec import (
    AugmentationSpec,
    Draw,
    Draws,
    applied_rows,
    as_batch,
    check_non_negative,
    check_probability,
    check_range,
    noise_key,
    uniform,
)

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor


@dataclasses.dataclass(frozen=True)
class WhiteNoiseParams:
    """Additive white Gaussian noise at a signal-to-noise ratio drawn in dB.

    Attributes:
        p: Probability of applying the augmentation.
        min_snr_db: Lowest SNR (the noise power is the clip's power / 10**(snr/10)).
        max_snr_db: Highest SNR.
        snr_step_db: 0 draws a continuous SNR; k > 0 draws ``min + k * i``.
    """

    p: float = 1.0
    min_snr_db: float = 0.0
    max_snr_db: float = 20.0
    snr_step_db: float = 0.0

    def __post_init__(self) -> None:
        check_probability("p", self.p)
        check_range("min_snr_db", self.min_snr_db, "max_snr_db", self.max_snr_db)
        check_non_negative("snr_step_db", self.snr_step_db)


def draw_white_noise(rng: np.random.Generator, n_samples: int, sample_rate: int,
                     params: WhiteNoiseParams) -> Draw:
    """Draw one clip's white noise: ``applied``, ``snr_db``, ``key``."""
    applied = bool(rng.random() < params.p)
    snr_db = uniform(rng, params.min_snr_db, params.max_snr_db, params.snr_step_db)
    return {"applied": applied, "snr_db": snr_db, "key": noise_key(rng)}


def apply_white_noise(waves: np.ndarray, draws: Draws, sample_rate: int) -> np.ndarray:
    """Add unit-RMS white noise scaled to each row's SNR: (B, T) → (B, T).

    The noise RMS is ``rms(clip) * 10**(-snr_db / 20)``, so a silent clip stays silent.
    """
    waves = as_batch(waves)
    out = waves.copy()
    rows = applied_rows(draws)
    if rows.size:
        noise = unit_rms(hash_normal(np.asarray(draws["key"])[rows], waves.shape[1]))
        out[rows] += noise * snr_scale(waves[rows], np.asarray(draws["snr_db"])[rows])
    return out


def apply_white_noise_torch(waves: Tensor, draws: Mapping[str, Tensor]) -> Tensor:
    """Add white noise of RMS ``rms(row) * 10**(-snr_db / 20)``: (B, T) → (B, T).

    Draw keys: ``applied``, ``snr_db``, ``key``.
    """
    import torch

    import clar_ray.augment.batch_noise as batch_noise

    noise = batch_noise.unit_rms(batch_noise.hash_normal(draws["key"], waves.shape[1]))
    scale = batch_noise.snr_scale(waves, draws["snr_db"])
    return torch.where(draws["applied"].to(torch.bool)[:, None], waves + noise * scale, waves)


SPEC = AugmentationSpec(
    "white_noise", WhiteNoiseParams, draw_white_noise, apply_white_noise, cheap=True,
    cpu_ms_per_view=0.44, torch_function=apply_white_noise_torch,
    preset_overrides={"clar-code": {"p": 0.5, "max_snr_db": 19.0, "snr_step_db": 1.0}},
)
white_noise = SPEC.function
