"""The batched torch phase vocoder (pitch shift, time stretch) against the numpy path.

Agreement is measured on magnitude spectrograms (512-point Hann STFT, hop 128):

* log-spectral distance (LSD): per frame the RMS over bins of the dB difference, floors at
  80 dB under the reference's peak, averaged over frames;
* the correlation of the two magnitude spectrograms.

Bounds, from measurements of this implementation (numbers in benchmarks/README.md):

* crop/pad time stretch is the numpy algorithm in float32 on the same frame grid: waveforms
  within 1e-3 of the numpy path (measured ≤ 3e-4 on FSDD and on tones with a noise floor:
  float32 phase accumulation against numpy's float64).
* Pitch shift and resampled time stretch resample with a band-limited interpolation (by a
  non-uniform FFT) where numpy uses soxr HQ: the filters differ near Nyquist and at the clip's
  ends. Measured on FSDD clips and on sines and chirps with a -60 dB noise floor: LSD
  ≤ 0.42 dB, correlation ≥ 0.9998. Bounds: LSD ≤ 0.75 dB, correlation ≥ 0.999.
* Pure synthetic tones have bins of numerically zero energy whose phase is FFT round-off; the
  phase vocoder accumulates it, so any two implementations (numpy and librosa too) differ
  there: numpy vs librosa measured LSD ≤ 3.6 dB and correlation ≥ 0.936 on a chirp; torch vs
  numpy ≤ 4.0 dB and ≥ 0.894. Bounds: 5 dB and 0.85.
* Pitch of a shifted sine within 1 cent of ``f * 2**(n / 12)`` (measured < 0.01 cent), by an
  FFT peak with parabolic interpolation; a stretched tone lasts ``duration / rate`` within a
  hop (crop/pad) or keeps its duration and scales its pitch by ``1 / rate`` (resample).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from clar_ray.augment import (
    AUGMENTATIONS,
    PRESETS,
    Augmenter,
    BatchAugmenter,
    build_params,
    place,
    step_rng,
)
from clar_ray.augment import batch_resample as BR
from clar_ray.augment import batch_vocoder as BV
from clar_ray.augment import vocoder as V
from clar_ray.augment.placement import CPU_MS_PER_VIEW, ON_DEVICE_CHOICES, Placement

SR = 8000
T = 8000
SEMITONES = (-15.0, -7.5, -2.3, 0.7, 4.0, 9.9, 15.0)
RATES = (0.5, 0.66, 0.9, 1.1, 1.37, 1.5)


# ----------------------------------------------------------------- measures


def _power_spectrogram(x: np.ndarray) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(np.pad(x, 256), 512)[::128]
    return np.abs(np.fft.rfft(frames * np.hanning(512), axis=-1)) ** 2


def log_spectral_distance(reference: np.ndarray, other: np.ndarray, range_db: float = 80.0
                          ) -> float:
    """Mean over frames of the RMS over bins of the dB difference (floors range_db under peak)."""
    p, q = _power_spectrogram(reference), _power_spectrogram(other)
    floor = max(float(p.max()), 1e-20) * 10 ** (-range_db / 10)
    diff = 10 * np.log10(np.maximum(p, floor)) - 10 * np.log10(np.maximum(q, floor))
    return float(np.mean(np.sqrt(np.mean(diff**2, axis=1))))


def spectrogram_correlation(reference: np.ndarray, other: np.ndarray) -> float:
    """Pearson correlation of the two magnitude spectrograms."""
    p = np.sqrt(_power_spectrogram(reference)).ravel()
    q = np.sqrt(_power_spectrogram(other)).ravel()
    return float(np.corrcoef(p, q)[0, 1])


def pitch_hz(x: np.ndarray, sample_rate: int) -> float:
    """The frequency of the strongest peak: 8× zero-padded FFT, parabola on log magnitudes."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=8 * len(x)))
    k = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = np.log(spectrum[k - 1:k + 2])
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sample_rate / (8 * len(x))


def cents(f: float, target: float) -> float:
    return 1200 * math.log2(f / target)


# ----------------------------------------------------------------- signals


def _t() -> np.ndarray:
    return np.arange(T) / SR


def _sines() -> np.ndarray:
    return np.stack([0.5 * np.sin(2 * np.pi * f * _t()) for f in (220.0, 440.0, 1000.0)])


def _chirp() -> np.ndarray:
    t = _t()
    return 0.5 * np.sin(2 * np.pi * (100 * t + (3000 - 100) / (2 * t[-1]) * t**2))[None]


def _floor(x: np.ndarray, seed: int = 1) -> np.ndarray:
    """Add white noise 60 dB under a 0.5-amplitude tone: the noise floor of a recording."""
    return x + 0.5e-3 * np.random.default_rng(seed).standard_normal(x.shape)


def _fsdd(shared_data: Path, count: int = 8) -> np.ndarray:
    import soundfile

    files = sorted((shared_data / "fsdd" / "recordings").glob("*.wav"))[::300][:count]
    if not files:
        pytest.skip("no FSDD recordings in the shared data")
    clips = []
    for path in files:
        x, sample_rate = soundfile.read(path, dtype="float32")
        assert sample_rate == SR
        clips.append(np.pad(x, (0, max(0, T - len(x))))[:T])
    return np.stack(clips)


def _torch_and_numpy(kind: str, waves: np.ndarray, value: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    waves = waves.astype(np.float32)
    batch = torch.from_numpy(waves)
    rows = np.full(len(waves), value)
    if kind == "pitch":
        got = BV.shift_pitch(batch, rows).numpy()
        ref = np.stack([V.shift_pitch(w, value, SR) for w in waves])
    else:
        resample = kind == "stretch_resample"
        got = BV.stretch_time(batch, rows, np.full(len(waves), resample)).numpy()
        ref = np.stack([V.stretch_time(w, value, resample) for w in waves])
    assert got.shape == ref.shape and got.dtype == np.float32
    return got, ref


def _assert_agree(kind: str, waves: np.ndarray, max_lsd_db: float, min_corr: float) -> None:
    for value in SEMITONES if kind == "pitch" else RATES:
        got, ref = _torch_and_numpy(kind, waves, value)
        for row, (a, b) in enumerate(zip(ref, got)):
            lsd, corr = log_spectral_distance(a, b), spectrogram_correlation(a, b)
            assert lsd <= max_lsd_db and corr >= min_corr, (kind, value, row, lsd, corr)


# ----------------------------------------------------------------- the algorithm's parts


@pytest.mark.parametrize("n_frames", [16, 32, 157])
def test_frame_grid_is_numpys_arange(n_frames: int) -> None:
    rates = np.array([0.5, 0.6180339887, 1.0, 1.37, 1.5, 2 ** (15 / 12), 2 ** (-15 / 12)])
    index, fraction, frames = BV.frame_grid(n_frames, rates)
    for row, rate in enumerate(rates):
        steps = np.arange(0, n_frames, rate, dtype=np.float64)
        assert frames[row] == len(steps)
        np.testing.assert_array_equal(index[row, :len(steps)], steps.astype(np.int64))
        np.testing.assert_array_equal(fraction[row, :len(steps)],
                                      (steps % 1.0).astype(np.float32))


def test_stretch_equals_the_numpy_vocoder_on_noisy_signals() -> None:
    waves = _floor(np.concatenate([_sines(), _chirp()]), seed=3).astype(np.float32)
    rates = np.array([0.5, 0.77, 1.0001, 1.5])
    got, lengths = BV.stretch(torch.from_numpy(waves), rates)
    for row, rate in enumerate(rates):
        ref = V.stretch(waves[row], rate)
        assert lengths[row] == len(ref)
        np.testing.assert_allclose(got[row, :len(ref)].numpy(), ref, atol=1e-3)
        assert torch.all(got[row, len(ref):] == 0)


@pytest.mark.parametrize("ratio", [2 ** (-15 / 12), 0.84, 1.19, 2 ** (15 / 12)])
def test_resample_of_a_sine_is_soxr_inside_the_clip(ratio: float) -> None:
    import soxr

    length = round(T * ratio)
    x = np.sin(2 * np.pi * 0.01 * np.arange(length)).astype(np.float32)
    ref = soxr.resample(x, SR * ratio, SR, quality="HQ")
    got = BR.resample(torch.from_numpy(x)[None], np.array([length]), np.array([ratio]), T)[0]
    inside = slice(T // 4, 3 * T // 4)  # the ends differ: the filters' edges differ
    np.testing.assert_allclose(got.numpy()[inside], ref[inside], atol=1e-4)


@pytest.mark.parametrize("n_samples", [100, 600])
def test_clips_shorter_than_one_stft_frame(n_samples: int) -> None:
    """Rows in any order, each far shorter than the 2,048-point frame: the numpy path's result
    within 5 % of full scale (measured 2-3 %: the resamplers' edges cover the whole clip)."""
    rng = np.random.default_rng(n_samples)
    waves = rng.standard_normal((4, n_samples)).astype(np.float32)
    semitones, rates = np.array([-15.0, -3.0, 4.0, 15.0]), np.array([0.5, 0.8, 1.2, 1.5])
    back = np.array([False, True, False, True])
    shifted = BV.shift_pitch(torch.from_numpy(waves), semitones).numpy()
    stretched = BV.stretch_time(torch.from_numpy(waves), rates, back).numpy()
    for row in range(4):
        ref = V.shift_pitch(waves[row], semitones[row], SR)
        np.testing.assert_allclose(shifted[row], ref, atol=0.05 * np.abs(ref).max())
        ref = V.stretch_time(waves[row], rates[row], back[row])
        np.testing.assert_allclose(stretched[row], ref, atol=0.05 * np.abs(ref).max())


# ----------------------------------------------------------------- agreement


@pytest.mark.parametrize("kind", ["pitch", "stretch_crop", "stretch_resample"])
def test_agreement_on_tones_and_chirps_with_a_noise_floor(kind: str) -> None:
    waves = _floor(np.concatenate([_sines(), _chirp()]))
    _assert_agree(kind, waves, 0.75, 0.999)


@pytest.mark.parametrize("kind", ["pitch", "stretch_crop", "stretch_resample"])
def test_agreement_on_fsdd_clips(kind: str, shared_data: Path) -> None:
    _assert_agree(kind, _fsdd(shared_data), 0.75, 0.999)


def test_crop_stretch_waveforms_equal_numpy_on_fsdd(shared_data: Path) -> None:
    waves = _fsdd(shared_data)
    for rate in RATES:
        got, ref = _torch_and_numpy("stretch_crop", waves, rate)
        np.testing.assert_allclose(got, ref, atol=1e-3)


@pytest.mark.parametrize("kind", ["pitch", "stretch_crop"])
def test_pure_tones_and_chirps_agree_as_well_as_numpy_and_librosa_do(kind: str) -> None:
    _assert_agree(kind, np.concatenate([_sines(), _chirp()]), 5.0, 0.85)


# ----------------------------------------------------------------- what a listener hears


@pytest.mark.parametrize("frequency", [220.0, 440.0, 1000.0])
def test_pitch_of_shifted_sines(frequency: float) -> None:
    x = 0.5 * np.sin(2 * np.pi * frequency * _t())
    waves = torch.from_numpy(np.repeat(x[None], len(SEMITONES), 0).astype(np.float32))
    out = BV.shift_pitch(waves, np.array(SEMITONES)).numpy()
    for row, semitones in enumerate(SEMITONES):
        middle = out[row, T // 4:3 * T // 4]
        assert abs(cents(pitch_hz(middle, SR), frequency * 2 ** (semitones / 12))) < 1.0
        # The phase vocoder's loudness (up to -4 dB at +15 semitones) is numpy's.
        reference = V.shift_pitch(x.astype(np.float32), semitones, SR)[T // 4:3 * T // 4]
        assert np.sqrt(np.mean(middle**2)) == pytest.approx(
            np.sqrt(np.mean(reference**2)), rel=0.01)


def _burst(seconds: float, frequency: float = 440.0) -> np.ndarray:
    x = np.zeros(T)
    n = round(seconds * SR)
    x[:n] = 0.5 * np.sin(2 * np.pi * frequency * np.arange(n) / SR)
    return x


def _sounding_samples(x: np.ndarray) -> int:
    """Samples from the start to the last 512-sample block within 20 dB of the loudest."""
    energy = (x[:len(x) // 512 * 512].reshape(-1, 512) ** 2).mean(axis=1)
    loud = np.flatnonzero(energy > energy.max() * 0.01)
    return int(loud[-1] + 1) * 512


@pytest.mark.parametrize("rate", [0.5, 0.8, 1.25, 1.5])
def test_stretched_tone_lasts_duration_over_rate(rate: float) -> None:
    x = _burst(0.25)
    out = BV.stretch_time(torch.from_numpy(x[None].astype(np.float32)), np.array([rate]),
                          np.array([False]))[0].numpy()
    expected = 0.25 * SR / rate
    assert abs(_sounding_samples(out) - expected) <= 1.5 * V.HOP_LENGTH
    middle = out[:round(expected)][round(expected) // 4:3 * round(expected) // 4]
    assert abs(cents(pitch_hz(middle, SR), 440.0)) < 5.0  # the pitch is kept


@pytest.mark.parametrize("rate", [0.8, 1.25])
def test_resampled_stretch_keeps_duration_and_scales_pitch(rate: float) -> None:
    x = _burst(0.5)
    out = BV.stretch_time(torch.from_numpy(x[None].astype(np.float32)), np.array([rate]),
                          np.array([True]))[0].numpy()
    assert abs(_sounding_samples(out) - 0.5 * SR) <= 1.5 * V.HOP_LENGTH
    middle = out[SR // 8:3 * SR // 8]
    assert abs(cents(pitch_hz(middle, SR), 440.0 / rate)) < 5.0


# ----------------------------------------------------------------- parameters and seeds


@pytest.mark.parametrize("preset", PRESETS)
def test_device_path_uses_each_views_own_parameters(preset: str) -> None:
    """Pitch measured in each row's output = the semitones step_rng draws for that view."""
    ids = np.array([5, 0, 17, 3, 250, 9])
    x = 0.5 * np.sin(2 * np.pi * 440.0 * _t())
    waves = torch.from_numpy(np.repeat(x[None], len(ids), 0).astype(np.float32))
    sequence = ["fade", "pitch_shift"]
    params = {"pitch_shift": {"p": 1.0}, "fade": {"p": 0.0}}
    augment = BatchAugmenter(sequence, sample_rate=SR, preset=preset, params=params, seed=11)
    out = augment(waves, torch.from_numpy(ids), epoch=2, view=1).numpy()
    spec = AUGMENTATIONS["pitch_shift"]
    for row, sample_id in enumerate(ids):
        draw = spec.draw(step_rng(11, 2, int(sample_id), 1, 1), T, SR,
                         build_params("pitch_shift", preset, {"p": 1.0}))
        target = 440.0 * 2 ** (draw["semitones"] / 12)
        assert abs(cents(pitch_hz(out[row, T // 4:3 * T // 4], SR), target)) < 1.0


@pytest.mark.parametrize("preset", PRESETS)
def test_batch_augmenter_agrees_with_augmenter_on_the_expensive_set(preset: str,
                                                                    shared_data: Path) -> None:
    waves = _fsdd(shared_data)
    ids = np.arange(100, 100 + len(waves))
    sequence = ["fade", "time_stretch", "pitch_shift"]
    cpu = Augmenter(sequence, sample_rate=SR, preset=preset, seed=4)
    device = BatchAugmenter(sequence, sample_rate=SR, preset=preset, seed=4)
    for view in (0, 1):
        ref = cpu(waves, ids, epoch=1, view=view)
        got = device(torch.from_numpy(waves.astype(np.float32)), torch.from_numpy(ids),
                     epoch=1, view=view).numpy()
        for a, b in zip(ref, got):
            if np.any(a):
                assert log_spectral_distance(a, b) <= 1.0
                assert spectrogram_correlation(a, b) >= 0.998


def test_rows_do_not_depend_on_their_batch() -> None:
    waves = torch.from_numpy(_floor(np.concatenate([_sines(), _chirp(), _sines()])).astype(
        np.float32))
    ids = torch.arange(10, 17)
    augment = BatchAugmenter(["time_stretch", "pitch_shift"], sample_rate=SR, seed=3)
    whole = augment(waves, ids, epoch=0, view=0)
    parts = torch.cat([augment(waves[4:], ids[4:], epoch=0, view=0),
                       augment(waves[:4], ids[:4], epoch=0, view=0)])
    torch.testing.assert_close(parts, torch.cat([whole[4:], whole[:4]]), atol=2e-5, rtol=0)


def test_unapplied_rows_rate_one_and_zero_semitones_are_untouched() -> None:
    waves = torch.randn(4, 3000, generator=torch.Generator().manual_seed(0))
    draws = {"applied": np.array([False, True, True, False]),
             "rate": np.array([0.7, 1.0, 1.3, 1.3]), "resample": np.zeros(4, bool),
             "semitones": np.array([3.0, 0.0, -2.0, 5.0])}
    stretched = BV.time_stretch(waves, draws)
    assert torch.equal(stretched[[0, 1, 3]], waves[[0, 1, 3]])
    assert not torch.allclose(stretched[2], waves[2])
    shifted = BV.pitch_shift(waves, draws)
    assert torch.equal(shifted[[0, 1, 3]], waves[[0, 1, 3]])
    off = BatchAugmenter(["pitch_shift", "time_stretch"], sample_rate=SR,
                         params={"pitch_shift": {"p": 0.0}, "time_stretch": {"p": 0.0}})
    assert torch.equal(off(waves, torch.arange(4), epoch=0, view=0), waves)


def test_dtype_kept_and_float32_inside_autocast() -> None:
    waves = torch.from_numpy(_floor(_sines()).astype(np.float32))
    augment = BatchAugmenter(["pitch_shift"], sample_rate=SR, seed=1)
    ref = augment(waves, torch.arange(3), epoch=0, view=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = augment(waves, torch.arange(3), epoch=0, view=0)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref)
    double = augment(waves.double(), torch.arange(3), epoch=0, view=0)
    assert double.dtype == torch.float64
    torch.testing.assert_close(double.float(), ref, atol=1e-6, rtol=0)


# ----------------------------------------------------------------- no loop over rows


class _CountOps(TorchDispatchMode):
    """Counts the aten operations dispatched inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


def _dispatched(function: object, batch: int, resample: bool, *, alike: bool = False
                ) -> Counter[str]:
    """The aten operations of one call on ``batch`` rows (``alike``: every row the same draw)."""
    rng = np.random.default_rng(batch)
    waves = torch.from_numpy(rng.standard_normal((batch, 4000)).astype(np.float32))
    rates, semitones = rng.uniform(0.5, 1.5, batch), rng.uniform(-15, 15, batch)
    if alike:
        rates, semitones = np.full(batch, 0.8), np.full(batch, 5.0)
    draws = {"applied": np.ones(batch, bool), "rate": rates,
             "resample": np.full(batch, resample), "semitones": semitones}
    with _CountOps() as counter:
        function(waves, draws)  # type: ignore[operator]
    # x[:, :n] dispatches alias instead of slice when n is the whole dimension.
    counter.ops["aten.slice.Tensor"] += counter.ops.pop("aten.alias.default", 0)
    return counter.ops


_FUNCTIONS = pytest.mark.parametrize(("function", "resample"), [(BV.pitch_shift, False),
                                                                (BV.time_stretch, False),
                                                                (BV.time_stretch, True)])


@_FUNCTIONS
def test_the_device_path_never_loops_over_rows(function: object, resample: bool,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """As on CUDA (one pass, phases by cumsum): the same operations for 8 rows and for 40."""
    monkeypatch.setattr(BV, "CHUNK_ROWS", {})
    monkeypatch.setattr(BV, "FRAME_LOOP", set())
    small, large = _dispatched(function, 8, resample), _dispatched(function, 40, resample)
    assert small == large
    assert sum(small.values()) < 350  # one pass: about 290 operations


@_FUNCTIONS
def test_the_cpu_path_loops_over_chunks_not_rows(function: object, resample: bool) -> None:
    """On CPU: 9 and 16 rows are two chunks of the same operations, 24 rows three."""
    assert BV.CHUNK_ROWS["cpu"] == 8
    nine, sixteen = (_dispatched(function, n, resample, alike=True) for n in (9, 16))
    assert nine == sixteen
    assert sum(_dispatched(function, 24, resample, alike=True).values()) > sum(nine.values())


# ----------------------------------------------------------------- placement


def test_placement_by_cost() -> None:
    sequence = ["fade", "time_mask", "time_stretch", "pitch_shift", "white_noise"]
    off = place(sequence, False, use_gpu=True)
    assert off.actors == tuple(sequence) and off.device == ()
    on = place(sequence, True, use_gpu=False)
    assert on.actors == () and on.device == tuple(sequence)
    auto = place(sequence, "auto", use_gpu=True)
    assert auto.actors == ("fade", "time_mask")
    assert auto.device == ("time_stretch", "pitch_shift", "white_noise")
    record = auto.describe()
    assert record["device"] == list(auto.device) and "GPU" in auto.rule
    assert record["actor_cpu_ms_per_view_1s_16khz"] == pytest.approx(
        CPU_MS_PER_VIEW["fade"] + CPU_MS_PER_VIEW["time_mask"])
    assert off.actor_ms_per_view > 10 * auto.actor_ms_per_view
    assert place(sequence, "auto", use_gpu=False).device == ()
    assert place(["fade", "white_noise"], "auto", use_gpu=True).device == ()
    with pytest.raises(ValueError, match="augment.on_device must be one of"):
        place(sequence, "gpu", use_gpu=True)


def test_a_placement_names_its_device_step_and_comes_back_from_its_record() -> None:
    sequence = ["fade", "time_mask", "time_stretch", "pitch_shift", "white_noise"]
    auto = place(sequence, "auto", use_gpu=True)
    assert auto.device_first_step == 2 and sequence[auto.device_first_step] == auto.device[0]
    assert place(sequence, True, use_gpu=True).device_first_step == 0
    for on_device in ON_DEVICE_CHOICES:  # the training loop gets it as plan.json's record
        placement = place(sequence, on_device, use_gpu=True)
        record = json.loads(json.dumps(placement.describe()))
        assert Placement.from_record(record) == placement


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_every_augmentation_has_a_cost_and_the_phase_vocoder_ones_cost_most(name: str) -> None:
    cheapest_expensive = min(CPU_MS_PER_VIEW["pitch_shift"], CPU_MS_PER_VIEW["time_stretch"])
    assert (CPU_MS_PER_VIEW[name] < cheapest_expensive) == AUGMENTATIONS[name].cheap


def test_config_accepts_auto_and_refuses_other_words() -> None:
    from clar_ray.config import ConfigError, JobConfig

    assert JobConfig().replace(["augment.on_device=auto"]).augment.on_device == "auto"
    assert JobConfig().replace(["augment.on_device=true"]).augment.on_device is True
    with pytest.raises(ConfigError, match="augment.on_device"):
        JobConfig().replace(["augment.on_device=gpu"])


# ----------------------------------------------------------------- CUDA


@pytest.mark.gpu
@pytest.mark.parametrize("preset", PRESETS)
def test_cuda_gives_the_cpu_result(preset: str) -> None:
    waves = torch.from_numpy(_floor(np.concatenate([_sines(), _chirp()] * 4)).astype(
        np.float32))
    ids = torch.arange(len(waves))
    augment = BatchAugmenter(["fade", "time_stretch", "pitch_shift"], sample_rate=SR,
                             preset=preset, seed=5)
    on_cpu = augment(waves, ids, epoch=0, view=0)
    on_gpu = augment(waves.cuda(), ids, epoch=0, view=0)
    assert on_gpu.is_cuda
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-4, rtol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["pitch", "stretch_crop", "stretch_resample"])
def test_cuda_agreement_with_numpy(kind: str) -> None:
    waves = _floor(np.concatenate([_sines(), _chirp()])).astype(np.float32)
    for value in SEMITONES if kind == "pitch" else RATES:
        rows = np.full(len(waves), value)
        batch = torch.from_numpy(waves).cuda()
        if kind == "pitch":
            got = BV.shift_pitch(batch, rows).cpu().numpy()
        else:
            got = BV.stretch_time(batch, rows, np.full(len(waves), kind == "stretch_resample")
                                  ).cpu().numpy()
        ref = _torch_and_numpy(kind, waves, value)[1]
        for a, b in zip(ref, got):
            assert log_spectral_distance(a, b) <= 0.75
            assert spectrogram_correlation(a, b) >= 0.999
