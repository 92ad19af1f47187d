"""Time stretch and pitch shift of a whole batch in torch, one random rate per row.

The same algorithm as :mod:`clar_ray.augment.vocoder` (librosa's: STFT with 2048 points, hop
512, Hann, centred with zero padding → phase vocoder → windowed overlap-add), on a batch
``(B, T)`` at once and on any device:

* **STFT** of the batch: frames by ``unfold``, one real FFT.
* **Phase vocoder** on per-row time-step grids: output frame ``i`` of row ``b`` reads input
  position ``i * rate[b]``; rows have ``ceil(N / rate[b])`` frames, the batch the most of them
  and the rest are zero. The grids (indices and fractions) are computed on the host in float64
  exactly as numpy's ``arange`` computes them, so a row's frames are those of the numpy path.
  The phase advance of each input frame is measured once and gathered for the output frames;
  the phases accumulate over frames in float32 (a ``cumsum``, or on CPU a loop of in-place
  adds over frames, :data:`FRAME_LOOP`; the numpy path accumulates in float64: crop/pad
  results differ by ≤ 3e-4 on FSDD).
* **Inverse STFT** by overlap-add in hop-sized blocks, each row normalised by its own sum of
  squared windows (a 25-row table indexed by where a block sits among the row's frames), cut
  to ``round(T / rate[b])``.
* **Resampling** (pitch shift, and time stretch with ``restore_length="resample"``): each row
  by its own ratio with soxr ``HQ``'s pass band, by :mod:`clar_ray.augment.batch_resample`.

No step loops over rows: row-dependent quantities are index grids, masks and gains. Rows
whose draw is a no-op (not applied, rate 1, 0 semitones) are left out by ``index_select`` and
the others put back by ``index_copy``. On CUDA all of them go through in one pass, whose number
of torch operations does not depend on B (a test counts them); on CPU they go through in
chunks of :data:`CHUNK_ROWS` rows of similar rates, each chunk the same operations. The draws
stay on the host (the grids are sized from them without a device sync); only index and
fraction tensors go to the device.

Precision: the whole path runs in float32 (complex64) whatever the input dtype or an
enclosing autocast (bf16 would wreck the phase accumulation and FFTs need float32 on CPU);
the frame grids are formed in float64 on the host. The functions return float32;
``BatchAugmenter`` casts back to the input's dtype.

Legend: B rows, T samples, N input frames, M output frames (the batch's most), F = 1025 bins,
Q hop-sized blocks, L stretched length.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

from clar_ray.augment.batch_resample import resample
from clar_ray.augment.vocoder import HOP_LENGTH, N_FFT, inverse_window_sums, window_sum_rows

_BLOCKS = N_FFT // HOP_LENGTH  # 4 hop-sized blocks per frame
_TWO_PI = 2.0 * math.pi


# --------------------------------------------------------------------------- helpers
# Constant tables, made once per device (a call runs per chunk) and never written to.


@functools.cache
def _window(device: torch.device) -> Tensor:
    """The periodic Hann window of the numpy path, float32: (N_FFT,)."""
    n = torch.arange(N_FFT, device=device, dtype=torch.float64)
    return (0.5 - 0.5 * torch.cos(_TWO_PI * n / N_FFT)).to(torch.float32)


@functools.cache
def _advance(device: torch.device) -> Tensor:
    """Expected phase advance per hop of each bin, wrapped to [-π, π), float32: (F,)."""
    bins = HOP_LENGTH * np.linspace(0, np.pi, N_FFT // 2 + 1)
    return torch.as_tensor((bins - 2 * np.pi * np.round(bins / (2 * np.pi))).astype(np.float32),
                           device=device)


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


#: Device types on which the phase accumulation is a loop over frames (in-place adds of (B, F)
#: slices) instead of one ``cumsum`` over frames, which runs ~2.5× slower per element on CPU.
FRAME_LOOP = {"cpu"}


def _accumulate(first: Tensor, increment: Tensor) -> Tensor:
    """Frame i's phase, ``first + Σ_{j < i} increment[:, j]``: (B, 1, F), (B, M, F) → (B, M, F)."""
    phase = torch.empty_like(increment)
    phase[:, :1] = first
    if increment.device.type in FRAME_LOOP:
        for i in range(1, phase.shape[1]):  # over frames, never rows
            torch.add(phase[:, i - 1], increment[:, i - 1], out=phase[:, i])
    else:
        torch.cumsum(increment[:, :-1], dim=1, out=phase[:, 1:])
        phase[:, 1:] += first
    return phase


def phase_vocoder(spectrum: Tensor, index: Tensor, fraction: Tensor) -> Tensor:
    """The phase vocoder of librosa on per-row grids: (B, N, F) → (B, M, F) complex64.

    Args:
        spectrum: (B, N, F) complex64.
        index: (B, M) int64 whole input positions (<= N; N for frames a row does not have,
            which read the two zero frames past the end and come out silent).
        fraction: (B, M) float32 fractional parts.
    """
    batch, n_frames, n_bins = spectrum.shape
    n_out = index.shape[1]
    # What output frame i needs from input position n = index[i]: the magnitudes of frames n
    # and n + 1 (two zero frames past the end, as librosa) and the measured phase advance from
    # n to n + 1 (the expected advance plus the deviation from it, wrapped to [-π, π)).
    # Contiguous real ops, in place where possible: complex and strided ops are several times
    # slower on CPU, and every pass over the output grid costs memory traffic.
    parts = torch.view_as_real(spectrum).permute(3, 0, 1, 2).contiguous()  # (2, B, N, F)
    magnitude = parts.new_empty(batch, n_frames + 2, n_bins)
    angle = parts.new_empty(batch, n_frames + 2, n_bins)
    magnitude[:, n_frames:] = 0.0
    angle[:, n_frames:] = 0.0
    torch.hypot(parts[0], parts[1], out=magnitude[:, :n_frames])
    torch.atan2(parts[1], parts[0], out=angle[:, :n_frames])
    advance = torch.sub(angle[:, 1:], angle[:, :-1])  # (B, N + 1, F)
    expected = _advance(spectrum.device)
    advance -= torch.sub(advance, expected).mul_(1.0 / _TWO_PI).round_().mul_(_TWO_PI)
    # Gather them at every output frame's position.
    rows = torch.arange(batch, device=index.device)[:, None]
    here = (index + rows * (n_frames + 2)).reshape(-1)
    table = magnitude.reshape(-1, n_bins)
    shape = (batch, n_out, n_bins)
    out_magnitude = torch.lerp(table.index_select(0, here).reshape(shape),
                               table.index_select(0, here + 1).reshape(shape),
                               fraction[:, :, None])
    steps = advance.reshape(-1, n_bins).index_select(0, (index + rows * (n_frames + 1)).reshape(-1))
    phase = _accumulate(angle[:, :1], steps.reshape(shape))
    out = parts.new_empty(batch, n_out, n_bins, 2)
    torch.mul(out_magnitude, torch.cos(phase), out=out[..., 0])
    torch.mul(out_magnitude, phase.sin_(), out=out[..., 1])
    return torch.view_as_complex(out)


@functools.cache
def _inverse_window_sums(device: torch.device) -> Tensor:
    """:func:`vocoder.inverse_window_sums` on the device: (25, HOP) float32."""
    return torch.tensor(inverse_window_sums(), device=device)  # a copy: the table is read-only


def istft(spectrum: Tensor, frames: np.ndarray, lengths: Tensor, out_length: int) -> Tensor:
    """Inverse of :func:`stft` per row: (B, M, F) → (B, out_length) float32.

    Windowed overlap-add, each row divided by the sum of its own frames' squared windows, the
    centring removed, and cut to its length (zeros after ``lengths[b]``), as the numpy path.

    Args:
        spectrum: (B, M, F) complex64 (frames past a row's count are ignored).
        frames: (B,) int64 frame counts, on the host.
        lengths: (B,) int64 lengths of the rows' results, on the spectrum's device.
        out_length: Samples to return per row.
    """
    batch, n_frames = spectrum.shape[:2]
    device = spectrum.device
    blocks = torch.fft.irfft(spectrum, n=N_FFT, dim=-1).mul_(_window(device))
    blocks = blocks.reshape(batch, n_frames, _BLOCKS, HOP_LENGTH)
    n_blocks = n_frames + _BLOCKS - 1
    signal = blocks.new_zeros(batch, n_blocks, HOP_LENGTH)
    for j in range(_BLOCKS):  # overlap-add: block j of every frame, for all rows at once
        signal[:, j:j + n_frames] += blocks[:, :, j]
    rows = torch.as_tensor(window_sum_rows(frames)[:, :n_blocks], device=device)
    scale = _inverse_window_sums(device).index_select(0, rows.reshape(-1))
    signal *= scale.reshape(batch, n_blocks, HOP_LENGTH)  # each sample's 1 / Σ w²
    signal = signal.reshape(batch, -1)[:, N_FFT // 2:N_FFT // 2 + out_length]
    signal = torch.nn.functional.pad(signal, (0, out_length - signal.shape[1]))
    t = torch.arange(out_length, device=device)[None, :]
    return signal.masked_fill_(t >= lengths[:, None], 0.0)


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
    n_frames = spectrum.shape[1]
    index, fraction, frames = frame_grid(n_frames, rates, needed)
    index[np.arange(index.shape[1])[None, :] >= frames[:, None]] = n_frames  # silent frames
    out = phase_vocoder(spectrum, torch.as_tensor(index, device=device),
                        torch.as_tensor(fraction, device=device))
    return istft(out, frames, torch.as_tensor(lengths, device=device), out_length), lengths


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


#: Rows per chunk on each device type: on CPU a call works through the selected rows sorted by
#: cost in chunks of this many (a loop over chunks, never over rows), so that a chunk's arrays
#: stay in the CPU's caches and the longest row of a chunk, which sets its frame count and FFT
#: sizes, is close to the others. Device types not listed (CUDA) take all rows in one launch.
CHUNK_ROWS = {"cpu": 8}


def _chunks(rows: np.ndarray, cost: np.ndarray, device: torch.device) -> list[np.ndarray]:
    """``rows`` sorted by ``cost`` and cut into the device type's chunks (one where unlisted)."""
    ordered = rows[np.argsort(cost[rows], kind="stable")]
    size = CHUNK_ROWS.get(device.type, len(ordered))
    return [ordered[start:start + size] for start in range(0, len(ordered), size)]


def _on_rows(waves: Tensor, rows: np.ndarray, cost: np.ndarray, transform: object) -> Tensor:
    """``transform(selected (R, T), rows)`` on ``rows`` of the batch, chunk by chunk."""
    out = waves.to(torch.float32, copy=True)
    with torch.autocast(waves.device.type, enabled=False):
        for chunk in _chunks(rows, cost, waves.device):
            index = torch.as_tensor(chunk, device=waves.device)
            out.index_copy_(0, index, transform(out.index_select(0, index), chunk))  # type: ignore[operator]
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
    "frame_grid",
    "istft",
    "phase_vocoder",
    "pitch_shift",
    "shift_pitch",
    "stft",
    "stretch",
    "stretch_time",
    "time_stretch",
]
