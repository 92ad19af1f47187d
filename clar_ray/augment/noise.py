"""Counter-based noise: the same numbers from numpy on the CPU and torch on the device.

A noise stream is keyed by a 32-bit integer drawn from a clip's generator; number ``t`` of the
stream is ``mix(mix(t) ^ key)`` with the 32-bit "lowbias32" integer hash, turned into a
uniform in (0, 1] with 24 bits, and Gaussian numbers come from Box-Muller on pairs of them.
Nothing depends on the batch the clip is in, and :mod:`clar_ray.augment.batch_noise` computes
the same integers in torch, so a clip gets the same noise wherever it is augmented.

Legend: B streams (clips), n numbers per stream.
"""

from __future__ import annotations

import numpy as np


def _mix32(x: np.ndarray) -> np.ndarray:
    """A 32-bit integer hash (the "lowbias32" finaliser) on uint32 arrays (wrapping)."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def hash_uniform(keys: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    """Uniform numbers in (0, 1] from a counter-based hash.

    Args:
        keys: (B,) integer keys in [0, 2**32).
        n: Numbers per key.
        offset: First counter (separates streams of the same key).

    Returns:
        (B, n) float32 ``((h >> 8) + 0.5) / 2**24`` of ``h = mix(mix(counter) ^ key)``;
        element (b, t) depends only on ``keys[b]`` and ``offset + t``.
    """
    counters = _mix32(np.arange(offset, offset + n, dtype=np.uint32))  # (n,)
    bits = _mix32(counters[None, :] ^ np.asarray(keys).astype(np.uint32)[:, None])  # (B, n)
    return ((bits >> np.uint32(8)).astype(np.float32) + np.float32(0.5)) * np.float32(2.0**-24)


def hash_normal(keys: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """Standard normal numbers at positions ``[start, start + n)`` of each key's stream.

    Position ``t`` is Box-Muller on the uniforms of counters ``2t`` and ``2t + 1``, so any
    stretch of a stream can be computed on its own: (B,) keys → (B, n) float32.
    """
    u = hash_uniform(keys, 2 * n, 2 * start)
    return np.sqrt(np.float32(-2.0) * np.log(u[:, 0::2])) * np.cos(
        np.float32(2 * np.pi) * u[:, 1::2])


def unit_rms(x: np.ndarray) -> np.ndarray:
    """Scale each row to unit root-mean-square: (B, n) → (B, n) float32."""
    rms = np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=-1, keepdims=True))
    return x / np.maximum(rms, 1e-12).astype(np.float32)


def colored_noise(keys: np.ndarray, n: int, exponents: np.ndarray) -> np.ndarray:
    """Noise with power spectrum ∝ 1/f**beta, scaled to unit RMS.

    Args:
        keys: (B,) noise keys.
        n: Samples per row.
        exponents: (B,) beta per row: 0 white (returned as drawn), 1 pink, 2 brown.

    Returns:
        (B, n) float32 with unit RMS; coloured rows have no DC component.
    """
    out = hash_normal(keys, n)
    k = np.maximum(np.arange(n // 2 + 1, dtype=np.float32), 1)  # (F,)
    for row, beta in enumerate(np.asarray(exponents, dtype=np.float32)):
        if beta > 0:  # one row at a time: a batched FFT may round differently per batch
            gain = k ** (-0.5 * beta)
            gain[0] = 0.0
            out[row] = np.fft.irfft(np.fft.rfft(out[row]) * gain, n=n)
    return unit_rms(out)


def snr_scale(waves: np.ndarray, snr_db: np.ndarray) -> np.ndarray:
    """(B, 1) float32 noise RMS ``rms(row) * 10**(-snr_db / 20)`` of (B, T) clips at (B,) SNRs."""
    rms = np.sqrt(np.mean(np.square(waves, dtype=np.float64), axis=1, keepdims=True))
    return (rms * 10.0 ** (-np.asarray(snr_db, dtype=np.float64)[:, None] / 20)).astype(
        np.float32)
