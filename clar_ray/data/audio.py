"""Audio decoding and conditioning: decode → mono → resample → pad/crop → 16-bit PCM.

Pure functions on numpy arrays, used by ``prepare.py`` inside Ray tasks and usable on their own.

Legend: T = samples (time), C = channels.

Policies (the manifest records what they did):
    * Only the first ``clip_seconds`` (plus a short margin for the resampler) of a file are decoded,
      so very long files cost no more than short ones; longer audio is cropped from the start.
    * Shorter audio is right-padded with zeros.
    * Channels are averaged to mono.
    * Samples that are NaN or infinite make the file unusable (:class:`AudioError`); the file is
      skipped with that reason rather than silently repaired.
    * Samples outside [-1, 1] (float files) are clipped when converted to 16-bit PCM.
    * Silence is kept: a silent clip is valid audio (e.g. a quiet take). ``is_silent`` lets the
      caller note it in the manifest.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioError",
    "Decoded",
    "condition",
    "decode",
    "fit_length",
    "is_silent",
    "resample",
    "to_mono",
    "to_pcm16",
]

#: File name suffixes (lower case, with dot) that soundfile/libsndfile can decode.
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au"}
)

#: Extra audio decoded past the clip end so that the resampler sees real signal at the clip's edge.
RESAMPLE_MARGIN_SECONDS = 0.05

_PCM16_SCALE = 32767.0


class AudioError(ValueError):
    """A file that cannot become a clip; ``reason`` is the short text recorded in the manifest."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Decoded:
    """Decoded audio.

    Attributes:
        samples: float32 array of shape (T, C); T may be a prefix of the file (see ``decode``).
        sample_rate: the file's sample rate in Hz.
        total_frames: the number of frames the file declares (>= T); -1 when unknown.
    """

    samples: np.ndarray
    sample_rate: int
    total_frames: int


def decode(source: BinaryIO | bytes | str, *, max_seconds: float | None = None) -> Decoded:
    """Decode an audio file (WAV, FLAC, OGG/Opus, MP3, AIFF, ...) with soundfile.

    Args:
        source: a seekable binary file-like object, the file's bytes, or a local path.
        max_seconds: decode at most this many seconds (plus ``RESAMPLE_MARGIN_SECONDS``) from the
            start; None decodes the whole file.

    Returns:
        The decoded samples, float32 (T, C), with the file's sample rate.

    Raises:
        AudioError: the input is empty, not audio, has no frames, or has NaN/inf samples.
    """
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0 or None, got {max_seconds}")
    if isinstance(source, bytes | bytearray | memoryview):
        if len(source) == 0:
            raise AudioError("empty file (0 bytes)")
        source = io.BytesIO(source)
    try:
        with sf.SoundFile(source) as f:
            sample_rate = int(f.samplerate)
            total = int(f.frames) if f.frames is not None and f.frames >= 0 else -1
            if sample_rate <= 0:
                raise AudioError(f"invalid sample rate {sample_rate} Hz")
            frames = -1
            if max_seconds is not None:
                frames = math.ceil((max_seconds + RESAMPLE_MARGIN_SECONDS) * sample_rate)
            samples = f.read(frames=frames, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, OSError, EOFError, ValueError) as e:
        raise AudioError(f"cannot decode: {_short(e)}") from e
    if samples.shape[0] == 0:
        raise AudioError("no audio frames (0 samples decoded)")
    if not np.isfinite(samples).all():
        bad = int(np.size(samples) - np.count_nonzero(np.isfinite(samples)))
        raise AudioError(f"non-finite samples (NaN or inf): {bad} of {samples.size}")
    return Decoded(samples=samples, sample_rate=sample_rate, total_frames=total)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average channels: (T, C) or (T,) → float32 (T,)."""
    if samples.ndim == 1:
        return samples.astype(np.float32, copy=False)
    if samples.ndim != 2:
        raise ValueError(f"samples must have shape (T,) or (T, C), got {samples.shape}")
    if samples.shape[1] == 1:
        return samples[:, 0].astype(np.float32, copy=False)
    return samples.mean(axis=1, dtype=np.float64).astype(np.float32)


def resample(wave: np.ndarray, orig_rate_hz: int, target_rate_hz: int) -> np.ndarray:
    """Resample a mono float wave (T,) with soxr (high quality); a no-op when the rates match."""
    if orig_rate_hz <= 0 or target_rate_hz <= 0:
        raise ValueError(
            f"sample rates must be > 0, got orig={orig_rate_hz} target={target_rate_hz}"
        )
    if orig_rate_hz == target_rate_hz:
        return wave.astype(np.float32, copy=False)
    out = soxr.resample(wave.astype(np.float32, copy=False), orig_rate_hz, target_rate_hz, "HQ")
    return np.asarray(out, dtype=np.float32)


def fit_length(wave: np.ndarray, num_samples: int) -> np.ndarray:
    """Crop (keep the start) or right-pad with zeros a wave (T,) to exactly ``num_samples``."""
    if num_samples <= 0:
        raise ValueError(f"num_samples must be > 0, got {num_samples}")
    n = wave.shape[0]
    if n >= num_samples:
        return wave[:num_samples]
    out = np.zeros(num_samples, dtype=wave.dtype)
    out[:n] = wave
    return out


def to_pcm16(wave: np.ndarray) -> np.ndarray:
    """Float wave in [-1, 1] → int16 PCM; values outside the range are clipped."""
    scaled = np.rint(np.clip(wave, -1.0, 1.0) * _PCM16_SCALE)
    return scaled.astype(np.int16)


def condition(
    samples: np.ndarray, sample_rate_hz: int, *, target_rate_hz: int, num_samples: int
) -> np.ndarray:
    """Decoded samples (T, C) or (T,) → int16 PCM clip of ``num_samples`` at the target rate.

    Raises:
        AudioError: the samples contain NaN or inf.
    """
    if not np.isfinite(samples).all():
        raise AudioError("non-finite samples (NaN or inf)")
    wave = to_mono(samples)
    # Resample only what the clip needs (plus the margin, for a clean edge).
    keep = math.ceil((num_samples / target_rate_hz + RESAMPLE_MARGIN_SECONDS) * sample_rate_hz)
    wave = resample(wave[:keep], sample_rate_hz, target_rate_hz)
    return to_pcm16(fit_length(wave, num_samples))


def is_silent(pcm: np.ndarray) -> bool:
    """True when a PCM clip is all zeros (digital silence at 16-bit resolution)."""
    return not np.any(pcm)


def _short(e: BaseException, limit: int = 200) -> str:
    text = str(e).strip() or type(e).__name__
    # libsndfile names the Python object it was given; that address is noise in a manifest.
    text = text.replace("\n", " ")
    if " <" in text and ">:" in text:
        head, _, tail = text.partition(" <")
        text = head + ":" + tail.partition(">:")[2]
    return text[:limit]
