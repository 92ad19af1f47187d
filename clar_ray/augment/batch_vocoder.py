"""Time stretch and pitch shift of a whole batch in torch, one random rate per row.

The same algorithm as :mod:`clar_ray.augment.vocoder` (librosa's: STFT with 2048 points, hop
512, Hann, centred with zero padding → phase vocoder → windowed overlap-add), on a batch
``(B, T)`` at once and on any device:

* **STFT** of the batch: frames by ``unfold``, one real FFT.
* **Phase vocoder** on per-row time-step grids: output frame ``i`` of row ``b`` reads input
  position ``i * rate[b]``; rows have ``ceil(N / rate[b])`` frames, the batch the most of them
  and the rest are zero. The grids (indices and fractions) are computed on the host in float64
  exactly as numpy's ``arange`` computes them, so a row's frames are those of the numpy path.
  The phase accumulation is one ``cumsum`` over frames (float32, of increments within 2π of
  zero; the numpy path accumulates in float64: crop/pad results differ by ≤ 3e-4 on FSDD).
* **Inverse STFT** by overlap-add in hop-sized blocks, each row normalised by its own sum of
  squared windows (a table indexed by the row's frame count), cut to ``round(T / rate[b])``.
* **Resampling** (pitch shift, and time stretch with ``restore_length="resample"``): a
  band-limited interpolation evaluated exactly where soxr puts its output samples. Row ``b``'s
  output sample ``t`` is the input at position ``t * ratio[b]``; its spectrum is the input's
  DTFT at the frequencies ``2πk / (ratio[b] * P)`` of a common output FFT of size P, which a
  chirp-z transform (Bluestein: the per-row frequency step becomes per-row chirps and one
  batched FFT convolution) gives for every row at once; then one inverse real FFT. The
  passband follows soxr ``HQ`` (flat to 0.935 of the lower Nyquist, a raised-cosine edge to
  0.985: soxr measures -0.7 / -7.7 / -30 dB at 0.94 / 0.96 / 0.98, this -0.2 / -6 / -32 dB).

No step loops over rows: row-dependent quantities are index grids, masks and chirps, and the
number of torch operations a call dispatches does not depend on B (a test counts them). Rows
whose draw is a no-op (not applied, rate 1, 0 semitones) are left out by ``index_select`` and
the others put back by ``index_copy``, in :data:`ROW_GROUPS` groups of similar rates (two on
CPU, one on CUDA). The draws stay on the host (the grids are sized from them without a device
sync); only index, fraction, mask, gain and chirp tensors go to the device.

Precision: the whole path runs in float32 (complex64) whatever the input dtype or an
enclosing autocast (bf16 would wreck the phase accumulation and FFTs need float32 on CPU);
chirp phases are formed in float64 and wrapped before they become float32. The functions
return float32; ``BatchAugmenter`` casts back to the input's dtype.

Legend: B rows, T samples, N input frames, M output frames (the batch's most), F = 1025 bins,
Q hop-sized blocks, L stretched length, K kept output bins, P output FFT size, C convolution
length of the chirp-z transform.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from clar_ray.augment.vocoder import HOP_LENGTH, N_FFT

_BLOCKS = N_FFT // HOP_LENGTH  # 4 hop-sized blocks per frame
_TWO_PI = 2.0 * math.pi
#: The passband edge of the resampler, as fractions of the lower of the two Nyquist rates.
PASSBAND = (0.935, 0.985)
#: Output samples of zeros the resampler's period keeps beyond T, against wrap-around.
_GUARD = 512


# --------------------------------------------------------------------------- helpers


def _window(device: torch.device) -> Tensor:
    """The periodic Hann window of the numpy path, float32: (N_FFT,)."""
    n = torch.arange(N_FFT, device=device, dtype=torch.float64)
    return (0.5 - 0.5 * torch.cos(_TWO_PI * n / N_FFT)).to(torch.float32)


def _advance(device: torch.device) -> Tensor:
    """Expected phase advance per hop of each bin, wrapped to [-π, π), float32: (F,)."""
    bins = HOP_LENGTH * np.linspace(0, np.pi, N_FFT // 2 + 1)
    return torch.as_tensor((bins - 2 * np.pi * np.round(bins / (2 * np.pi))).astype(np.float32),
                           device=device)


def _wrap(x: Tensor) -> Tensor:
    return x - _TWO_PI * torch.round(x / _TWO_PI)


def _fft_size(n: int) -> int:
    """The smallest ``f * 2**k >= n`` with f in 1, 3, 5, 9, 15 (fast FFT sizes on CPU and CUDA)."""
    sizes = [f << max(0, math.ceil(math.log2(n / f))) for f in (1, 3, 5, 9, 15)]
    return min(size for size in sizes if size >= n)


def _host(values: Tensor | np.ndarray, dtype: type) -> np.ndarray:
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=dtype)


# --------------------------------------------------------------------------- STFT


def stft(waves: Tensor) -> Tensor:
    """The STFT of librosa per row (centred, zero padding): (B, T) → (B, N, F) complex64."""
    padded = torch.nn.functional.pad(waves, (N_FFT // 2, N_FFT // 2))
    frames = padded.unfold(1, N_FFT, HOP_LENGTH) * _window(waves.device)  # (B, N, N_FFT)
    return torch.fft.rfft(frames, dim=-1)


def frame_grid(n_frames: int, rates: np.ndarray, max_frames: int | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's input positions ``i * rate``, as numpy's ``arange(0, N, rate)``.

    Args:
        n_frames: N, input frames.
        rates: (B,) float64 rates.
        max_frames: Keep at most this many output frames (the rest are not needed).

    Returns:
        ``(index (B, M) int64, fraction (B, M) float32, frames (B,) int64)``: the whole part
        (clamped to N, past a row's last frame), the fractional part, and each row's frame
        count ``ceil(N / rate)``.
    """
    frames = np.ceil(n_frames / rates).astype(np.int64)  # len(np.arange(0, N, rate))
    m = int(frames.max()) if max_frames is None else min(int(frames.max()), max_frames)
    steps = np.arange(m, dtype=np.float64)[None, :] * rates[:, None]  # (B, M)
    index = np.minimum(steps.astype(np.int64), n_frames)
    return index, (steps % 1.0).astype(np.float32), frames


def phase_vocoder(spectrum: Tensor, index: Tensor, fraction: Tensor, valid: Tensor) -> Tensor:
    """The phase vocoder of librosa on per-row grids: (B, N, F) → (B, M, F) complex64.

    Args:
        spectrum: (B, N, F) complex64.
        index: (B, M) int64 whole input positions (<= N).
        fraction: (B, M) float32 fractional parts.
        valid: (B, M) bool, the frames each row has; the others are zero.
    """
    batch, n_frames, n_bins = spectrum.shape
    n_in, n_out = n_frames + 2, index.shape[1]  # two zero frames past the end, as librosa
    # Real ops on contiguous parts: complex and strided ones are several times slower on CPU.
    parts = torch.view_as_real(spectrum)
    real, imag = parts[..., 0].contiguous(), parts[..., 1].contiguous()
    polar = torch.zeros(batch, n_in, 2, n_bins, device=spectrum.device)  # magnitude, angle
    polar[:, :n_frames, 0] = torch.hypot(real, imag)
    polar[:, :n_frames, 1] = torch.atan2(imag, real)
    rows = torch.arange(batch, device=index.device)[:, None] * n_in
    flat = (index + rows).reshape(-1)  # (B M,) rows of polar viewed as (B (N + 2), 2, F)
    table = polar.reshape(batch * n_in, 2, n_bins)
    here = table.index_select(0, flat).reshape(batch, n_out, 2, n_bins)
    there = table.index_select(0, flat + 1).reshape(batch, n_out, 2, n_bins)
    magnitude = torch.lerp(here[:, :, 0], there[:, :, 0], fraction[:, :, None])
    magnitude *= valid[:, :, None]
    # The phase advance, less the expected advance wrapped to [-π, π), plus the expected.
    turn = there[:, :, 1] - here[:, :, 1]  # (B, M, F)
    increment = turn - _TWO_PI * torch.round((turn - _advance(spectrum.device)) / _TWO_PI)
    phase = torch.cumsum(increment, dim=1)
    phase -= increment
    phase += polar[:, :1, 1]  # the first frame's phase
    return torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))


def _window_sums(frames: Tensor, n_blocks: int, device: torch.device) -> Tensor:
    """Each row's sum of squared windows per hop block: (B,) frame counts → (B, Q, HOP)."""
    squared = (_window(device).to(torch.float64) ** 2).reshape(_BLOCKS, HOP_LENGTH)
    cumulative = torch.cat([torch.zeros(1, HOP_LENGTH, device=device, dtype=torch.float64),
                            torch.cumsum(squared, dim=0)])  # (5, HOP): sums of blocks < j
    q = torch.arange(n_blocks, device=device)[None, :]  # block q holds block j of frame q - j
    high = torch.clamp(q + 1, max=_BLOCKS)  # frames q - j >= 0: j <= q
    low = torch.clamp(q - frames[:, None] + 1, min=0, max=_BLOCKS)  # frames q - j < count
    low = torch.minimum(low, high)
    return (cumulative[high] - cumulative[low]).to(torch.float32)  # (B, Q, HOP)


def istft(spectrum: Tensor, frames: Tensor, lengths: Tensor, out_length: int) -> Tensor:
    """Inverse of :func:`stft` per row: (B, M, F) → (B, out_length) float32.

    Windowed overlap-add, each row divided by the sum of its own frames' squared windows, the
    centring removed, and cut to its length (zeros after ``lengths[b]``), as the numpy path.

    Args:
        spectrum: (B, M, F) complex64 (frames past a row's count are ignored).
        frames: (B,) int64 frame counts, on the spectrum's device.
        lengths: (B,) int64 lengths of the rows' results, on the spectrum's device.
        out_length: Samples to return per row.
    """
    batch, n_frames = spectrum.shape[:2]
    blocks = torch.fft.irfft(spectrum, n=N_FFT, dim=-1) * _window(spectrum.device)
    blocks = blocks.reshape(batch, n_frames, _BLOCKS, HOP_LENGTH)
    n_blocks = n_frames + _BLOCKS - 1
    signal = blocks.new_zeros(batch, n_blocks, HOP_LENGTH)
    for j in range(_BLOCKS):  # overlap-add: block j of every frame, for all rows at once
        signal[:, j:j + n_frames] += blocks[:, :, j]
    weight = _window_sums(frames, n_blocks, spectrum.device)
    signal = torch.where(weight > torch.finfo(torch.float32).tiny, signal / weight, signal)
    signal = signal.reshape(batch, -1)[:, N_FFT // 2:N_FFT // 2 + out_length]
    signal = torch.nn.functional.pad(signal, (0, out_length - signal.shape[1]))
    t = torch.arange(out_length, device=signal.device)[None, :]
    return torch.where(t < lengths[:, None], signal, 0.0)


def stretch(waves: Tensor, rates: np.ndarray, out_length: int | None = None
            ) -> tuple[Tensor, np.ndarray]:
    """Phase-vocoder time stretch of each row, pitch kept: (B, T) → (B, L).

    Args:
        waves: (B, T) float32.
        rates: (B,) float64 rates on the host (> 1 faster).
        out_length: L, samples to keep per row (frames that cannot reach them are skipped);
            default the longest row, ``max(round(T / rate))``.

    Returns:
        ``(stretched (B, L), lengths (B,))``: row b is ``vocoder.stretch(waves[b], rates[b])``
        zero-padded or cut to L; ``lengths[b] = round(T / rates[b])``.
    """
    device = waves.device
    n_samples = waves.shape[1]
    lengths = np.round(n_samples / rates).astype(np.int64)  # int(round(T / rate)) per row
    if out_length is None:
        out_length = int(lengths.max())
    spectrum = stft(waves)
    needed = (out_length + N_FFT // 2) // HOP_LENGTH + 1  # frames that reach sample L
    index, fraction, frames = frame_grid(spectrum.shape[1], rates, needed)
    frames_t = torch.as_tensor(frames, device=device)
    valid = torch.arange(index.shape[1], device=device)[None, :] < frames_t[:, None]
    out = phase_vocoder(spectrum, torch.as_tensor(index, device=device),
                        torch.as_tensor(fraction, device=device), valid)
    return istft(out, frames_t, torch.as_tensor(lengths, device=device), out_length), lengths


# --------------------------------------------------------------------------- resampling


def _chirps(ratios: np.ndarray, count: int, period: int, device: torch.device) -> Tensor:
    """``exp(i π m² / (ratio P))`` for m in [0, count) per row: (B, count) complex64."""
    m2 = np.arange(count, dtype=np.float64) ** 2  # exact below 2**53
    phase = np.mod(m2[None, :] * (np.pi / (ratios[:, None] * period)), _TWO_PI)  # float64
    phase_t = torch.as_tensor(phase.astype(np.float32), device=device)
    out = torch.empty(*phase_t.shape, 2, device=device)
    torch.cos(phase_t, out=out[..., 0])
    torch.sin(phase_t, out=out[..., 1])
    return torch.view_as_complex(out)


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
    period = _fft_size(max(out_length, int(np.ceil((lengths / ratios).max()))) + _GUARD)
    n_out_bins = period // 2 + 1  # K
    # Row b's output bin k is the input's DTFT at w = 2π k / (ratio P): Bluestein with
    # k n = (k² + n² - (k - n)²) / 2, X_k = conj(c_k) Σ_n (x_n conj(c_n)) c_(k-n), c_m the chirp.
    size = _fft_size(in_length + n_out_bins - 1)  # C
    chirp = _chirps(ratios, max(in_length, n_out_bins), period, device)  # c_m, m >= 0
    a = waves[:, :in_length] * torch.conj(chirp[:, :in_length])  # (B, L) complex64
    kernel = torch.zeros(waves.shape[0], size, dtype=torch.complex64, device=device)
    kernel[:, :n_out_bins] = chirp[:, :n_out_bins]  # c_m at m and at C - m (c_-m = c_m)
    kernel[:, size - in_length + 1:] = chirp[:, 1:in_length].flip(1)
    conv = torch.fft.ifft(torch.fft.fft(a, n=size) * torch.fft.fft(kernel), n=size)
    spectrum = conv[:, :n_out_bins] * torch.conj(chirp[:, :n_out_bins])  # (B, K)
    # Pass band: below the lower Nyquist, at output bin 0.5 P min(1, ratio).
    edge = 0.5 * period * np.minimum(1.0, ratios)  # (B,)
    k = np.arange(n_out_bins)[None, :] / edge[:, None]
    ramp = np.clip((k - PASSBAND[0]) / (PASSBAND[1] - PASSBAND[0]), 0.0, 1.0)
    gain = np.cos(0.5 * np.pi * ramp) ** 2 / ratios[:, None]  # (B, K), 1/ratio: sample density
    spectrum = spectrum * torch.as_tensor(gain.astype(np.float32), device=device)
    return torch.fft.irfft(spectrum, n=period, dim=1)[:, :out_length]


# --------------------------------------------------------------------------- augmentations


def stretch_time(waves: Tensor, rates: np.ndarray, resample_back: np.ndarray) -> Tensor:
    """Time stretch each row and restore the length T: (B, T) → (B, T) float32.

    Row b equals ``vocoder.stretch_time(waves[b], rates[b], resample_back[b])``: crop or
    zero-pad the end (pitch kept), or resample back to T samples (tempo kept).
    """
    n_samples = waves.shape[1]
    if not resample_back.any():
        return stretch(waves, rates, n_samples)[0]
    stretched, lengths = stretch(waves, rates)
    back = resample(stretched, lengths, lengths / n_samples, n_samples)
    cropped = torch.nn.functional.pad(stretched, (0, max(0, n_samples - stretched.shape[1])))
    rows = torch.as_tensor(resample_back, device=waves.device)[:, None]
    return torch.where(rows, back, cropped[:, :n_samples])


def shift_pitch(waves: Tensor, semitones: np.ndarray) -> Tensor:
    """Pitch shift each row by its ``semitones``, tempo kept: (B, T) → (B, T) float32.

    Row b equals ``vocoder.shift_pitch(waves[b], semitones[b], sample_rate)`` (at any sample
    rate): stretch by ``rate = 2**(-n / 12)``, then resample from ``sample_rate / rate`` to
    ``sample_rate``, a ratio of ``1 / rate``.
    """
    rates = 2.0 ** (-np.asarray(semitones, dtype=np.float64) / 12.0)
    stretched, lengths = stretch(waves, rates)
    return resample(stretched, lengths, 1.0 / rates, waves.shape[1])


#: Rows of a batch are split into this many groups of similar rates on each device type (a
#: loop over groups, not rows): the longest row of a group sets its frame count and FFT sizes,
#: so on CPU, where the padding costs its full price, two groups save about a third. On CUDA
#: one launch for the whole batch is cheaper.
ROW_GROUPS = {"cpu": 2}


def _on_rows(waves: Tensor, rows: np.ndarray, cost: np.ndarray, transform: object) -> Tensor:
    """``transform(selected (R, T), rows)`` on ``rows`` of the batch, in groups by ``cost``."""
    out = waves.to(torch.float32)
    if rows.size == 0:
        return out.clone()
    groups = ROW_GROUPS.get(waves.device.type, 1)
    with torch.autocast(waves.device.type, enabled=False):
        for group in np.array_split(rows[np.argsort(cost[rows], kind="stable")], groups):
            if group.size:
                index = torch.as_tensor(group, device=waves.device)
                changed = transform(out.index_select(0, index), group)  # type: ignore[operator]
                out = out.index_copy(0, index, changed)
    return out


def time_stretch(waves: Tensor, draws: Mapping[str, Tensor | np.ndarray]) -> Tensor:
    """Time stretch each applied row by its ``rate``: (B, T) → (B, T) float32.

    Draw keys (each (B,), on the host): ``applied``, ``rate``, ``resample``.
    """
    rate = _host(draws["rate"], np.float64)
    rows = np.flatnonzero(_host(draws["applied"], np.bool_) & (rate != 1.0))
    back = _host(draws["resample"], np.bool_)
    return _on_rows(waves, rows, -rate, lambda x, r: stretch_time(x, rate[r], back[r]))


def pitch_shift(waves: Tensor, draws: Mapping[str, Tensor | np.ndarray]) -> Tensor:
    """Pitch shift each applied row by its ``semitones``: (B, T) → (B, T) float32.

    Draw keys (each (B,), on the host): ``applied``, ``semitones``.
    """
    semitones = _host(draws["semitones"], np.float64)
    rows = np.flatnonzero(_host(draws["applied"], np.bool_) & (semitones != 0.0))
    return _on_rows(waves, rows, semitones, lambda x, r: shift_pitch(x, semitones[r]))


__all__ = [
    "PASSBAND",
    "frame_grid",
    "istft",
    "phase_vocoder",
    "pitch_shift",
    "resample",
    "shift_pitch",
    "stft",
    "stretch",
    "stretch_time",
    "time_stretch",
]
