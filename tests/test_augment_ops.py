"""Properties of the numpy augmentations: degenerate ranges against hand-computed arrays,
dtype/shape kept, inputs untouched, and the sound of pitch shift and time stretch."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch
import torchaudio

from clar_ray import augment as A
from clar_ray.augment import AUGMENTATIONS, PRESETS, noise, resolve_params, vocoder
from clar_ray.augment.ops import fade as fade_module
from clar_ray.augment.ops import time_mask as time_mask_module

SR = 16000


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _noise_clip(n: int = 4000, seed: int = 1) -> np.ndarray:
    wave = 0.1 * np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    wave.flags.writeable = False  # as Ray may hand it
    return wave


def _sine(freq: float, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(wave: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / SR)[np.argmax(spectrum)])


def _burst(seconds: float = 2.0, start: float = 0.5, stop: float = 1.0,
           freq: float = 440.0) -> np.ndarray:
    wave = _sine(freq, seconds)
    t = np.arange(len(wave)) / SR
    return np.where((t >= start) & (t < stop), wave, 0.0).astype(np.float32)


def _on_off_seconds(wave: np.ndarray) -> tuple[float, float]:
    """Where the 10 ms RMS envelope first and last exceeds half its maximum."""
    frames = np.sqrt(np.mean(wave[: len(wave) // 160 * 160].reshape(-1, 160) ** 2, axis=1))
    loud = np.flatnonzero(frames > 0.5 * frames.max())
    return loud[0] * 0.01, (loud[-1] + 1) * 0.01


# ----------------------------------------------------------------- every augmentation


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_keeps_dtype_shape_and_input(name: str, preset: str) -> None:
    spec = AUGMENTATIONS[name]
    wave = _noise_clip()
    before = wave.copy()
    params = resolve_params(name, preset, {"p": 1.0})
    out = spec.function(wave, _rng(), sample_rate=SR, **params)
    assert out.dtype == np.float32 and out.shape == wave.shape
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(wave, before)
    again = spec.function(wave, _rng(), sample_rate=SR, **params)
    np.testing.assert_array_equal(out, again)  # the generator is the only randomness


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_p_zero_is_identity(name: str, preset: str) -> None:
    wave = _noise_clip()
    params = resolve_params(name, preset, {"p": 0.0})
    out = AUGMENTATIONS[name].function(wave, _rng(3), sample_rate=SR, **params)
    np.testing.assert_array_equal(out, wave)


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_changes_the_clip_when_applied(name: str) -> None:
    wave = _noise_clip()
    out = AUGMENTATIONS[name].function(wave, _rng(5), sample_rate=SR)
    assert not np.allclose(out, wave)


def test_unknown_parameter_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown parameter 'max_shift'.*max_shift_fraction"):
        A.time_shift(_noise_clip(), _rng(), sample_rate=SR, max_shift=3)
    with pytest.raises(ValueError, match=r"min_semitones must be <= max_semitones, got 3 > 1"):
        A.pitch_shift(_noise_clip(), _rng(), sample_rate=SR, min_semitones=3, max_semitones=1)
    with pytest.raises(ValueError, match=r"wave must have shape \(T,\)"):
        A.fade(np.zeros((2, 8), np.float32), _rng(), sample_rate=SR)


# ----------------------------------------------------------------- time shift


@pytest.mark.parametrize("k", [3, -5, 0])
def test_fixed_time_shift_is_np_roll(k: int) -> None:
    wave = _noise_clip(64)
    out = A.time_shift(wave, _rng(), sample_rate=SR, min_shift_fraction=k / 64,
                       max_shift_fraction=k / 64)
    np.testing.assert_array_equal(out, np.roll(wave, k))


def test_time_shift_stays_within_the_cap() -> None:
    wave = np.arange(1000, dtype=np.float32)
    for seed in range(20):
        out = A.time_shift(wave, _rng(seed), sample_rate=1000, max_shift_seconds=0.01)
        shift = int(np.flatnonzero(out == 0)[0])  # where sample 0 went
        assert min(shift, 1000 - shift) <= 10
    out = A.time_shift(wave, _rng(), sample_rate=1000, min_shift_fraction=0.3,
                       max_shift_seconds=0.01)
    np.testing.assert_array_equal(out, np.roll(wave, 10))  # a range beyond the cap → the cap


# ----------------------------------------------------------------- fade


def test_fixed_linear_fade_is_the_hand_ramp() -> None:
    wave = np.ones(20, np.float32)
    out = A.fade(wave, _rng(), sample_rate=SR, shapes=("linear",),
                 min_fade_in_fraction=0.25, max_fade_in_fraction=0.25,
                 min_fade_out_fraction=0.2, max_fade_out_fraction=0.2)
    expected = np.ones(20)
    expected[:5] = [0, 0.25, 0.5, 0.75, 1]
    expected[-4:] = [1, 2 / 3, 1 / 3, 0]
    np.testing.assert_allclose(out, expected, atol=1e-7)


@pytest.mark.parametrize("shape", fade_module.FADE_SHAPES)
def test_fade_curves_match_torchaudio(shape: str) -> None:
    wave = _noise_clip(40)
    out = A.fade(wave, _rng(), sample_rate=SR, shapes=(shape,),
                 min_fade_in_fraction=0.3, max_fade_in_fraction=0.3,
                 min_fade_out_fraction=0.2, max_fade_out_fraction=0.2)
    reference = torchaudio.transforms.Fade(12, 8, shape)(torch.from_numpy(wave.copy()))
    np.testing.assert_allclose(out, reference.numpy(), atol=1e-6)


def test_exponential_fade_by_hand() -> None:
    out = A.fade(np.ones(5, np.float32), _rng(), sample_rate=SR, shapes=("exponential",),
                 min_fade_in_fraction=1.0, max_fade_in_fraction=1.0,
                 max_fade_out_fraction=0.0)
    t = np.linspace(0, 1, 5)
    np.testing.assert_allclose(out, 2 ** (t - 1) * t, atol=1e-7)


def _fade_reference(shape: str, length: int, fade_in: bool) -> np.ndarray:
    """torchaudio's Fade curves written out in float64."""
    t = np.linspace(0.0, 1.0, length)
    curves = {
        "linear": (t, 1 - t),
        "exponential": (2 ** (t - 1) * t, 2 ** (-t) * (1 - t)),
        "logarithmic": (np.log10(0.1 + t) + 1, np.log10(1.1 - t) + 1),
        "quarter_sine": (np.sin(t * np.pi / 2), np.sin(t * np.pi / 2 + np.pi / 2)),
        "half_sine": (np.sin(t * np.pi - np.pi / 2) / 2 + 0.5,
                      np.sin(t * np.pi + np.pi / 2) / 2 + 0.5),
    }
    return np.clip(curves[shape][0 if fade_in else 1], 0.0, 1.0)


@pytest.mark.parametrize("shape", fade_module.FADE_SHAPES)
@pytest.mark.parametrize("length", [1, 2, 3, 401, 8000])
def test_float32_fade_curves_are_the_float64_curves_to_float32_precision(shape: str,
                                                                         length: int) -> None:
    # The curves are computed in float32 for speed: a few float32 ulps (1.2e-7 at 1) off the
    # float64 formulas, never more, at any length up to half a 1-s clip at 16 kHz.
    for fade_in in (True, False):
        gain = fade_module._fade_curve(shape, fade_module._fade_ramp(length), fade_in)
        assert gain.dtype == np.float32 and gain.shape == (length,)
        np.testing.assert_allclose(gain, _fade_reference(shape, length, fade_in), rtol=0,
                                   atol=5e-7)


def test_random_fades_take_at_most_half_the_clip_each() -> None:
    params = fade_module.FadeParams()
    draws = [fade_module.draw_fade(_rng(seed), 100, SR, params) for seed in range(200)]
    assert all(0 <= d["fade_in_samples"] <= 50 and 0 <= d["fade_out_samples"] <= 50
               for d in draws)
    assert {fade_module.FADE_SHAPES[d["shape"]] for d in draws} == {"linear", "logarithmic",
                                                                    "exponential"}
    assert max(d["fade_in_samples"] for d in draws) >= 45


# ----------------------------------------------------------------- time mask


def test_mask_at_fixed_position_by_hand() -> None:
    wave = np.arange(1, 11, dtype=np.float32)[None, :]
    draws = {"applied": np.array([True]), "start": np.array([3]), "length": np.array([4]),
             "fill_noise": np.array([False]), "noise_std": np.array([0.01]),
             "constant_value": np.array([-1.0]), "key": np.array([7])}
    out = time_mask_module.apply_time_mask(wave, draws, SR)
    np.testing.assert_array_equal(out[0], [1, 2, 3, -1, -1, -1, -1, 8, 9, 10])


def test_full_length_constant_mask() -> None:
    out = A.time_mask(_noise_clip(16), _rng(), sample_rate=SR, min_mask_fraction=1.0,
                      max_mask_fraction=1.0, fills=("constant",), constant_value=0.25)
    np.testing.assert_array_equal(out, np.full(16, 0.25, np.float32))


def test_random_mask_is_one_short_segment_of_low_noise() -> None:
    wave = np.ones(8000, np.float32)
    for seed in range(10):
        out = A.time_mask(wave, _rng(seed), sample_rate=SR, fills=("noise",))
        changed = np.flatnonzero(out != 1.0)
        if changed.size:
            assert changed[-1] - changed[0] + 1 <= 1000  # at most 1/8 of the clip
            assert np.std(out[changed]) < 0.02
    out = A.time_mask(wave, _rng(0), sample_rate=SR, fills=("noise",), min_mask_fraction=0.125)
    masked = out[out != 1.0]
    assert masked.size == 1000 and abs(np.std(masked) - 0.01) < 0.001


# ----------------------------------------------------------------- noise


def _snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(clean.astype(np.float64) ** 2)
                               / np.mean((noisy - clean).astype(np.float64) ** 2)))


def test_white_noise_at_fixed_snr() -> None:
    wave = _sine(440, 0.5)
    out = A.white_noise(wave, _rng(), sample_rate=SR, min_snr_db=10.0, max_snr_db=10.0)
    assert abs(_snr_db(wave, out) - 10.0) < 1e-3
    assert np.array_equal(A.white_noise(np.zeros(64, np.float32), _rng(), sample_rate=SR),
                          np.zeros(64, np.float32))  # SNR is relative: silence stays silent


def _spectral_slope(noise: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(noise.astype(np.float64))) ** 2
    freqs = np.arange(len(power))
    band = slice(10, len(power) // 2)
    return float(np.polyfit(np.log(freqs[band]), np.log(power[band]), 1)[0])


@pytest.mark.parametrize(("color", "slope"), [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_mixed_noise_colours_and_snr(color: str, slope: float) -> None:
    wave = _sine(440, 1.0)
    out = A.mixed_noise(wave, _rng(), sample_rate=SR, colors=(color,), min_snr_db=5.0,
                        max_snr_db=5.0)
    assert abs(_snr_db(wave, out) - 5.0) < 1e-3
    assert abs(_spectral_slope(out - wave) - slope) < 0.25


def test_clar_code_mixed_noise_is_clipped_to_unit_range() -> None:
    wave = _sine(440, 0.25)
    for color in ("pink", "brown"):
        out = A.mixed_noise(wave, _rng(), sample_rate=SR, colors=(color,), style="clar-code")
        assert out.min() >= 0.0 and out.max() <= 1.0 and out.max() > 0.1
    out = A.mixed_noise(wave, _rng(), sample_rate=SR, colors=("none",))
    np.testing.assert_array_equal(out, wave)


def test_hashed_noise_is_standard_normal_and_independent_per_key() -> None:
    normal = noise.hash_normal(np.array([1, 2, 2**32 - 1]), 20000)
    assert np.all(np.abs(normal.mean(axis=1)) < 0.03)
    assert np.all(np.abs(normal.std(axis=1) - 1) < 0.03)
    assert abs(np.corrcoef(normal[0], normal[1])[0, 1]) < 0.03
    np.testing.assert_array_equal(normal[1], noise.hash_normal(np.array([2]), 20000)[0])
    np.testing.assert_array_equal(normal[:, 123:456],
                                  noise.hash_normal(np.array([1, 2, 2**32 - 1]), 333, 123))


# ----------------------------------------------------------------- pitch shift, time stretch


@pytest.mark.parametrize("semitones", [-12.0, -5.0, 3.0, 7.0])
def test_pitch_shift_moves_a_sine_by_two_to_the_n_over_12(semitones: float) -> None:
    out = A.pitch_shift(_sine(440.0), _rng(), sample_rate=SR, min_semitones=semitones,
                        max_semitones=semitones)
    expected = 440.0 * 2 ** (semitones / 12)
    assert abs(_peak_hz(out) - expected) < 0.01 * expected


@pytest.mark.parametrize("semitones", [-15.0, 4.5, 15.0])
def test_pitch_shift_matches_librosa(semitones: float) -> None:
    wave = _sine(300.0) + _noise_clip(SR)
    ours = vocoder.shift_pitch(wave, semitones, SR)
    theirs = librosa.effects.pitch_shift(wave, sr=SR, n_steps=semitones)
    np.testing.assert_allclose(ours, theirs, atol=3e-3)


@pytest.mark.parametrize("rate", [0.5, 0.8, 1.3, 1.5])
def test_stretch_matches_librosa(rate: float) -> None:
    wave = _sine(300.0) + _noise_clip(SR)
    ours = vocoder.stretch(wave, rate)
    theirs = librosa.effects.time_stretch(wave, rate=rate)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=5e-3)


@pytest.mark.filterwarnings("ignore:n_fft=2048 is too large")  # librosa's, on purpose here
@pytest.mark.parametrize("n_samples", [300, 1000, 1600, 2600])
@pytest.mark.parametrize("rate", [0.5, 1.5])
def test_stretch_of_clips_a_few_frames_long_matches_librosa(n_samples: int, rate: float) -> None:
    # One to six frames: every block's sum of squared windows is an edge case.
    wave = (_sine(300.0) + _noise_clip(SR))[:n_samples]
    ours = vocoder.stretch(wave, rate)
    theirs = librosa.effects.time_stretch(wave, rate=rate)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=5e-3)


@pytest.mark.parametrize("rate", [0.75, 1.25])
def test_paper_time_stretch_keeps_pitch_and_changes_tempo(rate: float) -> None:
    burst = _burst()
    out = A.time_stretch(burst, _rng(), sample_rate=SR, min_rate=rate, max_rate=rate)
    assert out.shape == burst.shape
    assert abs(_peak_hz(out) - 440.0) < 5.0
    onset, offset = _on_off_seconds(out)
    assert abs(onset - 0.5 / rate) < 0.06 and abs(offset - 1.0 / rate) < 0.06


@pytest.mark.parametrize("rate", [0.75, 1.25])
def test_clar_code_time_stretch_changes_pitch_and_keeps_tempo(rate: float) -> None:
    burst = _burst()
    params = resolve_params("time_stretch", "clar-code",
                            {"p": 1.0, "min_rate": rate, "max_rate": rate})
    out = A.time_stretch(burst, _rng(), sample_rate=SR, **params)
    assert out.shape == burst.shape
    assert abs(_peak_hz(out) - 440.0 / rate) < 0.01 * 440 / rate
    onset, offset = _on_off_seconds(out)
    assert abs(onset - 0.5) < 0.06 and abs(offset - 1.0) < 0.06
