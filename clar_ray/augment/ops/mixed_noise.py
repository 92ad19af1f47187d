"""Mixed noise: additive noise of a colour drawn at random (generated, not read from files).

The paper (CLAR §3.1): white, pink or brown noise at a random SNR (0-20 dB, as for white
noise). The official code (``clar-code`` preset) picks uniformly among brown, pink and fan
noise read from files, white noise, and nothing; file noise is mixed as
``clip(x * U(0.5, 1.2)[t] + n * U(0, 0.9)[t], 0, 1)`` (per-sample gains, the result clipped to
[0, 1]); white noise is added at an SNR. Here pink and brown noise are generated
(peak-normalised, as a noise file would be) and the fan recording, which is not public, is
dropped: brown, pink, white, none with 1/4 each.

Legend: B clips in a batch, T samples per clip.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from clar_ray.augment.noise import colored_noise, hash_uniform, snr_scale
from clar_ray.augment.spec import (
    AugmentationSpec,
    Draw,
    Draws,
    as_batch,
    check_choices,
    check_non_negative,
    check_probability,
    check_range,
    noise_key,
    uniform,
)

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

#: Noise colours by id, with their spectral exponent (power ∝ 1/f**beta).
NOISE_COLORS = ("white", "pink", "brown", "none")
NOISE_EXPONENTS = (0.0, 1.0, 2.0, 0.0)


@dataclasses.dataclass(frozen=True)
class MixedNoiseParams:
    """Additive noise of a colour drawn at random (generated, not read from files).

    Attributes:
        p: Probability of applying the augmentation.
        min_snr_db: Lowest SNR of the ``snr`` style (and of white noise in ``clar-code``).
        max_snr_db: Highest SNR.
        snr_step_db: 0 draws a continuous SNR; k > 0 draws ``min + k * i``.
        colors: Colours drawn uniformly: ``white``, ``pink`` (1/f), ``brown`` (1/f**2),
            ``none`` (clip unchanged).
        style: ``snr`` adds the noise at the drawn SNR; ``clar-code`` mixes pink and brown
            noise as the official code does (see this module's docstring).
    """

    p: float = 1.0
    min_snr_db: float = 0.0
    max_snr_db: float = 20.0
    snr_step_db: float = 0.0
    colors: tuple[str, ...] = ("white", "pink", "brown")
    style: str = "snr"

    def __post_init__(self) -> None:
        check_probability("p", self.p)
        check_range("min_snr_db", self.min_snr_db, "max_snr_db", self.max_snr_db)
        check_non_negative("snr_step_db", self.snr_step_db)
        check_choices("colors", self.colors, NOISE_COLORS)
        if self.style not in ("snr", "clar-code"):
            raise ValueError(f"style must be 'snr' or 'clar-code', got {self.style!r}")


def draw_mixed_noise(rng: np.random.Generator, n_samples: int, sample_rate: int,
                     params: MixedNoiseParams) -> Draw:
    """Draw one clip's mixed noise: ``applied``, ``color`` (id), ``snr_db``, ``key``, ``style``."""
    applied = bool(rng.random() < params.p)
    color = NOISE_COLORS.index(params.colors[int(rng.integers(len(params.colors)))])
    snr_db = uniform(rng, params.min_snr_db, params.max_snr_db, params.snr_step_db)
    return {"applied": applied, "color": color, "snr_db": snr_db, "key": noise_key(rng),
            "clar_code": params.style == "clar-code"}


def apply_mixed_noise(waves: np.ndarray, draws: Draws, sample_rate: int) -> np.ndarray:
    """Add white, pink or brown noise (or none) per row: (B, T) → (B, T).

    ``snr`` rows add unit-RMS noise at the row's SNR. ``clar_code`` rows follow the official
    code: pink and brown noise ``n`` (peak-normalised) is mixed as
    ``clip(x * U(0.5, 1.2)[t] + n * U(0, 0.9)[t], 0, 1)`` with fresh gains per sample, white
    noise is added at the SNR unclipped.
    """
    waves = as_batch(waves)
    out = waves.copy()
    n_samples = waves.shape[1]
    color = np.asarray(draws["color"], dtype=np.int64)
    rows = np.flatnonzero(np.asarray(draws["applied"], dtype=bool)
                          & (color != NOISE_COLORS.index("none")))
    if not rows.size:
        return out
    keys = np.asarray(draws["key"])[rows]
    noise = colored_noise(keys, n_samples, np.asarray(NOISE_EXPONENTS)[color[rows]])
    out[rows] += noise * snr_scale(waves[rows], np.asarray(draws["snr_db"])[rows])
    clar = np.asarray(draws["clar_code"], dtype=bool)[rows] & (color[rows] != 0)
    if clar.any():
        peak = np.max(np.abs(noise[clar]), axis=1, keepdims=True)
        signal_gain = 0.5 + 0.7 * hash_uniform(keys[clar], n_samples, 2 * n_samples)
        noise_gain = 0.9 * hash_uniform(keys[clar], n_samples, 3 * n_samples)
        out[rows[clar]] = np.clip(waves[rows[clar]] * signal_gain
                                  + noise[clar] / peak * noise_gain, 0.0, 1.0)
    return out


def apply_mixed_noise_torch(waves: Tensor, draws: Mapping[str, Tensor]) -> Tensor:
    """Add white, pink or brown noise, or none, per row: (B, T) → (B, T).

    As :func:`apply_mixed_noise`: ``snr`` rows add noise at their SNR, ``clar_code`` rows mix
    pink and brown noise as the official code does and clip to [0, 1].
    Draw keys: ``applied``, ``color`` (index of ``NOISE_COLORS``), ``snr_db``, ``key``,
    ``clar_code``.
    """
    import torch

    import clar_ray.augment.batch_noise as batch_noise

    n_samples = waves.shape[1]
    color = draws["color"].to(torch.int64)
    exponents = torch.tensor(NOISE_EXPONENTS, device=waves.device)[color]
    noise = batch_noise.colored_noise(draws["key"], n_samples, exponents)
    mixed = waves + noise * batch_noise.snr_scale(waves, draws["snr_db"])
    peak = noise.abs().amax(dim=1, keepdim=True)
    signal_gain = 0.5 + 0.7 * batch_noise.hash_uniform(draws["key"], n_samples, 2 * n_samples)
    noise_gain = 0.9 * batch_noise.hash_uniform(draws["key"], n_samples, 3 * n_samples)
    clar = (waves * signal_gain + noise / peak * noise_gain).clamp(0.0, 1.0)
    clar_rows = (draws["clar_code"].to(torch.bool) & (color != 0))[:, None]
    mixed = torch.where(clar_rows, clar, mixed)
    none_rows = (color == NOISE_COLORS.index("none"))[:, None]
    applied = draws["applied"].to(torch.bool)[:, None]
    return torch.where(applied & ~none_rows, mixed, waves)


SPEC = AugmentationSpec(
    "mixed_noise", MixedNoiseParams, draw_mixed_noise, apply_mixed_noise, cheap=True,
    cpu_ms_per_view=0.57, torch_function=apply_mixed_noise_torch,
    preset_overrides={"clar-code": {"p": 0.5, "max_snr_db": 19.0, "snr_step_db": 1.0,
                                    "colors": ("brown", "pink", "white", "none"),
                                    "style": "clar-code"}},
)
mixed_noise = SPEC.function
