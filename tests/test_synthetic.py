"""Tests for clar_ray.data.synthetic: determinism, levels, and classes that survive augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from clar_ray.data import synthetic
from clar_ray.data.synthetic import KINDS, SyntheticSpec, clip_rng, render

SR = 16000
T = 16000


@pytest.mark.parametrize("kind", KINDS)
def test_render_shape_dtype_level_and_determinism(kind):
    a = render(kind, clip_rng(0, KINDS.index(kind), 3), sample_rate=SR, num_samples=T)
    b = render(kind, clip_rng(0, KINDS.index(kind), 3), sample_rate=SR, num_samples=T)
    c = render(kind, clip_rng(0, KINDS.index(kind), 4), sample_rate=SR, num_samples=T)
    assert a.dtype == np.float32 and a.shape == (T,)
    assert np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    peak_db = 20 * np.log10(np.max(np.abs(a)))
    assert -20.5 < peak_db < -2.5


@pytest.mark.parametrize("sample_rate", [8000, 22050, 44100])
def test_render_other_rates_and_lengths(sample_rate):
    for kind in KINDS:
        x = render(kind, clip_rng(1, 0, 0), sample_rate=sample_rate, num_samples=777)
        assert x.shape == (777,) and np.all(np.isfinite(x))


def test_render_rejects_bad_arguments():
    rng = clip_rng(0, 0, 0)
    with pytest.raises(ValueError, match="unknown synthetic kind"):
        render("violin", rng, sample_rate=SR, num_samples=T)
    with pytest.raises(ValueError, match="sample_rate"):
        render("harmonic", rng, sample_rate=1000, num_samples=T)
    with pytest.raises(ValueError, match="num_samples"):
        render("harmonic", rng, sample_rate=SR, num_samples=0)
    with pytest.raises(ValueError, match=">= 0"):
        clip_rng(-1, 0, 0)


def test_clip_path_round_trip_and_spec_render():
    path = synthetic.clip_path("chirp_up", 12)
    assert path == "chirp_up/chirp_up_00012"
    assert synthetic.parse_clip_path(path) == ("chirp_up", 12)
    with pytest.raises(ValueError, match="not a synthetic clip path"):
        synthetic.parse_clip_path("chirp_up/harmonic_00001")
    spec = SyntheticSpec(seed=5, kinds=KINDS[:3])
    x = spec.render_path(path, sample_rate=SR, num_samples=T)
    np.testing.assert_array_equal(
        x, render("chirp_up", clip_rng(5, 2, 12), sample_rate=SR, num_samples=T)
    )
    with pytest.raises(ValueError, match="not in this dataset"):
        spec.render_path("click_train/click_train_00000", sample_rate=SR, num_samples=T)


# ---- the classes survive the paper's augmentations -------------------------------------------


def _augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A harsh stand-in for the paper's chain: pitch ±15 semitones done as a speed change (so the
    tempo changes by the same 0.42-2.4 factor, more than time stretch 0.5-1.5), fade in/out, a
    time mask up to 1/8, a circular shift and white noise at 10-30 dB SNR."""
    factor = 2 ** (rng.uniform(-15, 15) / 12)
    y = soxr.resample(x, SR, int(SR / factor))
    y = np.pad(y, (0, max(0, T - len(y))))[:T].astype(np.float64)
    env = np.ones(T)
    fade_in, fade_out = (int(rng.uniform(0, 0.5) * T) for _ in range(2))
    if fade_in:
        env[:fade_in] = np.linspace(0, 1, fade_in)
    if fade_out:
        env[T - fade_out :] = np.minimum(env[T - fade_out :], np.linspace(1, 0, fade_out))
    y *= env
    width = int(rng.uniform(0, 1 / 8) * T)
    start = int(rng.integers(0, T - width + 1))
    y[start : start + width] = 0
    y = np.roll(y, int(rng.integers(0, T)))
    power = np.mean(y**2) + 1e-12
    y += rng.standard_normal(T) * np.sqrt(power / 10 ** (rng.uniform(10, 30) / 10))
    return y


def _features(x: np.ndarray) -> np.ndarray:
    """Tonality, loudness modulation, sustain, pitch direction, sparseness, periodicity."""
    frames = np.lib.stride_tricks.sliding_window_view(x, 512)[::128] * np.hanning(512)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-12
    energy = power.sum(1)
    loud = energy >= np.quantile(energy, 0.75)
    ranked = np.sort(power[loud], 1)[:, ::-1]
    tonality = np.mean(ranked[:, :8].sum(1) / ranked.sum(1))
    db = 10 * np.log10(energy)
    active = db > db.max() - 30
    modulation = np.log(np.median(np.abs(np.diff(db))[active[1:] & active[:-1]]) + 1e-6)
    sustain = np.mean(db > db.max() - 10)
    peak_bin = np.argmax(power[:, 2:], 1) + 2
    steps = np.diff(np.log(peak_bin))[loud[1:] & loud[:-1]]
    steps = steps[(np.abs(steps) < 0.2) & (steps != 0)]
    direction = np.mean(np.sign(steps)) if len(steps) else 0.0
    fine = np.sqrt(np.convolve(x**2, np.ones(32) / 32, mode="same"))  # 2 ms envelope
    fine_db = 20 * np.log10(fine + 1e-9)
    sparseness = np.log(np.mean(fine_db > fine_db.max() - 15))
    env = fine[::16] - fine[::16].mean()  # 1 kHz envelope
    ac = np.correlate(env, env, "full")[len(env) - 1 :]
    periodicity = np.max(ac[30:400] / (ac[0] + 1e-12))  # lags 30-400 ms
    return np.array([tonality, modulation, sustain, direction, sparseness, periodicity])


def test_classes_stay_separable_under_augmentation():
    """Nearest class mean on simple features, fitted on augmented clips of seed 0, classifies
    augmented clips of seed 1: a dataset whose classes the augmentations destroy would fail."""
    rng = np.random.default_rng(0)
    train, test = [], []
    for k, kind in enumerate(KINDS):
        for i in range(20):
            for seed, out in ((0, train), (1, test)):
                x = render(kind, clip_rng(seed, k, i), sample_rate=SR, num_samples=T)
                out.append((_features(_augment(x, rng)), k))
    x_train = np.array([f for f, _ in train])
    y_train = np.array([k for _, k in train])
    x_test = np.array([f for f, _ in test])
    y_test = np.array([k for _, k in test])
    mean, std = x_train.mean(0), x_train.std(0) + 1e-9
    centroids = np.stack([((x_train[y_train == k] - mean) / std).mean(0) for k in range(6)])
    dist = ((((x_test - mean) / std)[:, None, :] - centroids[None]) ** 2).sum(-1)
    accuracy = np.mean(np.argmin(dist, 1) == y_test)
    assert accuracy >= 0.8, f"augmented synthetic classes are not separable: {accuracy:.2f}"
