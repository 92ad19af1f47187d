"""The counter-based noise of :mod:`clar_ray.augment.noise` in torch, on any device.

The same 32-bit integer hash on int64 tensors (bit-identical uniforms), the same Box-Muller
pairs and the same 1/f**beta shaping, so a clip's noise does not depend on the device. A
batched CUDA FFT, used for pink and brown noise, may round differently with the batch size.

Legend: B streams (clips), n numbers per stream, F frequency bins.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_MASK32 = 0xFFFFFFFF


def _mul32(x: Tensor, constant: int) -> Tensor:
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK32


def _mix32(x: Tensor) -> Tensor:
    """The integer hash of :mod:`clar_ray.augment.noise` on int64 tensors (bit-identical)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def hash_uniform(keys: Tensor, n: int, offset: int = 0) -> Tensor:
    """Uniform numbers in (0, 1]: (B,) int64 keys → (B, n) float32, bit-identical to numpy."""
    counters = _mix32(torch.arange(offset, offset + n, device=keys.device, dtype=torch.int64))
    bits = _mix32(counters[None, :] ^ keys.to(torch.int64)[:, None])
    return ((bits >> 8).to(torch.float32) + 0.5) * 2.0**-24


def hash_normal(keys: Tensor, n: int) -> Tensor:
    """Standard normal numbers, position t from counters 2t and 2t + 1: (B,) → (B, n) float32."""
    u = hash_uniform(keys, 2 * n, 0)
    return torch.sqrt(-2.0 * torch.log(u[:, 0::2])) * torch.cos(2.0 * math.pi * u[:, 1::2])


def unit_rms(x: Tensor) -> Tensor:
    """Scale each row to unit root-mean-square: (B, n) → (B, n)."""
    return x / x.square().mean(dim=-1, keepdim=True).sqrt().clamp_min(1e-12)


def colored_noise(keys: Tensor, n: int, exponents: Tensor) -> Tensor:
    """Unit-RMS noise with power ∝ 1/f**beta per row (beta 0 white, 1 pink, 2 brown): (B, n)."""
    white = hash_normal(keys, n)
    k = torch.arange(n // 2 + 1, device=keys.device, dtype=torch.float32)  # (F,)
    beta = exponents.to(torch.float32)[:, None]  # (B, 1)
    gain = torch.where(k > 0, k.clamp_min(1.0) ** (-0.5 * beta), torch.zeros_like(beta))
    shaped = torch.fft.irfft(torch.fft.rfft(white, dim=-1) * gain, n=n, dim=-1)
    return unit_rms(torch.where(beta > 0, shaped, white))


def snr_scale(waves: Tensor, snr_db: Tensor) -> Tensor:
    """(B, 1) noise RMS ``rms(row) * 10**(-snr_db / 20)`` of (B, T) clips at (B,) SNRs."""
    rms = waves.square().mean(dim=1, keepdim=True).sqrt()
    return rms * 10.0 ** (-snr_db.to(torch.float32)[:, None] / 20)


__all__ = ["colored_noise", "hash_normal", "hash_uniform", "snr_scale", "unit_rms"]
