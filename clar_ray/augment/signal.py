"""The CLAR paper's audio augmentations as small numpy functions.

Each augmentation is three pieces, so one clip and a whole batch go through the same code:

* a frozen ``*Params`` dataclass: the job-configurable ranges, with units in the names and the
  paper's values as defaults (``clar_ray.augment.presets`` holds the ``clar-code`` values);
* ``draw_<name>(rng, n_samples, sample_rate, params) -> Draw``: one clip's random parameters,
  drawn from the generator it is given and nothing else (never from the waveform);
* ``apply_<name>(waves, draws, sample_rate) -> waves``: the deterministic transform of a batch
  ``(B, T)`` given the stacked draws. The cheap ones (fade, time mask, time shift, white and
  mixed noise) are array ops over the batch; pitch shift and time stretch loop over rows.

The public per-clip function ``<name>(wave, rng, *, sample_rate, **params)`` is draw + apply on
one clip. Every draw begins with the coin ``applied = rng.random() < p`` and then draws all its
parameters whether or not the coin came up, so ``p`` changes nothing but the coin. Outputs are
new float32 arrays of the input's length: inputs are never modified (Ray may hand read-only
views).

Noise (white, coloured, the time mask's fill) comes from a counter-based hash seeded by a
32-bit key drawn from the generator: noise value ``t`` of a clip is a pure function of
``(key, t)``. The torch versions in ``clar_ray.augment.batch`` use the same integer hash, so a
clip gets the same noise on the CPU and on the training device.

Pitch shift and time stretch use librosa's algorithm (phase vocoder on a 2048-point STFT with
hop 512, then soxr ``HQ`` resampling for pitch shift) in a vectorised re-implementation that
matches ``librosa.effects`` to ~1e-3 and is about three times faster; the FFTs are numpy's
(single-threaded pocketfft) and soxr runs one thread, so no thread pool needs limiting here.

Legend: B clips in a batch, T samples per clip, F frequency bins, N STFT frames.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import soxr

#: One clip's random parameters (plain Python scalars).
Draw = dict[str, Any]
#: The draws of a batch stacked per key, each an array of shape (B,).
Draws = dict[str, np.ndarray]

#: Fade curves by id (the ``shape`` in a fade draw indexes this tuple).
FADE_SHAPES = (
    "linear",
    "logarithmic",
    "exponential",
    "quarter_sine",
    "half_sine",
)
#: Noise colours of ``mixed_noise`` by id, with their spectral exponent (power ∝ 1/f**beta).
NOISE_COLORS = ("white", "pink", "brown", "none")
NOISE_EXPONENTS = (0.0, 1.0, 2.0, 0.0)
#: Fills of ``time_mask``.
MASK_FILLS = ("noise", "constant")

N_FFT = 2048  # librosa's default STFT, as the paper and the official code used it
HOP_LENGTH = 512


# --------------------------------------------------------------------------- validation


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _check_range(low_name: str, low: float, high_name: str, high: float) -> None:
    if low > high:
        raise ValueError(f"{low_name} must be <= {high_name}, got {low} > {high}")


def _check_interval(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


def _check_non_negative(name: str, value: float) -> None:
    if not value >= 0.0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def _check_choices(name: str, values: Sequence[str], allowed: Sequence[str]) -> None:
    if isinstance(values, str) or not values:
        raise ValueError(f"{name} must be a non-empty list of {list(allowed)}, got {values!r}")
    for value in values:
        if value not in allowed:
            raise ValueError(f"{name}: unknown value {value!r}; allowed: {list(allowed)}")


# --------------------------------------------------------------------------- parameters


@dataclasses.dataclass(frozen=True)
class PitchShiftParams:
    """Pitch shift, tempo kept (time stretch by 2**(-n/12), then resampling back).

    Attributes:
        p: Probability of applying the augmentation.
        min_semitones: Lowest shift; the paper draws from ±15 semitones.
        max_semitones: Highest shift.
        semitone_step: 0 draws a continuous shift; k > 0 draws ``min + k * i`` (integer steps).
    """

    p: float = 1.0
    min_semitones: float = -15.0
    max_semitones: float = 15.0
    semitone_step: float = 0.0

    def __post_init__(self) -> None:
        _check_probability("p", self.p)
        _check_range("min_semitones", self.min_semitones, "max_semitones", self.max_semitones)
        _check_non_negative("semitone_step", self.semitone_step)


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
        _check_probability("p", self.p)
        _check_range("min_snr_db", self.min_snr_db, "max_snr_db", self.max_snr_db)
        _check_non_negative("snr_step_db", self.snr_step_db)


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
            noise as the official code does (see ``clar_ray.augment.presets``).
    """

    p: float = 1.0
    min_snr_db: float = 0.0
    max_snr_db: float = 20.0
    snr_step_db: float = 0.0
    colors: tuple[str, ...] = ("white", "pink", "brown")
    style: str = "snr"

    def __post_init__(self) -> None:
        _check_probability("p", self.p)
        _check_range("min_snr_db", self.min_snr_db, "max_snr_db", self.max_snr_db)
        _check_non_negative("snr_step_db", self.snr_step_db)
        _check_choices("colors", self.colors, NOISE_COLORS)
        if self.style not in ("snr", "clar-code"):
            raise ValueError(f"style must be 'snr' or 'clar-code', got {self.style!r}")


@dataclasses.dataclass(frozen=True)
class FadeParams:
    """Fade in and fade out, each up to a fraction of the clip, one curve for both sides.

    Attributes:
        p: Probability of applying the augmentation.
        min_fade_in_fraction: Shortest fade-in, as a fraction of the clip.
        max_fade_in_fraction: Longest fade-in (the paper: half the clip).
        min_fade_out_fraction: Shortest fade-out.
        max_fade_out_fraction: Longest fade-out.
        shapes: Curves drawn uniformly, from ``FADE_SHAPES``.
    """

    p: float = 1.0
    min_fade_in_fraction: float = 0.0
    max_fade_in_fraction: float = 0.5
    min_fade_out_fraction: float = 0.0
    max_fade_out_fraction: float = 0.5
    shapes: tuple[str, ...] = ("linear", "logarithmic", "exponential")

    def __post_init__(self) -> None:
        _check_probability("p", self.p)
        for side in ("in", "out"):
            low, high = f"min_fade_{side}_fraction", f"max_fade_{side}_fraction"
            _check_interval(low, getattr(self, low), 0.0, 1.0)
            _check_interval(high, getattr(self, high), 0.0, 1.0)
            _check_range(low, getattr(self, low), high, getattr(self, high))
        _check_choices("shapes", self.shapes, FADE_SHAPES)


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
        _check_probability("p", self.p)
        _check_interval("min_mask_fraction", self.min_mask_fraction, 0.0, 1.0)
        _check_interval("max_mask_fraction", self.max_mask_fraction, 0.0, 1.0)
        _check_range("min_mask_fraction", self.min_mask_fraction,
                     "max_mask_fraction", self.max_mask_fraction)
        _check_choices("fills", self.fills, MASK_FILLS)
        _check_non_negative("noise_std", self.noise_std)


@dataclasses.dataclass(frozen=True)
class TimeShiftParams:
    """Circular shift (samples leaving one end come back at the other), either direction.

    Attributes:
        p: Probability of applying the augmentation.
        min_shift_fraction: Most negative shift (earlier), as a fraction of the clip.
        max_shift_fraction: Most positive shift (later); the paper: half the clip.
        max_shift_seconds: Optional cap on ``|shift|`` in seconds (the official code shifts at
            most 8000 samples whatever the clip length); None for no cap.
    """

    p: float = 1.0
    min_shift_fraction: float = -0.5
    max_shift_fraction: float = 0.5
    max_shift_seconds: float | None = None

    def __post_init__(self) -> None:
        _check_probability("p", self.p)
        _check_interval("min_shift_fraction", self.min_shift_fraction, -1.0, 1.0)
        _check_interval("max_shift_fraction", self.max_shift_fraction, -1.0, 1.0)
        _check_range("min_shift_fraction", self.min_shift_fraction,
                     "max_shift_fraction", self.max_shift_fraction)
        if self.max_shift_seconds is not None:
            _check_non_negative("max_shift_seconds", self.max_shift_seconds)


@dataclasses.dataclass(frozen=True)
class TimeStretchParams:
    """Time stretch by a phase vocoder (pitch kept), then back to the clip's length.

    Attributes:
        p: Probability of applying the augmentation.
        min_rate: Slowest rate (< 1 slows down); the paper draws rates in [0.5, 1.5].
        max_rate: Fastest rate.
        restore_length: ``crop_pad`` crops the end or pads zeros at the end (the paper: tempo
            changes, pitch kept); ``resample`` resamples the stretched signal back to the
            clip's length (the official code: tempo kept, pitch scaled by 1/rate).
    """

    p: float = 1.0
    min_rate: float = 0.5
    max_rate: float = 1.5
    restore_length: str = "crop_pad"

    def __post_init__(self) -> None:
        _check_probability("p", self.p)
        if not self.min_rate > 0.0:
            raise ValueError(f"min_rate must be > 0, got {self.min_rate}")
        _check_range("min_rate", self.min_rate, "max_rate", self.max_rate)
        if self.restore_length not in ("crop_pad", "resample"):
            raise ValueError(
                f"restore_length must be 'crop_pad' or 'resample', got {self.restore_length!r}")


# --------------------------------------------------------------------------- hashed noise

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


def _unit_rms(x: np.ndarray) -> np.ndarray:
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
    return _unit_rms(out)


# --------------------------------------------------------------------------- draws


def _uniform(rng: np.random.Generator, low: float, high: float, step: float = 0.0) -> float:
    """A uniform draw in [low, high], on the grid ``low + step * i`` when step > 0."""
    if step > 0.0:
        count = math.floor((high - low) / step + 1e-9)
        return float(low + step * int(rng.integers(0, count + 1)))
    return float(rng.uniform(low, high))


def _samples_between(rng: np.random.Generator, low: float, high: float, n_samples: int) -> int:
    """A whole number of samples drawn uniformly in [round(low * T), round(high * T)]."""
    return int(rng.integers(round(low * n_samples), round(high * n_samples) + 1))


def _key(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**32))


def draw_pitch_shift(rng: np.random.Generator, n_samples: int, sample_rate: int,
                     params: PitchShiftParams) -> Draw:
    """Draw one clip's pitch shift: ``applied``, ``semitones``."""
    applied = bool(rng.random() < params.p)
    semitones = _uniform(rng, params.min_semitones, params.max_semitones, params.semitone_step)
    return {"applied": applied, "semitones": semitones}


def draw_white_noise(rng: np.random.Generator, n_samples: int, sample_rate: int,
                     params: WhiteNoiseParams) -> Draw:
    """Draw one clip's white noise: ``applied``, ``snr_db``, ``key``."""
    applied = bool(rng.random() < params.p)
    snr_db = _uniform(rng, params.min_snr_db, params.max_snr_db, params.snr_step_db)
    return {"applied": applied, "snr_db": snr_db, "key": _key(rng)}


def draw_mixed_noise(rng: np.random.Generator, n_samples: int, sample_rate: int,
                     params: MixedNoiseParams) -> Draw:
    """Draw one clip's mixed noise: ``applied``, ``color`` (id), ``snr_db``, ``key``, ``style``."""
    applied = bool(rng.random() < params.p)
    color = NOISE_COLORS.index(params.colors[int(rng.integers(len(params.colors)))])
    snr_db = _uniform(rng, params.min_snr_db, params.max_snr_db, params.snr_step_db)
    return {"applied": applied, "color": color, "snr_db": snr_db, "key": _key(rng),
            "clar_code": params.style == "clar-code"}


def draw_fade(rng: np.random.Generator, n_samples: int, sample_rate: int,
              params: FadeParams) -> Draw:
    """Draw one clip's fade: ``applied``, ``shape`` (id), ``fade_in/out_samples``."""
    applied = bool(rng.random() < params.p)
    shape = FADE_SHAPES.index(params.shapes[int(rng.integers(len(params.shapes)))])
    fade_in = _samples_between(rng, params.min_fade_in_fraction, params.max_fade_in_fraction,
                               n_samples)
    fade_out = _samples_between(rng, params.min_fade_out_fraction, params.max_fade_out_fraction,
                                n_samples)
    return {"applied": applied, "shape": shape, "fade_in_samples": fade_in,
            "fade_out_samples": fade_out}


def draw_time_mask(rng: np.random.Generator, n_samples: int, sample_rate: int,
                   params: TimeMaskParams) -> Draw:
    """Draw one clip's mask: ``applied``, ``start``, ``length``, its fill, ``key``."""
    applied = bool(rng.random() < params.p)
    length = _samples_between(rng, params.min_mask_fraction, params.max_mask_fraction, n_samples)
    start = int(rng.integers(0, n_samples - length + 1))
    fill_noise = params.fills[int(rng.integers(len(params.fills)))] == "noise"
    return {"applied": applied, "start": start, "length": length, "fill_noise": fill_noise,
            "noise_std": params.noise_std, "constant_value": params.constant_value,
            "key": _key(rng)}


def draw_time_shift(rng: np.random.Generator, n_samples: int, sample_rate: int,
                    params: TimeShiftParams) -> Draw:
    """Draw one clip's circular shift: ``applied``, ``shift_samples`` (> 0 moves later)."""
    applied = bool(rng.random() < params.p)
    low = round(params.min_shift_fraction * n_samples)
    high = round(params.max_shift_fraction * n_samples)
    if params.max_shift_seconds is not None:
        cap = round(params.max_shift_seconds * sample_rate)
        low, high = max(low, -cap), min(high, cap)
        high = max(low, high)  # a range wholly beyond the cap collapses to its nearer end
    return {"applied": applied, "shift_samples": int(rng.integers(low, high + 1))}


def draw_time_stretch(rng: np.random.Generator, n_samples: int, sample_rate: int,
                      params: TimeStretchParams) -> Draw:
    """Draw one clip's stretch: ``applied``, ``rate``, ``resample`` (how the length is restored)."""
    applied = bool(rng.random() < params.p)
    rate = _uniform(rng, params.min_rate, params.max_rate)
    return {"applied": applied, "rate": rate, "resample": params.restore_length == "resample"}


def stack_draws(draws: Sequence[Draw]) -> Draws:
    """Stack per-clip draws into arrays of shape (B,) per key."""
    if not draws:
        raise ValueError("stack_draws needs at least one draw")
    return {key: np.asarray([draw[key] for draw in draws]) for key in draws[0]}


# --------------------------------------------------------------------------- batch transforms


def _as_batch(waves: np.ndarray) -> np.ndarray:
    waves = np.asarray(waves, dtype=np.float32)
    if waves.ndim != 2:
        raise ValueError(f"waves must have shape (B, T), got {waves.shape}")
    return waves


def _fade_curve(shape: str, ramp: np.ndarray, fade_in: bool) -> np.ndarray:
    """Gain of a fade curve at ramp positions in [0, 1] (the curves of torchaudio's Fade)."""
    t = ramp
    if shape == "linear":
        gain = t if fade_in else 1.0 - t
    elif shape == "exponential":
        gain = 2.0 ** (t - 1.0) * t if fade_in else 2.0 ** (-t) * (1.0 - t)
    elif shape == "logarithmic":
        gain = np.log10(0.1 + t) + 1.0 if fade_in else np.log10(1.1 - t) + 1.0
    elif shape == "quarter_sine":
        gain = np.sin(t * np.pi / 2) if fade_in else np.sin(t * np.pi / 2 + np.pi / 2)
    elif shape == "half_sine":
        phase = t * np.pi - np.pi / 2 if fade_in else t * np.pi + np.pi / 2
        gain = np.sin(phase) / 2 + 0.5
    else:
        raise ValueError(f"unknown fade shape {shape!r}; allowed: {list(FADE_SHAPES)}")
    return np.clip(gain, 0.0, 1.0)


def apply_fade(waves: np.ndarray, draws: Draws, sample_rate: int) -> np.ndarray:
    """Fade in and out: (B, T) → (B, T).

    The fade-in of length L multiplies the first L samples by the row's curve at
    ``linspace(0, 1, L)``, the fade-out the last L samples (torchaudio's ``Fade``). Rows are
    processed one by one: only the faded samples are touched, which beats (B, T) array ops.
    """
    waves = _as_batch(waves)
    out = waves.copy()
    n_samples = waves.shape[1]
    for row in np.flatnonzero(np.asarray(draws["applied"], dtype=bool)):
        shape = FADE_SHAPES[int(draws["shape"][row])]
        fade_in, fade_out = int(draws["fade_in_samples"][row]), int(draws["fade_out_samples"][row])
        if fade_in:
            out[row, :fade_in] *= _fade_curve(shape, np.linspace(0.0, 1.0, fade_in), True)
        if fade_out:
            out[row, n_samples - fade_out:] *= _fade_curve(shape, np.linspace(0.0, 1.0, fade_out),
                                                           False)
    return out


def apply_time_mask(waves: np.ndarray, draws: Draws, sample_rate: int) -> np.ndarray:
    """Replace ``[start, start + length)`` of each row by its fill: (B, T) → (B, T).

    The noise fill at sample t is ``noise_std * hash_normal(key)[t]``.
    """
    waves = _as_batch(waves)
    out = waves.copy()
    for row in np.flatnonzero(np.asarray(draws["applied"], dtype=bool)):
        start, length = int(draws["start"][row]), int(draws["length"][row])
        if length == 0:
            continue
        if bool(draws["fill_noise"][row]):
            noise = hash_normal(np.asarray(draws["key"][row:row + 1]), length, start)[0]
            out[row, start:start + length] = float(draws["noise_std"][row]) * noise
        else:
            out[row, start:start + length] = float(draws["constant_value"][row])
    return out


def apply_time_shift(waves: np.ndarray, draws: Draws, sample_rate: int) -> np.ndarray:
    """Circular shift of each row by ``shift_samples`` (``np.roll`` per row): (B, T) → (B, T)."""
    waves = _as_batch(waves)
    out = waves.copy()
    n_samples = waves.shape[1]
    for row in np.flatnonzero(np.asarray(draws["applied"], dtype=bool)):
        shift = int(draws["shift_samples"][row]) % n_samples
        if shift:
            out[row, shift:] = waves[row, :n_samples - shift]
            out[row, :shift] = waves[row, n_samples - shift:]
    return out


def _noise_scale(waves: np.ndarray, snr_db: np.ndarray) -> np.ndarray:
    """(B, 1) float32 noise RMS ``rms(row) * 10**(-snr_db / 20)``."""
    rms = np.sqrt(np.mean(np.square(waves, dtype=np.float64), axis=1, keepdims=True))
    return (rms * 10.0 ** (-np.asarray(snr_db, dtype=np.float64)[:, None] / 20)).astype(
        np.float32)


def apply_white_noise(waves: np.ndarray, draws: Draws, sample_rate: int) -> np.ndarray:
    """Add unit-RMS white noise scaled to each row's SNR: (B, T) → (B, T).

    The noise RMS is ``rms(clip) * 10**(-snr_db / 20)``, so a silent clip stays silent.
    """
    waves = _as_batch(waves)
    out = waves.copy()
    rows = np.flatnonzero(np.asarray(draws["applied"], dtype=bool))
    if rows.size:
        noise = _unit_rms(hash_normal(np.asarray(draws["key"])[rows], waves.shape[1]))
        out[rows] += noise * _noise_scale(waves[rows], np.asarray(draws["snr_db"])[rows])
    return out


def apply_mixed_noise(waves: np.ndarray, draws: Draws, sample_rate: int) -> np.ndarray:
    """Add white, pink or brown noise (or none) per row: (B, T) → (B, T).

    ``snr`` rows add unit-RMS noise at the row's SNR. ``clar_code`` rows follow the official
    code: pink and brown noise ``n`` (peak-normalised) is mixed as
    ``clip(x * U(0.5, 1.2)[t] + n * U(0, 0.9)[t], 0, 1)`` with fresh gains per sample, white
    noise is added at the SNR unclipped.
    """
    waves = _as_batch(waves)
    out = waves.copy()
    n_samples = waves.shape[1]
    color = np.asarray(draws["color"], dtype=np.int64)
    rows = np.flatnonzero(np.asarray(draws["applied"], dtype=bool)
                          & (color != NOISE_COLORS.index("none")))
    if not rows.size:
        return out
    keys = np.asarray(draws["key"])[rows]
    noise = colored_noise(keys, n_samples, np.asarray(NOISE_EXPONENTS)[color[rows]])
    out[rows] += noise * _noise_scale(waves[rows], np.asarray(draws["snr_db"])[rows])
    clar = np.asarray(draws["clar_code"], dtype=bool)[rows] & (color[rows] != 0)
    if clar.any():
        peak = np.max(np.abs(noise[clar]), axis=1, keepdims=True)
        signal_gain = 0.5 + 0.7 * hash_uniform(keys[clar], n_samples, 2 * n_samples)
        noise_gain = 0.9 * hash_uniform(keys[clar], n_samples, 3 * n_samples)
        out[rows[clar]] = np.clip(waves[rows[clar]] * signal_gain
                                  + noise[clar] / peak * noise_gain, 0.0, 1.0)
    return out


# --------------------------------------------------------------------------- phase vocoder

_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT))  # periodic Hann
_PHASE_ADVANCE = HOP_LENGTH * np.linspace(0, np.pi, N_FFT // 2 + 1)  # (F,) per hop
_PHASE_ADVANCE_WRAPPED = np.mod(_PHASE_ADVANCE, 2 * np.pi)


def _stft(wave: np.ndarray) -> np.ndarray:
    """librosa.stft(center=True, pad_mode="constant") with librosa's defaults: (T,) → (N, F)."""
    padded = np.pad(wave.astype(np.float32), N_FFT // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH]  # (N, n_fft)
    return np.fft.rfft(frames * _WINDOW.astype(np.float32), axis=-1)


def _istft(spectrum: np.ndarray, length: int) -> np.ndarray:
    """Inverse of :func:`_stft` by windowed overlap-add: (N, F) → (length,) float64."""
    n_frames = spectrum.shape[0]
    frames = np.fft.irfft(spectrum, n=N_FFT, axis=-1) * _WINDOW  # (N, n_fft)
    blocks = N_FFT // HOP_LENGTH
    total = N_FFT + HOP_LENGTH * (n_frames - 1)
    signal = np.zeros((total // HOP_LENGTH, HOP_LENGTH))
    weight = np.zeros_like(signal)
    frame_blocks = frames.reshape(n_frames, blocks, HOP_LENGTH)
    window_blocks = (_WINDOW**2).reshape(blocks, HOP_LENGTH)
    for j in range(blocks):
        signal[j:j + n_frames] += frame_blocks[:, j]
        weight[j:j + n_frames] += window_blocks[j]
    signal, weight = signal.reshape(-1), weight.reshape(-1)
    nonzero = weight > np.finfo(np.float32).tiny
    signal[nonzero] /= weight[nonzero]
    signal = signal[N_FFT // 2:]
    return np.pad(signal, (0, max(0, length - len(signal))))[:length]


def _phase_vocoder(spectrum: np.ndarray, rate: float) -> np.ndarray:
    """librosa.phase_vocoder without its per-frame Python loop: (N, F) → (ceil(N / rate), F)."""
    n_frames = spectrum.shape[0]
    steps = np.arange(0, n_frames, rate, dtype=np.float64)
    padded = np.concatenate([spectrum, np.zeros((2, spectrum.shape[1]), spectrum.dtype)])
    index = steps.astype(np.int64)
    alpha = (steps % 1.0)[:, None]
    magnitude, angle = np.abs(padded), np.angle(padded)
    out_magnitude = (1.0 - alpha) * magnitude[index] + alpha * magnitude[index + 1]
    delta = angle[index + 1] - angle[index] - _PHASE_ADVANCE
    delta -= 2 * np.pi * np.round(delta / (2 * np.pi))
    increment = _PHASE_ADVANCE_WRAPPED + delta  # the advance modulo 2π keeps phases small
    phase = np.empty_like(increment)
    phase[0] = angle[0]
    np.cumsum(increment[:-1], axis=0, out=phase[1:])
    phase[1:] += angle[0]
    out = np.empty(phase.shape, dtype=np.complex64)
    out.real = out_magnitude * np.cos(phase.astype(np.float32))
    out.imag = out_magnitude * np.sin(phase.astype(np.float32))
    return out


def stretch(wave: np.ndarray, rate: float) -> np.ndarray:
    """Phase-vocoder time stretch, pitch kept: (T,) → (round(T / rate),) float64.

    Equal to ``librosa.effects.time_stretch(wave, rate=rate)`` within ~1e-3.
    """
    return _istft(_phase_vocoder(_stft(wave), rate), int(round(len(wave) / rate)))


def _resample(wave: np.ndarray, in_rate: float, out_rate: float) -> np.ndarray:
    return np.asarray(soxr.resample(wave, in_rate, out_rate, quality="HQ"))


def _fix_length(wave: np.ndarray, length: int) -> np.ndarray:
    """Crop the end or pad zeros at the end."""
    return np.pad(wave, (0, max(0, length - len(wave))))[:length]


def shift_pitch(wave: np.ndarray, semitones: float, sample_rate: int) -> np.ndarray:
    """Pitch shift by ``semitones``, tempo kept: (T,) → (T,) float32.

    Equal to ``librosa.effects.pitch_shift(wave, sr=sample_rate, n_steps=semitones)`` within
    ~1e-3 (same phase vocoder and soxr HQ resampler).
    """
    if semitones == 0.0:
        return np.array(wave, dtype=np.float32)
    rate = 2.0 ** (-semitones / 12.0)
    stretched = stretch(wave, rate)
    shifted = _resample(stretched, sample_rate / rate, sample_rate)
    return _fix_length(shifted, len(wave)).astype(np.float32)


def apply_pitch_shift(waves: np.ndarray, draws: Draws, sample_rate: int) -> np.ndarray:
    """Pitch shift each applied row by its ``semitones`` (row by row): (B, T) → (B, T)."""
    waves = _as_batch(waves)
    out = waves.copy()
    for row in np.flatnonzero(np.asarray(draws["applied"], dtype=bool)):
        out[row] = shift_pitch(waves[row], float(draws["semitones"][row]), sample_rate)
    return out


def stretch_time(wave: np.ndarray, rate: float, resample: bool) -> np.ndarray:
    """Time stretch by ``rate`` and restore the length: (T,) → (T,) float32.

    Args:
        wave: (T,) clip.
        rate: Speed factor (> 1 faster).
        resample: False crops or zero-pads the end (pitch kept, tempo changed); True resamples
            the stretched clip back to T samples (tempo kept, pitch scaled by 1/rate).
    """
    if rate == 1.0:
        return np.array(wave, dtype=np.float32)
    stretched = stretch(wave, rate)
    if resample:
        stretched = _resample(stretched, len(stretched), len(wave))
    return _fix_length(stretched, len(wave)).astype(np.float32)


def apply_time_stretch(waves: np.ndarray, draws: Draws, sample_rate: int) -> np.ndarray:
    """Time stretch each applied row by its ``rate`` (row by row): (B, T) → (B, T)."""
    waves = _as_batch(waves)
    out = waves.copy()
    for row in np.flatnonzero(np.asarray(draws["applied"], dtype=bool)):
        out[row] = stretch_time(waves[row], float(draws["rate"][row]),
                                bool(draws["resample"][row]))
    return out


# --------------------------------------------------------------------------- per-clip API

Params = Any  # one of the *Params dataclasses


def _per_clip(
    wave: np.ndarray,
    rng: np.random.Generator,
    sample_rate: int,
    params_type: type,
    params: Mapping[str, Any],
    draw: Callable[[np.random.Generator, int, int, Any], Draw],
    apply: Callable[[np.ndarray, Draws, int], np.ndarray],
) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"wave must have shape (T,), got {wave.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    allowed = [field.name for field in dataclasses.fields(params_type)]
    for key in params:
        if key not in allowed:
            raise ValueError(f"unknown parameter {key!r}; allowed: {allowed}")
    config = params_type(**params)
    drawn = stack_draws([draw(rng, wave.shape[0], sample_rate, config)])
    return apply(wave[None, :], drawn, sample_rate)[0]


def pitch_shift(wave: np.ndarray, rng: np.random.Generator, *, sample_rate: int,
                **params: Any) -> np.ndarray:
    """Shift the pitch by a random number of semitones, keeping the tempo.

    Args:
        wave: (T,) float32 clip.
        rng: The only source of randomness.
        sample_rate: Samples per second.
        **params: Fields of :class:`PitchShiftParams`.

    Returns:
        (T,) float32.
    """
    return _per_clip(wave, rng, sample_rate, PitchShiftParams, params, draw_pitch_shift,
                     apply_pitch_shift)


def white_noise(wave: np.ndarray, rng: np.random.Generator, *, sample_rate: int,
                **params: Any) -> np.ndarray:
    """Add white noise at a random SNR (fields of :class:`WhiteNoiseParams`): (T,) → (T,)."""
    return _per_clip(wave, rng, sample_rate, WhiteNoiseParams, params, draw_white_noise,
                     apply_white_noise)


def mixed_noise(wave: np.ndarray, rng: np.random.Generator, *, sample_rate: int,
                **params: Any) -> np.ndarray:
    """Add noise of a random colour (fields of :class:`MixedNoiseParams`): (T,) → (T,)."""
    return _per_clip(wave, rng, sample_rate, MixedNoiseParams, params, draw_mixed_noise,
                     apply_mixed_noise)


def fade(wave: np.ndarray, rng: np.random.Generator, *, sample_rate: int,
         **params: Any) -> np.ndarray:
    """Fade in and out with a random curve and lengths (fields of :class:`FadeParams`)."""
    return _per_clip(wave, rng, sample_rate, FadeParams, params, draw_fade, apply_fade)


def time_mask(wave: np.ndarray, rng: np.random.Generator, *, sample_rate: int,
              **params: Any) -> np.ndarray:
    """Mask one random segment with low noise or a constant (fields of :class:`TimeMaskParams`)."""
    return _per_clip(wave, rng, sample_rate, TimeMaskParams, params, draw_time_mask,
                     apply_time_mask)


def time_shift(wave: np.ndarray, rng: np.random.Generator, *, sample_rate: int,
               **params: Any) -> np.ndarray:
    """Shift circularly by a random amount (fields of :class:`TimeShiftParams`)."""
    return _per_clip(wave, rng, sample_rate, TimeShiftParams, params, draw_time_shift,
                     apply_time_shift)


def time_stretch(wave: np.ndarray, rng: np.random.Generator, *, sample_rate: int,
                 **params: Any) -> np.ndarray:
    """Stretch in time at a random rate, then restore the length (:class:`TimeStretchParams`)."""
    return _per_clip(wave, rng, sample_rate, TimeStretchParams, params, draw_time_stretch,
                     apply_time_stretch)
