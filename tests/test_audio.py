"""Tests for clar_ray.data.audio: decode → mono → resample → pad/crop → PCM, on tiny inputs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from clar_ray.data import audio
from clar_ray.data.audio import AudioError


def _sine(freq_hz: float, sample_rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(sample_rate * seconds))) / sample_rate
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _wav_bytes(x: np.ndarray, sample_rate: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sample_rate, subtype=subtype, format=fmt)
    return buf.getvalue()


def _peak_hz(x: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sample_rate / len(x))


def test_to_mono_averages_channels_and_keeps_mono():
    stereo = np.array([[1.0, -1.0], [0.5, 0.25]], dtype=np.float32)
    np.testing.assert_allclose(audio.to_mono(stereo), [0.0, 0.375])
    one = np.array([[0.1], [0.2]], dtype=np.float32)
    assert audio.to_mono(one).shape == (2,)
    assert audio.to_mono(one).dtype == np.float32
    with pytest.raises(ValueError, match="shape"):
        audio.to_mono(np.zeros((2, 2, 2)))


def test_fit_length_crops_from_start_and_right_pads_with_zeros():
    x = np.arange(1, 6, dtype=np.float32)
    np.testing.assert_array_equal(audio.fit_length(x, 3), [1, 2, 3])
    np.testing.assert_array_equal(audio.fit_length(x, 7), [1, 2, 3, 4, 5, 0, 0])
    np.testing.assert_array_equal(audio.fit_length(x, 5), x)
    with pytest.raises(ValueError, match="num_samples"):
        audio.fit_length(x, 0)


def test_to_pcm16_scales_rounds_and_clips():
    x = np.array([0.0, 1.0, -1.0, 2.0, -3.0, 0.5, 1e-6], dtype=np.float32)
    pcm = audio.to_pcm16(x)
    assert pcm.dtype == np.int16
    np.testing.assert_array_equal(pcm, [0, 32767, -32767, 32767, -32767, 16384, 0])


@pytest.mark.parametrize("orig", [8000, 22050, 44100, 48000])
def test_resample_keeps_frequency_and_scales_length(orig):
    x = _sine(440.0, orig, 0.5)
    y = audio.resample(x, orig, 16000)
    assert y.dtype == np.float32
    assert abs(len(y) - 8000) <= 1
    assert abs(_peak_hz(y, 16000) - 440.0) < 4.0


def test_resample_same_rate_is_identity():
    x = _sine(100.0, 16000, 0.1)
    np.testing.assert_array_equal(audio.resample(x, 16000, 16000), x)
    with pytest.raises(ValueError, match="sample rates"):
        audio.resample(x, 0, 16000)


def test_decode_bytes_filelike_and_path_agree(tmp_path: Path):
    x = _sine(300.0, 16000, 0.25)
    data = _wav_bytes(x, 16000)
    (tmp_path / "a b.wav").write_bytes(data)
    a = audio.decode(data)
    b = audio.decode(io.BytesIO(data))
    c = audio.decode(str(tmp_path / "a b.wav"))
    assert a.samples.shape == (4000, 1) and a.sample_rate == 16000 and a.total_frames == 4000
    np.testing.assert_array_equal(a.samples, b.samples)
    np.testing.assert_array_equal(a.samples, c.samples)


def test_decode_reads_only_what_the_clip_needs():
    long = _sine(200.0, 8000, 60.0)  # one minute
    d = audio.decode(_wav_bytes(long, 8000), max_seconds=1.0)
    expected = int(np.ceil((1.0 + audio.RESAMPLE_MARGIN_SECONDS) * 8000))
    assert d.samples.shape[0] == expected
    assert d.total_frames == long.shape[0]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"not audio at all\n" * 20, "cannot decode"),
        (_wav_bytes(_sine(1.0, 8000, 0.1), 8000)[:20], "cannot decode"),  # header cut
    ],
)
def test_decode_rejects_empty_garbage_and_cut_header(data, reason):
    with pytest.raises(AudioError, match=reason) as info:
        audio.decode(data)
    assert info.value.reason.startswith(reason)
    assert "0x" not in info.value.reason  # no object addresses in manifest reasons


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_decode_rejects_non_finite_samples(bad):
    x = _sine(100.0, 8000, 0.1)
    x[10] = bad
    with pytest.raises(AudioError, match="non-finite"):
        audio.decode(_wav_bytes(x, 8000, subtype="FLOAT"))


def test_decode_keeps_the_readable_part_of_a_truncated_wav():
    data = _wav_bytes(_sine(100.0, 8000, 1.0), 8000)
    d = audio.decode(data[: len(data) // 2])
    assert 0 < d.samples.shape[0] < 8000


def test_decode_zero_frames_is_an_error():
    with pytest.raises(AudioError, match="no audio frames"):
        audio.decode(_wav_bytes(np.zeros(0, dtype=np.float32), 8000))


@pytest.mark.parametrize("fmt", ["FLAC", "OGG"])
def test_decode_other_formats(fmt):
    x = _sine(440.0, 16000, 0.2)
    subtype = "VORBIS" if fmt == "OGG" else "PCM_16"
    d = audio.decode(_wav_bytes(x, 16000, subtype=subtype, fmt=fmt))
    assert d.sample_rate == 16000
    assert abs(d.samples.shape[0] - 3200) <= 64


@pytest.mark.parametrize(
    ("orig", "channels", "seconds"),
    [(8000, 1, 0.3), (22050, 2, 1.7), (44100, 1, 1.0), (48000, 2, 0.01)],
)
def test_condition_gives_exact_length_int16_at_target_rate(orig, channels, seconds):
    x = _sine(440.0, orig, seconds)
    samples = np.stack([x] * channels, axis=1)
    pcm = audio.condition(samples, orig, target_rate_hz=16000, num_samples=16000)
    assert pcm.dtype == np.int16 and pcm.shape == (16000,)
    n_real = min(16000, int(round(seconds * 16000)))
    assert np.all(pcm[n_real + 64 :] == 0)  # right-padded with zeros
    if n_real >= 1600:
        assert abs(_peak_hz(pcm[:n_real].astype(np.float32), 16000) - 440.0) < 16000 / n_real + 2


def test_condition_rejects_nan_and_mixes_opposite_channels_to_silence():
    with pytest.raises(AudioError, match="non-finite"):
        audio.condition(np.array([[np.nan]]), 8000, target_rate_hz=8000, num_samples=4)
    x = _sine(100.0, 8000, 0.1)
    pcm = audio.condition(np.stack([x, -x], 1), 8000, target_rate_hz=8000, num_samples=800)
    assert audio.is_silent(pcm)
    assert not audio.is_silent(audio.to_pcm16(x))


def test_decode_real_mp3_when_present(shared_data: Path):
    files = sorted((shared_data / "philharmonia").glob("*/*.mp3"))
    if not files:
        pytest.skip("no Philharmonia MP3s in the shared data")
    d = audio.decode(files[0].read_bytes(), max_seconds=1.0)
    assert d.sample_rate == 44100
    pcm = audio.condition(d.samples, d.sample_rate, target_rate_hz=16000, num_samples=16000)
    assert pcm.shape == (16000,) and not audio.is_silent(pcm)
