"""The CLAR paper's audio augmentations as small numpy functions.

Each augmentation is three pieces, so one clip and a whole batch go through the same code:

* a frozen ``*Params`` dataclass: the job-configurable ranges, with units in the names and the
  paper's values as defaults (``clar_ray.augment.presets`` holds the ``clar-code`` values);
* ``draw_<name>(rng, n_samples, sample_rate, params) -> Draw``: one clip's random parameters,
  drawn from the generator it is given and nothing else (never from the waveform);
* ``apply_<name>(waves, draws, sample_rate) -> waves``: the deterministic transform of a batch
  ``(B, T)`` given the stacked draws. Noise is generated for all rows at once; fade, time mask
  and time shift write only the samples they change, row slice by row slice (faster in numpy
  than (B, T) array ops); pitch shift and time stretch run the phase vocoder row by row.

The public per-clip function ``<name>(wave, rng, *, sample_rate, **params)`` is draw + apply on
one clip. Every draw begins with the coin ``applied = rng.random() < p`` and then draws all its
parameters whether or not the coin came up, so ``p`` changes nothing but the coin. Outputs are
new float32 arrays of the input's length: inputs are never modified (Ray may hand read-only
views). A row's result never depends on the other rows of its batch, to the bit.

Noise (white, coloured, the time mask's fill) comes from ``clar_ray.augment.noise``: a
counter-based hash keyed by 32 bits drawn from the generator, which the torch versions in
``clar_ray.augment.batch`` reproduce. Pitch shift and time stretch come from
``clar_ray.augment.vocoder``: librosa's phase vocoder and soxr resampling without librosa's
per-frame loop. Nothing here starts a thread pool.

Legend: B clips in a batch, T samples per clip, F frequency bins, N STFT frames.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from clar_ray.augment.noise import colored_noise, hash_normal, hash_uniform, unit_rms
from clar_ray.augment.vocoder import shift_pitch, stretch_time

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
        low, high = min(max(low, -cap), cap), min(max(high, -cap), cap)
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


_LOG10_E = np.float32(1.0 / math.log(10.0))
_HALF_PI = np.float32(math.pi / 2)


def _fade_ramp(n: int) -> np.ndarray:
    """float32 ``i / (n - 1)`` for i in [0, n): the ramp ``linspace(0, 1, n)`` of a fade."""
    return np.arange(n, dtype=np.float32) / np.float32(max(n - 1, 1))


def _fade_curve(shape: str, ramp: np.ndarray, fade_in: bool) -> np.ndarray:
    """Gain of a fade curve at ramp positions in [0, 1] (the curves of torchaudio's Fade).

    float32 throughout, like the torch version in ``clar_ray.augment.batch``: the gains agree
    with float64 to a few float32 ulps, at a third of the cost (the fade is the costliest
    step of the cheap set). ``ramp`` is float32 and may be overwritten.
    """
    t = ramp if fade_in else np.subtract(np.float32(1.0), ramp, out=ramp)  # the mirrored ramp
    if shape == "linear":
        gain = t
    elif shape == "exponential":  # 2**(t - 1) * t
        gain = np.exp2(t - np.float32(1.0)) * t
    elif shape == "logarithmic":  # log10(0.1 + t) + 1
        gain = np.log(t + np.float32(0.1)) * _LOG10_E + np.float32(1.0)
    elif shape == "quarter_sine":  # sin(t * pi / 2)
        gain = np.sin(t * _HALF_PI)
    elif shape == "half_sine":  # sin(t * pi - pi / 2) / 2 + 0.5
        half = np.float32(0.5)
        gain = np.sin((t - half) * np.float32(math.pi)) * half + half
    else:
        raise ValueError(f"unknown fade shape {shape!r}; allowed: {list(FADE_SHAPES)}")
    return np.minimum(np.maximum(gain, np.float32(0.0), out=gain), np.float32(1.0), out=gain)


def apply_fade(waves: np.ndarray, draws: Draws, sample_rate: int) -> np.ndarray:
    """Fade in and out: (B, T) → (B, T).

    The fade-in of length L multiplies the first L samples by the row's curve at
    ``linspace(0, 1, L)``, the fade-out the last L samples (torchaudio's ``Fade``); each
    fade-out curve is its fade-in curve mirrored (``curve_out(t) == curve_in(1 - t)`` for every
    shape). Rows are processed one by one: only the faded samples are touched, which beats
    (B, T) array ops.
    """
    waves = _as_batch(waves)
    out = waves.copy()
    n_samples = waves.shape[1]
    for row in np.flatnonzero(np.asarray(draws["applied"], dtype=bool)):
        shape = FADE_SHAPES[int(draws["shape"][row])]
        fade_in, fade_out = int(draws["fade_in_samples"][row]), int(draws["fade_out_samples"][row])
        if fade_in:
            out[row, :fade_in] *= _fade_curve(shape, _fade_ramp(fade_in), True)
        if fade_out:
            out[row, n_samples - fade_out:] *= _fade_curve(shape, _fade_ramp(fade_out), False)
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
        noise = unit_rms(hash_normal(np.asarray(draws["key"])[rows], waves.shape[1]))
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


# --------------------------------------------------------------------------- row by row


def apply_pitch_shift(waves: np.ndarray, draws: Draws, sample_rate: int) -> np.ndarray:
    """Pitch shift each applied row by its ``semitones`` (row by row): (B, T) → (B, T)."""
    waves = _as_batch(waves)
    out = waves.copy()
    for row in np.flatnonzero(np.asarray(draws["applied"], dtype=bool)):
        out[row] = shift_pitch(waves[row], float(draws["semitones"][row]), sample_rate)
    return out


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
