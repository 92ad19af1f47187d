"""Frontends: shapes, reference checks (torchaudio, a hand-written DFT), batch consistency,
float32 under autocast, silence, mel filter coverage and the registry."""

from __future__ import annotations

import math

import librosa
import numpy as np
import pytest
import torch
import torchaudio
from scipy.signal import get_window

from clar_ray.models.frontends import (
    FRONTEND_PRESETS,
    FRONTENDS,
    POWER_FLOOR,
    TF3Frontend,
    build_frontend,
    choose_n_fft,
    min_mel_filter_peak,
    tf3_params,
)

SR = 16000
T = 4000  # 0.25 s: long enough for the clar-code preset's reflect padding (n_fft // 2 = 1024)
PRESETS = sorted(FRONTEND_PRESETS)

# Tolerances, stated once. Reference values are computed in float64.
# Power / mel spectra: max abs error <= REL_TOL * max(reference) (nnAudio convolves in float32).
REL_TOL = 1e-4
# Log channels and wrapped phase, on bins whose power >= SIGNIFICANT * max power (below that,
# float32 rounding dominates the log and the phase is undefined).
LOG_ATOL = 1e-3
PHASE_ATOL = 1e-3
SIGNIFICANT = 1e-6


def _signal(batch: int = 2, num_samples: int = T, seed: int = 0) -> torch.Tensor:
    """Tones plus a little noise (first item) and white noise (the rest): (batch, T)."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / SR
    tones = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 3000 * t)
    x = rng.standard_normal((batch, num_samples)) * 0.3
    x[0] = tones + 0.05 * rng.standard_normal(num_samples)
    return torch.from_numpy(x.astype(np.float32))


def _wrapped(d: torch.Tensor) -> torch.Tensor:
    """Phase difference mapped to [-pi, pi)."""
    return torch.remainder(d + math.pi, 2 * math.pi) - math.pi


@pytest.fixture(scope="module", params=PRESETS)
def tf3(request: pytest.FixtureRequest) -> TF3Frontend:
    return TF3Frontend(sample_rate=SR, preset=request.param)


# ---------------------------------------------------------------- presets and mel coverage


def _fields(params: object, expected: dict[str, object]) -> dict[str, object]:
    return {name: getattr(params, name) for name in expected}


def test_paper_preset_at_16k_resolves_to_16ms_window_8ms_hop_and_zero_padded_fft() -> None:
    expected: dict[str, object] = {"win_length": 256, "hop_length": 128, "n_fft": 1024}
    assert _fields(tf3_params(SR, "paper"), expected) == expected


def test_clar_code_preset_at_16k_matches_the_official_code() -> None:
    expected = {
        "win_length": 2048,
        "hop_length": 128,
        "n_fft": 2048,
        "freq_scale": "log",
        "fmin_hz": 40.0,
        "fmax_hz": 8000.0,
        "mel_fmin_hz": 40.0,
        "mel_fmax_hz": 8000.0,
    }
    assert _fields(tf3_params(SR, "clar-code"), expected) == expected


def test_presets_scale_with_sample_rate() -> None:
    p = tf3_params(32000, "paper")
    assert (p.win_length, p.hop_length) == (512, 256)
    assert p.fmax_hz == p.mel_fmax_hz == 16000.0


def test_no_mel_filter_is_empty_for_the_paper_preset_at_16k() -> None:
    # The check: every row of the frontend's own mel filterbank (nnAudio's buffer) has a positive
    # weight, i.e. every filter covers at least one FFT bin; and, stronger, some bin reaches half
    # of each filter's triangle peak.
    frontend = TF3Frontend(sample_rate=SR, preset="paper")
    basis = frontend.mel.mel_basis
    assert basis.shape == (128, frontend.params.n_fft // 2 + 1)
    assert bool((basis.amax(dim=1) > 0).all())
    assert min_mel_filter_peak(SR, frontend.params.n_fft, 128, 0.0, SR / 2) >= 0.5


def test_the_unpadded_256_point_fft_would_leave_mel_filters_empty() -> None:
    # Why the paper preset zero-pads: without it 128 mel bands do not all get an FFT bin.
    assert min_mel_filter_peak(SR, 256, 128, 0.0, SR / 2) == 0.0
    assert choose_n_fft(256, SR, 128, 0.0, SR / 2) == 1024


def test_choose_n_fft_keeps_the_window_length_when_it_suffices() -> None:
    assert choose_n_fft(2048, SR, 128, 40.0, 8000.0) == 2048
    assert choose_n_fft(2048, SR, 16, 0.0, SR / 2) == 2048


@pytest.mark.parametrize(
    ("win_length", "sample_rate", "n_mels"), [(353, 22050, 128), (300, SR, 64), (128, 8000, 128)]
)
def test_choose_n_fft_is_the_smallest_power_of_two_that_covers_every_filter(
    win_length: int, sample_rate: int, n_mels: int
) -> None:
    fmax = sample_rate / 2
    n_fft = choose_n_fft(win_length, sample_rate, n_mels, 0.0, fmax)
    assert n_fft >= win_length and n_fft & (n_fft - 1) == 0
    assert min_mel_filter_peak(sample_rate, n_fft, n_mels, 0.0, fmax) >= 0.5
    if n_fft // 2 >= win_length:
        assert min_mel_filter_peak(sample_rate, n_fft // 2, n_mels, 0.0, fmax) < 0.5


@pytest.mark.parametrize("bad", [0, -16000, 16000.0])
def test_bad_sample_rate_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        build_frontend("tf3", sample_rate=bad)  # type: ignore[arg-type]


def test_unknown_preset_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="clar-code"):
        build_frontend("tf3", sample_rate=SR, preset="nope")


# ---------------------------------------------------------------- shapes and dtypes


@pytest.mark.parametrize("num_samples", [T, T + 77])
def test_tf3_output_shape(tf3: TF3Frontend, num_samples: int) -> None:
    y = tf3(_signal(num_samples=num_samples))
    assert y.shape == (2, 3, 128, num_samples // tf3.params.hop_length + 1)
    assert y.shape[-1] == tf3.num_frames(num_samples)
    assert y.dtype == torch.float32


def test_tf3_output_shape_for_one_second_clips_at_16k(tf3: TF3Frontend) -> None:
    assert tf3(torch.zeros(1, SR)).shape == (1, 3, 128, 126)


def test_tf3_accepts_any_leading_dims(tf3: TF3Frontend) -> None:
    x = _signal(batch=4)
    y = tf3(x.reshape(2, 2, T))
    assert y.shape == (2, 2, *tf3(x).shape[1:])
    assert torch.equal(y.reshape(4, *y.shape[2:]), tf3(x))


def test_tf3_rejects_clips_too_short_for_reflect_padding(tf3: TF3Frontend) -> None:
    with pytest.raises(ValueError, match="n_fft // 2"):
        tf3(torch.zeros(2, tf3.params.n_fft // 2))


def test_raw_is_the_waveform_as_one_float32_channel() -> None:
    raw = build_frontend("raw", sample_rate=SR)
    x = _signal().double()
    y = raw(x)
    assert y.shape == (2, 1, T) and y.dtype == torch.float32
    assert torch.equal(y[:, 0], x.float())


@pytest.mark.parametrize("name", sorted(FRONTENDS))
def test_every_frontend_outputs_float32_under_bfloat16_autocast(name: str) -> None:
    frontend = build_frontend(name, sample_rate=SR)
    x = _signal()
    expected = frontend(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = frontend(x)
    assert y.dtype == torch.float32
    # bfloat16 convolutions would be off by ~1e-2; equality shows autocast was switched off.
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(FRONTENDS))
def test_every_frontend_is_finite_on_silence(name: str) -> None:
    y = build_frontend(name, sample_rate=SR)(torch.zeros(2, T))
    assert bool(torch.isfinite(y).all())


def test_tf3_silence_maps_to_the_power_floor_and_zero_phase(tf3: TF3Frontend) -> None:
    y = tf3(torch.zeros(2, T))
    floor = math.log(POWER_FLOOR)
    torch.testing.assert_close(y[:, 0], torch.full_like(y[:, 0], floor))
    assert bool((y[:, 1] == 0).all())
    torch.testing.assert_close(y[:, 2], torch.full_like(y[:, 2], floor))


# ---------------------------------------------------------------- batch consistency


def test_tf3_items_one_by_one_equal_the_batch(tf3: TF3Frontend) -> None:
    x = _signal(batch=3)
    batch = tf3(x)
    single = torch.cat([tf3(x[i : i + 1]) for i in range(3)])
    for channel in (0, 2):  # log power, log mel: compare powers, then logs where significant
        got, ref = single[:, channel].double().exp(), batch[:, channel].double().exp()
        assert float((got - ref).abs().max()) <= REL_TOL * float(ref.max())
        significant = ref >= SIGNIFICANT * ref.max()
        log_err = (single[:, channel] - batch[:, channel])[significant].abs()
        assert float(log_err.max()) <= LOG_ATOL
    significant = batch[:, 0] >= batch[:, 0].amax() + math.log(SIGNIFICANT)
    phase_err = _wrapped(single[:, 1] - batch[:, 1]).abs()[significant]
    assert float(phase_err.max()) <= PHASE_ATOL


# ---------------------------------------------------------------- references


def test_paper_stft_power_matches_torchaudio_256_point_spectrogram() -> None:
    # At 16 kHz the paper preset's 128 linear bins are bins 0..127 of the 256-point DFT of the
    # 16 ms window, so torchaudio's plain 256-point spectrogram is the reference.
    frontend = TF3Frontend(sample_rate=SR, preset="paper")
    x = _signal()
    ref = torchaudio.transforms.Spectrogram(
        n_fft=256, win_length=256, hop_length=128, power=2.0, center=True, pad_mode="reflect"
    ).double()(x.double())[:, :128]
    power = frontend(x)[:, 0].double().exp()
    ok = ref >= POWER_FLOOR  # below the floor the frontend reports the floor
    assert float((power - ref)[ok].abs().max()) <= REL_TOL * float(ref.max())


def test_mel_channel_matches_torchaudio_melspectrogram(tf3: TF3Frontend) -> None:
    p = tf3.params
    x = _signal()
    ref = torchaudio.transforms.MelSpectrogram(
        sample_rate=SR,
        n_fft=p.n_fft,
        win_length=p.win_length,
        hop_length=p.hop_length,
        f_min=p.mel_fmin_hz,
        f_max=p.mel_fmax_hz,
        n_mels=p.n_mels,
        power=2.0,
        norm="slaney",
        mel_scale="slaney",
        center=True,
        pad_mode="reflect",
    ).double()(x.double())
    log_mel = tf3(x)[:, 2].double()
    assert float((log_mel.exp() - ref).abs().max()) <= REL_TOL * float(ref.max())
    significant = ref >= SIGNIFICANT * ref.max()
    assert float((log_mel - ref.log())[significant].abs().max()) <= LOG_ATOL


def _reference_stft(x: np.ndarray, frontend: TF3Frontend) -> np.ndarray:
    """Slow complex STFT at the frontend's frequencies, written out: (B, F, T')."""
    p = frontend.params
    padded = np.pad(x.astype(np.float64), ((0, 0), (p.n_fft // 2, p.n_fft // 2)), mode="reflect")
    window = np.zeros(p.n_fft)
    start = (p.n_fft - p.win_length) // 2
    window[start : start + p.win_length] = get_window("hann", p.win_length, fftbins=True)
    n = np.arange(p.n_fft)
    basis = np.exp(-2j * np.pi * np.outer(frontend.bin_hz, n) / p.sample_rate)  # (F, n_fft)
    num_frames = x.shape[-1] // p.hop_length + 1
    frames = np.stack(
        [padded[:, i * p.hop_length : i * p.hop_length + p.n_fft] for i in range(num_frames)],
        axis=-1,
    )  # (B, n_fft, T')
    return np.einsum("fn,bnt->bft", basis, frames * window[None, :, None])


def test_stft_magnitude_and_phase_match_a_handwritten_dft(tf3: TF3Frontend) -> None:
    x = _signal()
    ref = torch.from_numpy(_reference_stft(x.numpy(), tf3))  # (B, F, T') complex128
    y = tf3(x).double()
    got = torch.polar((y[:, 0] / 2).exp(), y[:, 1])  # |X| e^{i phase}
    assert float((got - ref).abs().max()) <= REL_TOL * float(ref.abs().max())
    ref_power = ref.abs().square()
    significant = ref_power >= SIGNIFICANT * ref_power.max()
    assert float((y[:, 0] - ref_power.log())[significant].abs().max()) <= LOG_ATOL
    phase_err = _wrapped(y[:, 1] - ref.angle())[significant].abs()
    assert float(phase_err.max()) <= PHASE_ATOL


def test_stft_frequencies_follow_the_preset(tf3: TF3Frontend) -> None:
    p = tf3.params
    assert tf3.bin_hz.shape == (128,)
    assert tf3.bin_hz[0] == pytest.approx(p.fmin_hz)
    assert tf3.bin_hz[-1] < p.fmax_hz
    steps = np.diff(tf3.bin_hz) if p.freq_scale == "linear" else np.diff(np.log(tf3.bin_hz))
    np.testing.assert_allclose(steps, steps[0], rtol=1e-6)


def test_a_tone_peaks_in_its_own_bin_in_every_channel(tf3: TF3Frontend) -> None:
    hz = 1000.0
    x = torch.sin(2 * math.pi * hz * torch.arange(T) / SR)[None]
    y = tf3(x)[0, :, :, 5:-5].mean(dim=-1)  # (3, F), interior frames
    stft_peak = int(y[0].argmax())
    assert abs(tf3.bin_hz[stft_peak] - hz) <= np.diff(tf3.bin_hz)[max(stft_peak - 1, 0)]
    centres = librosa.mel_frequencies(
        tf3.params.n_mels + 2, fmin=tf3.params.mel_fmin_hz, fmax=tf3.params.mel_fmax_hz
    )[1:-1]
    mel_peak = int(y[2].argmax())
    assert abs(mel_peak - int(np.abs(centres - hz).argmin())) <= 1


# ---------------------------------------------------------------- registry


@pytest.mark.parametrize("name", sorted(FRONTENDS))
def test_frontend_registry_builds_every_entry(name: str) -> None:
    frontend = build_frontend(name, sample_rate=SR, preset="paper")
    assert isinstance(frontend, torch.nn.Module)
    y = frontend(_signal())
    assert y.shape[1] == frontend.out_channels
    assert y.dim() == frontend.ndim + 2
    assert not list(frontend.parameters())  # kernels are buffers, nothing for DDP to sync


def test_unknown_frontend_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"allowed: \['raw', 'tf3'\]"):
        build_frontend("mfcc", sample_rate=SR)
