"""The batched resampler against its definition, evaluated directly in float64.

Output bin k of row b is the input's DTFT at ``2π k / (ratio P)`` times the pass band's gain
over the ratio; the module evaluates those DTFTs by a non-uniform FFT. Here they are summed
term by term, so the test measures the interpolation alone (soxr agreement is in
test_augment_batch_vocoder.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clar_ray.augment import batch_resample as BR


def _direct(wave: np.ndarray, length: int, ratio: float, out_length: int, period: int
            ) -> np.ndarray:
    """The resampler's definition, summed directly in float64: (L,) → (out_length,)."""
    k = np.arange(period // 2 + 1)
    omega = 2 * np.pi * k / (ratio * period)
    dtft = np.exp(-1j * np.outer(omega, np.arange(length))) @ wave[:length].astype(np.float64)
    edge = 0.5 * period * min(1.0, ratio)
    low, high = BR.PASSBAND
    ramp = np.clip((k / edge - low) / (high - low), 0.0, 1.0)
    gain = np.cos(0.5 * np.pi * ramp) ** 2 / ratio
    return np.fft.irfft(dtft * gain, n=period)[:out_length]


def test_fast_sizes() -> None:
    assert [BR.fft_size(n) for n in (1, 1000, 1025, 3000, 16513)] == [1, 1024, 1152, 3072, 18432]


@pytest.mark.parametrize("spread", ["alike", "mixed", "falling"])
def test_rows_equal_their_definition(spread: str) -> None:
    """Every row, whatever the others' ratios and lengths, within 3e-5 of its peak of the direct
    sum (measured 0.6-1.3e-5 on white noise, the flat spectrum that the kernel's error weighs
    most)."""
    rng = np.random.default_rng(7)
    ratios = np.array([2 ** (-15 / 12), 0.8, 1.0, 1.3, 2 ** (15 / 12)])
    if spread == "alike":
        ratios = np.full(5, 1.19)
    elif spread == "falling":  # the last row's pass band ends lowest
        ratios = ratios[::-1].copy()
    lengths = np.array([1500, 1100, 1500, 900, 1400])
    waves = rng.standard_normal((5, 1500)).astype(np.float32)
    waves[np.arange(1500)[None, :] >= lengths[:, None]] = 0.0
    out_length = 1200
    got = BR.resample(torch.from_numpy(waves), lengths, ratios, out_length).numpy()
    period = BR.fft_size(max(out_length, int(np.ceil((lengths / ratios).max()))) + BR.GUARD)
    for row in range(5):
        want = _direct(waves[row], lengths[row], ratios[row], out_length, period)
        np.testing.assert_allclose(got[row], want, atol=3e-5 * np.abs(want).max())


@pytest.mark.parametrize("length", [7, 40, 100])
def test_clips_shorter_than_the_kernel_and_the_fft_window(length: int) -> None:
    """A few samples in, at the extreme pitch-shift ratios: still the definition."""
    rng = np.random.default_rng(length)
    waves = rng.standard_normal((3, length)).astype(np.float32)
    ratios = np.array([2 ** (15 / 12), 1.0, 2 ** (-15 / 12)])
    lengths, out_length = np.full(3, length), 60
    got = BR.resample(torch.from_numpy(waves), lengths, ratios, out_length).numpy()
    period = BR.fft_size(max(out_length, int(np.ceil((lengths / ratios).max()))) + BR.GUARD)
    for row in range(3):
        want = _direct(waves[row], length, ratios[row], out_length, period)
        np.testing.assert_allclose(got[row], want, atol=3e-5 * np.abs(want).max())
