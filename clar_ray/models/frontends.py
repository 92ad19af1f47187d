"""Frontends: waveforms to encoder inputs, computed on the training device.

Legend: B batch (any leading dims), T samples, C channels, F frequency bins, T' frames.

Two frontends, chosen by name through ``FRONTENDS`` / ``build_frontend``:

- ``raw``: ``(B, T) -> (B, 1, T)``, float32, no normalisation (see ``RawFrontend``).
- ``tf3``: ``(B, T) -> (B, 3, F, T')``, the CLAR paper's stacked time-frequency input:
  channel 0 is the log-power STFT, channel 1 the STFT phase (radians, in [-pi, pi]) and
  channel 2 the log-power mel spectrogram, computed with nnAudio. F = 128 for all three
  channels: the STFT is evaluated at 128 chosen frequencies (nnAudio ``freq_bins=128``), so
  nothing is interpolated. T' = T // hop + 1 (centred frames, reflect padding).

Frontends keep their kernels in registered buffers (not parameters) and always compute in
float32, also under ``torch.autocast``. Keep them OUTSIDE the DDP-wrapped module, or DDP
would broadcast the kernels on every forward.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from nnAudio import features
from nnAudio.librosa_functions import get_mel
from torch import nn

# Each preset is given in milliseconds and Hz so that it scales with the sample rate.
# ``fmax_hz=None`` means the Nyquist frequency; a larger fmax is clipped to Nyquist.
FRONTEND_PRESETS: dict[str, dict[str, Any]] = {
    # The CLAR paper (Al-Tahan & Mohsenzadeh 2021, Sec. 4): 16 ms window, 8 ms hop, 128 bins.
    # STFT bins are linear from 0 Hz to just under Nyquist (k * sr / 256, k = 0..127): at
    # 16 kHz these are exactly the bins 0..127 of the 256-point DFT of the 16 ms window.
    # n_fft is chosen by ``choose_n_fft`` (the window is zero-padded) so that no mel filter
    # is empty: 1024 at 16 kHz.
    "paper": {
        "window_ms": 16.0,
        "hop_ms": 8.0,
        "freq_bins": 128,
        "freq_scale": "linear",
        "fmin_hz": 0.0,
        "fmax_hz": None,
        "n_mels": 128,
        "mel_fmin_hz": 0.0,
        "mel_fmax_hz": None,
    },
    # The official CLAR code: 2048-sample window (128 ms at 16 kHz), hop 128 (8 ms),
    # 128 log-spaced STFT bins and 128 mel bands, both from 40 to 8000 Hz.
    "clar-code": {
        "window_ms": 128.0,
        "hop_ms": 8.0,
        "freq_bins": 128,
        "freq_scale": "log",
        "fmin_hz": 40.0,
        "fmax_hz": 8000.0,
        "n_mels": 128,
        "mel_fmin_hz": 40.0,
        "mel_fmax_hz": 8000.0,
    },
}

# Powers below this floor are clamped before the log: log(0) never happens and silence maps
# to log(1e-10) ~= -23.0 (natural log).
POWER_FLOOR = 1e-10

# A mel filter counts as well covered when some FFT bin reaches at least this fraction of the
# filter's (un-normalised) triangle peak, i.e. a bin lies in the central half of the triangle.
MIN_MEL_FILTER_PEAK = 0.5

_FREQ_SCALES = ("linear", "log")
_MAX_N_FFT = 2**16


def _check_preset(preset: str) -> dict[str, Any]:
    if preset not in FRONTEND_PRESETS:
        raise ValueError(f"unknown frontend preset {preset!r}; allowed: {sorted(FRONTEND_PRESETS)}")
    return FRONTEND_PRESETS[preset]


def _check_sample_rate(sample_rate: int) -> None:
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    fmin_hz: float,
    fmax_hz: float,
    *,
    normalized: bool = True,
) -> np.ndarray:
    """Mel filterbank used by nnAudio's ``MelSpectrogram`` (Slaney mel scale).

    Args:
        sample_rate: Sample rate in Hz.
        n_fft: FFT size (the window may be shorter and zero-padded).
        n_mels: Number of mel bands.
        fmin_hz: Lowest band edge in Hz.
        fmax_hz: Highest band edge in Hz.
        normalized: Slaney area normalisation (nnAudio's ``norm=1``, what the frontend uses);
            if False, every triangle peaks at 1.

    Returns:
        Weights of shape ``(n_mels, n_fft // 2 + 1)``.
    """
    with warnings.catch_warnings():
        # nnAudio warns about empty filters; callers check for them explicitly.
        warnings.simplefilter("ignore", UserWarning)
        return get_mel(
            sample_rate, n_fft, n_mels, fmin_hz, fmax_hz, htk=False, norm=1 if normalized else None
        )


def min_mel_filter_peak(
    sample_rate: int, n_fft: int, n_mels: int, fmin_hz: float, fmax_hz: float
) -> float:
    """Smallest, over mel filters, of the largest weight any FFT bin gets (peaks scaled to 1).

    0 means some filter is empty (no FFT bin falls strictly inside its triangle); 1 means
    every filter's centre falls exactly on a bin.

    Args:
        sample_rate: Sample rate in Hz.
        n_fft: FFT size.
        n_mels: Number of mel bands.
        fmin_hz: Lowest band edge in Hz.
        fmax_hz: Highest band edge in Hz.

    Returns:
        A value in [0, 1].
    """
    weights = mel_filterbank(sample_rate, n_fft, n_mels, fmin_hz, fmax_hz, normalized=False)
    return float(weights.max(axis=1).min())


def choose_n_fft(
    win_length: int,
    sample_rate: int,
    n_mels: int,
    fmin_hz: float,
    fmax_hz: float,
    min_peak: float = MIN_MEL_FILTER_PEAK,
) -> int:
    """Smallest power of two >= ``win_length`` whose mel filters are all well covered.

    A short window has few FFT bins (a 256-sample window has 129), so the narrow low mel
    filters can fall between bins and stay empty. Zero-padding the window to a longer FFT
    samples the same spectrum more densely. We ask for more than "not empty": every filter
    must have a bin reaching ``min_peak`` of its triangle peak (see ``min_mel_filter_peak``).

    Args:
        win_length: Window length in samples.
        sample_rate: Sample rate in Hz.
        n_mels: Number of mel bands.
        fmin_hz: Lowest band edge in Hz.
        fmax_hz: Highest band edge in Hz.
        min_peak: Required coverage in (0, 1].

    Returns:
        The FFT size in samples.

    Raises:
        ValueError: If no FFT size up to 65536 reaches ``min_peak``.
    """
    if win_length <= 0:
        raise ValueError(f"win_length must be > 0, got {win_length}")
    if not 0.0 < min_peak <= 1.0:
        raise ValueError(f"min_peak must be in (0, 1], got {min_peak}")
    n_fft = 2 ** math.ceil(math.log2(win_length))
    while n_fft <= _MAX_N_FFT:
        if min_mel_filter_peak(sample_rate, n_fft, n_mels, fmin_hz, fmax_hz) >= min_peak:
            return n_fft
        n_fft *= 2
    raise ValueError(
        f"no n_fft <= {_MAX_N_FFT} gives every one of n_mels={n_mels} mel filters "
        f"({fmin_hz}-{fmax_hz} Hz at {sample_rate} Hz) a peak >= {min_peak}; reduce n_mels"
    )


@dataclass(frozen=True)
class TF3Params:
    """Resolved ``tf3`` settings in samples and Hz for one sample rate.

    Attributes:
        sample_rate: Sample rate in Hz.
        win_length: Hann window length in samples.
        hop_length: Hop between frames in samples.
        n_fft: FFT size (>= win_length; the window is centred and zero-padded).
        freq_bins: Number of STFT frequencies (= n_mels, the common F).
        freq_scale: "linear" or "log" spacing of the STFT frequencies.
        fmin_hz: Lowest STFT frequency.
        fmax_hz: STFT frequencies stop below this frequency.
        n_mels: Number of mel bands.
        mel_fmin_hz: Lowest mel band edge.
        mel_fmax_hz: Highest mel band edge.
    """

    sample_rate: int
    win_length: int
    hop_length: int
    n_fft: int
    freq_bins: int
    freq_scale: str
    fmin_hz: float
    fmax_hz: float
    n_mels: int
    mel_fmin_hz: float
    mel_fmax_hz: float


def tf3_params(sample_rate: int, preset: str = "paper") -> TF3Params:
    """Resolve a ``FRONTEND_PRESETS`` entry into samples and Hz at ``sample_rate``.

    Args:
        sample_rate: Sample rate in Hz.
        preset: A key of ``FRONTEND_PRESETS``.

    Returns:
        The resolved settings.

    Raises:
        ValueError: On an unknown preset or an inconsistent setting.
    """
    _check_sample_rate(sample_rate)
    p = _check_preset(preset)
    nyquist = sample_rate / 2.0
    win_length = round(sample_rate * p["window_ms"] / 1000.0)
    hop_length = round(sample_rate * p["hop_ms"] / 1000.0)
    if win_length < 2 or hop_length < 1:
        raise ValueError(
            f"sample_rate={sample_rate} too low for preset {preset!r}: "
            f"win_length={win_length}, hop_length={hop_length}"
        )
    fmax = nyquist if p["fmax_hz"] is None else min(float(p["fmax_hz"]), nyquist)
    mel_fmax = nyquist if p["mel_fmax_hz"] is None else min(float(p["mel_fmax_hz"]), nyquist)
    if p["freq_bins"] != p["n_mels"]:
        raise ValueError(
            f"preset {preset!r}: freq_bins ({p['freq_bins']}) must equal n_mels ({p['n_mels']}) "
            "so that the three channels share F"
        )
    if p["freq_scale"] not in _FREQ_SCALES:
        raise ValueError(f"preset {preset!r}: freq_scale must be one of {_FREQ_SCALES}")
    if p["freq_scale"] == "log" and p["fmin_hz"] <= 0:
        raise ValueError(f"preset {preset!r}: log freq_scale needs fmin_hz > 0")
    if not (0 <= p["fmin_hz"] < fmax and 0 <= p["mel_fmin_hz"] < mel_fmax):
        raise ValueError(f"preset {preset!r}: fmin must lie below fmax (<= Nyquist {nyquist})")
    n_fft = choose_n_fft(win_length, sample_rate, p["n_mels"], p["mel_fmin_hz"], mel_fmax)
    return TF3Params(
        sample_rate=sample_rate,
        win_length=win_length,
        hop_length=hop_length,
        n_fft=n_fft,
        freq_bins=int(p["freq_bins"]),
        freq_scale=str(p["freq_scale"]),
        fmin_hz=float(p["fmin_hz"]),
        fmax_hz=fmax,
        n_mels=int(p["n_mels"]),
        mel_fmin_hz=float(p["mel_fmin_hz"]),
        mel_fmax_hz=mel_fmax,
    )


def _flatten_time(wave: torch.Tensor) -> tuple[torch.Size, torch.Tensor]:
    """(..., T) -> (leading shape, (N, T) float32)."""
    if wave.dim() < 1:
        raise ValueError(f"waveform must have a time axis, got shape {tuple(wave.shape)}")
    return wave.shape[:-1], wave.reshape(-1, wave.shape[-1]).float()


class Frontend(nn.Module):
    """Base of all frontends: waveforms ``(..., T)`` to encoder inputs.

    Attributes:
        out_channels: C, the channels of the output.
        ndim: 1 for ``(..., C, T)`` outputs, 2 for ``(..., C, F, T')``.
        sample_rate: Sample rate in Hz the frontend was built for.
    """

    out_channels: int
    ndim: int
    sample_rate: int


class RawFrontend(Frontend):
    """The waveform itself as a one-channel signal: ``(..., T) -> (..., 1, T)`` float32.

    No normalisation: the encoder's stem convolution is followed by batch norm, which removes
    any global scale, while a per-clip normalisation would erase loudness cues and undo gain
    augmentations.

    Args:
        sample_rate: Sample rate in Hz (kept for the record; raw audio needs no kernels).
        preset: A key of ``FRONTEND_PRESETS``; validated for a uniform interface, unused.
    """

    out_channels: int = 1
    ndim: int = 1

    def __init__(self, *, sample_rate: int, preset: str = "paper") -> None:
        super().__init__()
        _check_sample_rate(sample_rate)
        _check_preset(preset)
        self.sample_rate = sample_rate

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Map waveforms ``(..., T)`` to ``(..., 1, T)`` float32."""
        lead, x = _flatten_time(wave)
        return x.reshape(*lead, 1, x.shape[-1])


class TF3Frontend(Frontend):
    """Stacked log-power STFT, STFT phase and log-power mel: ``(..., T) -> (..., 3, F, T')``.

    Both transforms use a periodic Hann window of ``win_length`` centred in ``n_fft``
    samples, centred frames (``T' = T // hop + 1``) and reflect padding, so T must exceed
    ``n_fft // 2``. The STFT (nnAudio ``features.STFT``) is evaluated at ``freq_bins``
    frequencies (``bin_hz``), linear or log spaced; magnitude and phase come from the same
    complex output. The mel channel is nnAudio ``features.MelSpectrogram`` (Slaney mel scale,
    area-normalised filters, power 2). Powers are floored at ``POWER_FLOOR`` and logged
    (natural log). Phase is ``atan2(imag, real)`` in [-pi, pi], 0 where the bin is exactly 0.

    Args:
        sample_rate: Sample rate in Hz.
        preset: A key of ``FRONTEND_PRESETS``.
    """

    out_channels: int = 3
    ndim: int = 2

    def __init__(self, *, sample_rate: int, preset: str = "paper") -> None:
        super().__init__()
        p = tf3_params(sample_rate, preset)
        self.params = p
        self.preset = preset
        self.sample_rate = sample_rate
        self.freq_bins = p.freq_bins
        self.stft = features.STFT(
            n_fft=p.n_fft,
            win_length=p.win_length,
            freq_bins=p.freq_bins,
            hop_length=p.hop_length,
            window="hann",
            freq_scale=p.freq_scale,
            center=True,
            pad_mode="reflect",
            fmin=p.fmin_hz,
            fmax=p.fmax_hz,
            sr=sample_rate,
            trainable=False,
            output_format="Complex",
            verbose=False,
        )
        self.mel = features.MelSpectrogram(
            sr=sample_rate,
            n_fft=p.n_fft,
            win_length=p.win_length,
            n_mels=p.n_mels,
            hop_length=p.hop_length,
            window="hann",
            center=True,
            pad_mode="reflect",
            power=2.0,
            htk=False,
            fmin=p.mel_fmin_hz,
            fmax=p.mel_fmax_hz,
            norm=1,
            trainable_mel=False,
            trainable_STFT=False,
            verbose=False,
        )
        # Centre frequency in Hz of each STFT row (F,).
        self.bin_hz = np.asarray(self.stft.bins2freq, dtype=np.float64)

    def num_frames(self, num_samples: int) -> int:
        """T' for a clip of ``num_samples`` samples."""
        return num_samples // self.params.hop_length + 1

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Map waveforms ``(..., T)`` to ``(..., 3, F, T')`` float32 (also under autocast)."""
        lead, x = _flatten_time(wave)  # x: (N, T)
        num_samples = x.shape[-1]
        if num_samples <= self.params.n_fft // 2:
            raise ValueError(
                f"tf3 needs more than n_fft // 2 = {self.params.n_fft // 2} samples for reflect "
                f"padding, got T={num_samples}"
            )
        with torch.autocast(device_type=x.device.type, enabled=False):
            spec = self.stft(x)  # (N, F, T', 2): real, imag
            real, imag = spec[..., 0], spec[..., 1] + 0.0  # + 0.0 turns -0.0 into 0.0
            log_power = torch.log(torch.clamp(real.square() + imag.square(), min=POWER_FLOOR))
            phase = torch.atan2(imag, real)  # (N, F, T')
            log_mel = torch.log(torch.clamp(self.mel(x), min=POWER_FLOOR))  # (N, F, T')
            out = torch.stack((log_power, phase, log_mel), dim=1).float()  # (N, 3, F, T')
        return out.reshape(*lead, *out.shape[1:])

    def extra_repr(self) -> str:
        """Summarise the resolved settings."""
        p = self.params
        return (
            f"preset={self.preset!r}, sample_rate={p.sample_rate}, win_length={p.win_length}, "
            f"hop_length={p.hop_length}, n_fft={p.n_fft}, freq_bins={p.freq_bins} "
            f"({p.freq_scale} {p.fmin_hz:g}-{p.fmax_hz:g} Hz), n_mels={p.n_mels} "
            f"({p.mel_fmin_hz:g}-{p.mel_fmax_hz:g} Hz)"
        )


FRONTENDS: dict[str, Callable[..., Frontend]] = {
    "raw": RawFrontend,
    "tf3": TF3Frontend,
}


def build_frontend(name: str, *, sample_rate: int, preset: str = "paper") -> Frontend:
    """Build a frontend by its ``FRONTENDS`` name.

    Args:
        name: A key of ``FRONTENDS``.
        sample_rate: Sample rate of the waveforms in Hz.
        preset: A key of ``FRONTEND_PRESETS`` (used by ``tf3``).

    Returns:
        The frontend; it has ``out_channels`` and ``ndim`` (1: ``(B, C, T)``, 2: ``(B, C, F, T')``).

    Raises:
        ValueError: On an unknown name or preset.
    """
    if name not in FRONTENDS:
        raise ValueError(f"unknown frontend {name!r}; allowed: {sorted(FRONTENDS)}")
    return FRONTENDS[name](sample_rate=sample_rate, preset=preset)
