"""Band-limited resampling of a batch in torch, one ratio per row, as soxr ``HQ`` does it.

Row b's output sample t is its input at position ``t * ratio[b]``, low-passed below the lower
of the two Nyquist rates. In the frequency domain of an output period of P samples, output bin
k is the input's DTFT at ``ω_k = 2π k / (ratio[b] P)``, times the pass band's gain and
``1 / ratio[b]`` (sample density); one inverse real FFT gives the samples. The pass band
follows soxr ``HQ``: flat to 0.935 of the lower Nyquist, a raised-cosine edge to 0.985 (soxr
measures -0.7 / -7.7 / -30 dB at 0.94 / 0.96 / 0.98 of Nyquist, this -0.2 / -6 / -32 dB).

The DTFT at each row's own frequencies is a type-2 non-uniform FFT: the input, divided by the
kernel's transform (centred on the clip, so that the division stays far from its tails), is
transformed once on a grid of U >= 2L points, and every wanted frequency is read from the
W = 6 grid values around it weighted by the "exponential of semicircle" kernel
``exp(β (sqrt(1 - t²) - 1))`` (Barnett, Magland and af Klinteberg, SIAM J. Sci. Comput. 2019,
the kernel of FINUFFT; β = 2.3 W for an oversampling of 2). Its relative error is about
1e-5, below float32 round-off of the FFTs that follow. Against evaluating the DTFT by a
chirp-z transform (three complex FFTs of L + P/2 points per row) it costs one real FFT of U
points and a gather of W values per output bin.

Everything runs in float32 except the frequencies and phases, which are formed in float64 (a
clip's centre phase ``ω_k L / 2`` is thousands of radians) and wrapped before they become
float32. No step loops over rows: rows differ only in index, weight and gain tensors.

Legend: B rows, L input samples (the batch's longest), U the NUFFT grid, K output bins kept,
P the output period, W kernel taps.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

#: The passband edge of the resampler, as fractions of the lower of the two Nyquist rates.
PASSBAND = (0.935, 0.985)
#: Output samples of zeros the period keeps beyond the output, against wrap-around.
GUARD = 512
#: Kernel taps per output bin and the kernel's shape parameter (FINUFFT's for oversampling 2).
TAPS = 6
BETA = 2.3 * TAPS
_TWO_PI = 2.0 * math.pi


def fft_size(n: int) -> int:
    """The smallest ``f * 2**k >= n`` with f in 1, 3, 5, 9, 15 (fast FFT sizes on CPU and CUDA)."""
    sizes = [f << max(0, math.ceil(math.log2(n / f))) for f in (1, 3, 5, 9, 15)]
    return min(size for size in sizes if size >= n)


@lru_cache(maxsize=1)
def _kernel_transform_table() -> tuple[np.ndarray, np.ndarray]:
    """``H(x) = ∫_{-1}^{1} φ(s) cos(x s) ds`` of the kernel φ on a fine grid of x (float64).

    The deconvolution needs H at ``x = a m`` for sample offsets m from the clip's centre, with
    ``a = π W / U``; an oversampling of at least 2 keeps x below ``π W / 4``. Gauss-Legendre
    quadrature of 200 nodes, interpolated linearly between 4,097 points (error < 1e-7).
    """
    nodes, weights = np.polynomial.legendre.leggauss(200)
    kernel = np.exp(BETA * (np.sqrt(1.0 - nodes ** 2) - 1.0))
    x = np.linspace(0.0, math.pi * TAPS / 4 * 1.01, 4097)
    return x, np.cos(np.outer(x, nodes)) @ (weights * kernel)


def _deconvolution(in_length: int, grid: int, device: torch.device) -> Tensor:
    """``1 / ((U / 2π) a H(a m))`` for m = n - L // 2, n in [0, L): (L,) float32."""
    a = math.pi * TAPS / grid
    offsets = np.arange(in_length, dtype=np.float64) - in_length // 2
    x, table = _kernel_transform_table()
    transform = (grid / _TWO_PI) * a * np.interp(np.abs(offsets) * a, x, table)
    return torch.as_tensor((1.0 / transform).astype(np.float32), device=device)


def _grid_spectrum(waves: Tensor, grid: int) -> tuple[Tensor, Tensor]:
    """The centred, deconvolved input's real FFT on U points, TAPS mirrored bins on each side.

    Returns:
        ``(real, imag)``, each (B, U / 2 + 1 + 2 TAPS) float32: grid bin j at column
        ``TAPS + j`` for j in [-TAPS, U / 2 + TAPS] (bin -j and bin U - j are the conjugates of
        bin j).
    """
    batch, in_length = waves.shape
    deconvolution, centre = _deconvolution(in_length, grid, waves.device), in_length // 2
    centred = waves.new_zeros(batch, grid)  # sample centre + m at m mod U
    torch.mul(waves[:, centre:], deconvolution[centre:], out=centred[:, :in_length - centre])
    torch.mul(waves[:, :centre], deconvolution[:centre], out=centred[:, grid - centre:])
    spectrum = torch.view_as_real(torch.fft.rfft(centred, dim=1))  # (B, U/2 + 1, 2)
    half = grid // 2
    parts = spectrum.new_empty(2, batch, half + 1 + 2 * TAPS)
    parts[:, :, TAPS:TAPS + half + 1] = spectrum.permute(2, 0, 1)
    parts[:, :, :TAPS] = parts[:, :, TAPS + 1:2 * TAPS + 1].flip(2)  # bins -TAPS .. -1
    parts[:, :, TAPS + half + 1:] = parts[:, :, half:half + TAPS].flip(2)  # U/2 + 1 .. U/2 + TAPS
    parts[1, :, :TAPS].neg_()
    parts[1, :, TAPS + half + 1:].neg_()
    return parts[0], parts[1]


def _read_bins(grid_spectrum: tuple[Tensor, Tensor], positions: Tensor) -> tuple[Tensor, Tensor]:
    """Interpolate each row's grid spectrum at its positions (grid units): (B, K) → 2 × (B, K).

    Args:
        grid_spectrum: :func:`_grid_spectrum`'s real and imaginary parts.
        positions: (B, K) float64 positions in grid bins, in [0, U / 2].
    """
    real, imag = grid_spectrum
    batch, n_bins = positions.shape
    whole = torch.floor(positions)
    fraction = (positions - whole).to(torch.float32).reshape(-1)  # (B K,)
    # Tap m reads grid bin floor(p) - W/2 + 1 + m, at a distance fraction + W/2 - 1 - m from p.
    width = real.shape[1]
    rows = torch.arange(batch, device=positions.device)[:, None] * width
    first = (whole.to(torch.int64) + (TAPS - TAPS // 2 + 1) + rows).reshape(-1)
    taps = torch.arange(TAPS // 2 - 1, -TAPS // 2 - 1, -1, device=positions.device)
    t = (fraction[None, :] + taps[:, None]) * (2.0 / TAPS)  # (W, B K) in (-1, 1]
    weights = t.mul_(t).neg_().add_(1.0).clamp_(min=0.0).sqrt_().sub_(1.0).mul_(BETA).exp_()
    flat_real, flat_imag = real.reshape(-1), imag.reshape(-1)
    out_real, out_imag = fraction.new_zeros(batch * n_bins), fraction.new_zeros(batch * n_bins)
    for tap in range(TAPS):  # over the kernel's taps, never rows
        out_real.addcmul_(flat_real[tap:].index_select(0, first), weights[tap])
        out_imag.addcmul_(flat_imag[tap:].index_select(0, first), weights[tap])
    return out_real.reshape(batch, n_bins), out_imag.reshape(batch, n_bins)


def resample(waves: Tensor, lengths: np.ndarray, ratios: np.ndarray, out_length: int
             ) -> Tensor:
    """Band-limited resampling of each row by its own ratio: (B, L) → (B, out_length).

    Output sample t of row b is row b's signal (zero outside ``[0, lengths[b])``) at input
    position ``t * ratios[b]``, low-passed below the lower of the two Nyquist rates with
    soxr ``HQ``'s edge (:data:`PASSBAND`); soxr's ``resample(x, in_rate, out_rate)`` has
    ``ratio = in_rate / out_rate``.

    Args:
        waves: (B, L) float32, zero after each row's length.
        lengths: (B,) int64 valid lengths on the host.
        ratios: (B,) float64 input samples per output sample on the host.
        out_length: T, output samples per row.
    """
    device = waves.device
    in_length = max(int(lengths.max()), 1)
    # P: output samples of one period, which must hold every row's whole input and a guard.
    period = fft_size(max(out_length, int(np.ceil((lengths / ratios).max()))) + GUARD)
    grid = fft_size(max(2 * in_length, 4 * TAPS))  # the mirrors need U / 2 > TAPS
    # Output bins below the pass band's end: at 0.5 P min(1, ratio) PASSBAND[1] of row b.
    edge = 0.5 * period * np.minimum(1.0, ratios)  # (B,) the lower Nyquist, in output bins
    n_bins = min(period // 2 + 1, int(np.ceil(PASSBAND[1] * edge.max())) + 1)  # K
    k = torch.arange(n_bins, device=device, dtype=torch.float64)[None, :]
    ratio = torch.as_tensor(ratios, device=device, dtype=torch.float64)[:, None]
    positions = k * (grid / period) / ratio  # ω_k in grid bins, ω_k = 2π k / (ratio P)
    # K is the batch's: a row with a lower pass band reads past its own Nyquist (U / 2), where
    # its gain is zero; those positions are held at U / 2.
    positions = torch.clamp(positions, max=grid / 2)
    real, imag = _read_bins(_grid_spectrum(waves[:, :in_length], grid), positions)
    # Undo the centring (a delay of L // 2 samples: a phase of -ω_k L // 2), and apply the pass
    # band's gain over 1 / ratio.
    turns = positions * ((in_length // 2) / grid)
    centre = ((turns - torch.floor(turns)) * _TWO_PI).to(torch.float32)
    ramp = torch.clamp((k / torch.as_tensor(edge, device=device)[:, None] - PASSBAND[0])
                       / (PASSBAND[1] - PASSBAND[0]), 0.0, 1.0)
    gain = (torch.cos(0.5 * math.pi * ramp) ** 2 / ratio).to(torch.float32)
    cos, sin = torch.cos(centre).mul_(gain), torch.sin(centre).mul_(gain)
    spectrum = torch.stack([real * cos + imag * sin, imag * cos - real * sin], dim=-1)
    return torch.fft.irfft(torch.view_as_complex(spectrum), n=period, dim=1)[:, :out_length]


__all__ = ["PASSBAND", "fft_size", "resample"]
