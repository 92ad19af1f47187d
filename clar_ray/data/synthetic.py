"""A built-in, procedurally generated dataset for the offline quickstart and tests.

Six kinds of sound that differ in temporal structure and timbre, so that their class survives the
paper's augmentations (pitch shift ±15 semitones, time stretch 0.5-1.5, fade in/out, time mask up
to 1/8 of the clip, circular time shift, white noise):

    harmonic       steady harmonic tone (sustained, tonal)
    noise_bursts   a few irregular bursts of coloured noise, 30-120 ms each (broadband, sparse)
    chirp_up       harmonic sweep rising 1.5-3 octaves (tonal, pitch goes up)
    chirp_down     harmonic sweep falling 1.5-3 octaves (tonal, pitch goes down)
    am_tone        harmonic tone, amplitude-modulated at 4-10 Hz with depth 0.7-1 (tonal, pulsing)
    click_train    regular clicks of 1-3 ms at 6-20 per second (impulsive, periodic)

Per clip, f0, harmonic roll-off, sweep range, modulation/click rate, onset, duration, level and a
faint noise floor are random. A clip is a pure function of ``(seed, kind index, clip index)``
(``clip_rng``), so generation is reproducible in any order on any number of workers.

Legend: T = samples.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["KINDS", "SyntheticSpec", "clip_path", "clip_rng", "parse_clip_path", "render"]

KINDS: tuple[str, ...] = (
    "harmonic",
    "noise_bursts",
    "chirp_up",
    "chirp_down",
    "am_tone",
    "click_train",
)

_PATH_RE = re.compile(r"^(?P<kind>[a-z_]+)/(?P=kind)_(?P<index>\d+)$")


def clip_rng(seed: int, kind_index: int, clip_index: int) -> np.random.Generator:
    """The generator that makes clip ``clip_index`` of kind ``kind_index`` under ``seed``."""
    if min(seed, kind_index, clip_index) < 0:
        raise ValueError(
            f"seed, kind_index and clip_index must be >= 0, got {seed}, {kind_index}, {clip_index}"
        )
    return np.random.default_rng([seed, kind_index, clip_index])


def clip_path(kind: str, clip_index: int) -> str:
    """The virtual relative path of a generated clip, e.g. ``harmonic/harmonic_00007``."""
    if kind not in KINDS:
        raise ValueError(f"unknown synthetic kind {kind!r}; allowed: {list(KINDS)}")
    return f"{kind}/{kind}_{clip_index:05d}"


def parse_clip_path(path: str) -> tuple[str, int]:
    """Inverse of ``clip_path``: ``"harmonic/harmonic_00007"`` → ``("harmonic", 7)``."""
    m = _PATH_RE.match(path)
    if m is None or m.group("kind") not in KINDS:
        raise ValueError(f"not a synthetic clip path: {path!r}")
    return m.group("kind"), int(m.group("index"))


def render(
    kind: str, rng: np.random.Generator, *, sample_rate: int, num_samples: int
) -> np.ndarray:
    """Generate one clip of a kind.

    Args:
        kind: one of ``KINDS``.
        rng: the clip's generator (see ``clip_rng``); the only source of randomness.
        sample_rate: Hz (>= 4000, so that the sweeps and harmonics fit).
        num_samples: clip length T.

    Returns:
        float32 (T,), peak between -20 and -3 dBFS.
    """
    if kind not in _RENDERERS:
        raise ValueError(f"unknown synthetic kind {kind!r}; allowed: {list(KINDS)}")
    if sample_rate < 4000:
        raise ValueError(f"sample_rate must be >= 4000 Hz for synthetic audio, got {sample_rate}")
    if num_samples <= 0:
        raise ValueError(f"num_samples must be > 0, got {num_samples}")
    # The sound event: starts in the first 15 % of the clip and lasts 70-100 % of the rest.
    onset = int(rng.uniform(0.0, 0.15) * num_samples)
    length = max(1, int(rng.uniform(0.7, 1.0) * (num_samples - onset)))
    event = _RENDERERS[kind](rng, sample_rate, length)
    wave = np.zeros(num_samples, dtype=np.float64)
    wave[onset : onset + length] = event[: num_samples - onset]
    peak = np.max(np.abs(wave))
    if peak > 0:
        wave *= 10.0 ** (rng.uniform(-20.0, -3.0) / 20.0) / peak
    noise_floor_db = rng.uniform(-70.0, -55.0)
    wave += rng.standard_normal(num_samples) * 10.0 ** (noise_floor_db / 20.0)
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


def _time(sample_rate: int, length: int) -> np.ndarray:
    return np.arange(length, dtype=np.float64) / sample_rate


def _envelope(sample_rate: int, length: int, attack_s: float, release_s: float) -> np.ndarray:
    env = np.ones(length)
    a = min(length, max(1, int(attack_s * sample_rate)))
    r = min(length - a, max(1, int(release_s * sample_rate)))
    env[:a] = np.linspace(0.0, 1.0, a)
    if r > 0:
        env[length - r :] = np.linspace(1.0, 0.0, r)
    return env


def _harmonic_stack(
    rng: np.random.Generator, sample_rate: int, phase: np.ndarray, top_ratio: float
) -> np.ndarray:
    """Sum of harmonics of an instantaneous phase (radians of the fundamental).

    ``top_ratio`` is the highest instantaneous f0 divided by the Nyquist-safe limit, so harmonics
    that would alias are left out.
    """
    n_harm = int(rng.integers(3, 9))
    rolloff = rng.uniform(0.5, 1.5)
    out = np.zeros_like(phase)
    for k in range(1, n_harm + 1):
        if k * top_ratio >= 1.0:
            break
        out += k**-rolloff * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    return out


def _tone(rng: np.random.Generator, sample_rate: int, length: int) -> np.ndarray:
    f0 = np.exp(rng.uniform(np.log(110.0), np.log(880.0)))
    phase = 2 * np.pi * f0 * _time(sample_rate, length)
    return _harmonic_stack(rng, sample_rate, phase, f0 / (0.45 * sample_rate))


def _harmonic(rng: np.random.Generator, sample_rate: int, length: int) -> np.ndarray:
    return _tone(rng, sample_rate, length) * _envelope(sample_rate, length, 0.01, 0.05)


def _am_tone(rng: np.random.Generator, sample_rate: int, length: int) -> np.ndarray:
    rate_hz = rng.uniform(4.0, 10.0)
    depth = rng.uniform(0.7, 1.0)
    mod = 1.0 - depth * 0.5 * (
        1.0 + np.cos(2 * np.pi * rate_hz * _time(sample_rate, length) + rng.uniform(0, 2 * np.pi))
    )
    return _tone(rng, sample_rate, length) * mod * _envelope(sample_rate, length, 0.01, 0.05)


def _chirp(rng: np.random.Generator, sample_rate: int, length: int, rising: bool) -> np.ndarray:
    octaves = rng.uniform(1.5, 3.0)
    low = np.exp(rng.uniform(np.log(100.0), np.log(400.0)))
    low = min(low, 0.4 * sample_rate / 2.0**octaves)  # keep the sweep's top below Nyquist
    duration = length / sample_rate
    t = _time(sample_rate, length)
    # Exponential sweep f(t) = low * 2**(octaves * u), u from 0 to 1 (or 1 to 0 when falling).
    u = t / duration if rising else 1.0 - t / duration
    freq = low * 2.0 ** (octaves * u)
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    stack = _harmonic_stack(rng, sample_rate, phase, low * 2.0**octaves / (0.45 * sample_rate))
    return stack * _envelope(sample_rate, length, 0.01, 0.03)


def _chirp_up(rng: np.random.Generator, sample_rate: int, length: int) -> np.ndarray:
    return _chirp(rng, sample_rate, length, rising=True)


def _chirp_down(rng: np.random.Generator, sample_rate: int, length: int) -> np.ndarray:
    return _chirp(rng, sample_rate, length, rising=False)


def _coloured_noise(rng: np.random.Generator, length: int) -> np.ndarray:
    """Noise with a random spectral slope between white and pink (1/f)."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    freqs = np.arange(spectrum.shape[0], dtype=np.float64)
    freqs[0] = 1.0
    spectrum *= freqs ** (-rng.uniform(0.0, 1.0) / 2.0)
    noise = np.fft.irfft(spectrum, n=length)
    return noise / (np.max(np.abs(noise)) + 1e-12)


def _noise_bursts(rng: np.random.Generator, sample_rate: int, length: int) -> np.ndarray:
    out = np.zeros(length)
    noise = _coloured_noise(rng, length)
    for _ in range(int(rng.integers(3, 8))):
        burst = min(length, int(rng.uniform(0.03, 0.12) * sample_rate))
        start = int(rng.integers(0, length - burst + 1))
        decay = np.exp(-np.arange(burst) / (burst * rng.uniform(0.2, 0.6)))
        out[start : start + burst] += noise[start : start + burst] * decay * rng.uniform(0.4, 1.0)
    return out


def _click_train(rng: np.random.Generator, sample_rate: int, length: int) -> np.ndarray:
    rate_hz = rng.uniform(6.0, 20.0)
    period = sample_rate / rate_hz
    click_len = max(2, int(rng.uniform(0.001, 0.003) * sample_rate))
    click = rng.standard_normal(click_len) * np.exp(-np.arange(click_len) / (click_len / 4.0))
    out = np.zeros(length)
    position = rng.uniform(0.0, period)
    while position < length:
        start = int(position)
        stop = min(length, start + click_len)
        out[start:stop] += click[: stop - start]
        position += period * rng.uniform(0.97, 1.03)  # slight jitter, still regular
    return out


_RENDERERS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "harmonic": _harmonic,
    "noise_bursts": _noise_bursts,
    "chirp_up": _chirp_up,
    "chirp_down": _chirp_down,
    "am_tone": _am_tone,
    "click_train": _click_train,
}


@dataclass(frozen=True)
class SyntheticSpec:
    """What a synthetic listing needs to render its clips on any worker.

    Attributes:
        seed: the dataset seed.
        kinds: the kinds in use, in label order (a prefix of ``KINDS``).
    """

    seed: int
    kinds: tuple[str, ...]

    def render_path(self, path: str, *, sample_rate: int, num_samples: int) -> np.ndarray:
        """Render the clip a ``clip_path`` names: float32 (T,)."""
        kind, index = parse_clip_path(path)
        if kind not in self.kinds:
            raise ValueError(f"kind {kind!r} of {path!r} is not in this dataset: {self.kinds}")
        rng = clip_rng(self.seed, KINDS.index(kind), index)
        return render(kind, rng, sample_rate=sample_rate, num_samples=num_samples)
