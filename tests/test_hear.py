"""The HEAR 2021 API (clar_ray.hear), checked as hear-validator checks it, and more strictly.

Every check runs on four models: the raw and tf3 encoders of a run directory, and the same
encoders through `clar-ray export` files.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from test_export import HOP_SAMPLES, SAMPLE_RATE, make_run

from clar_ray import artifacts, hear
from clar_ray.export import export_run

MODELS = ["raw-run", "tf3-run", "raw-export", "tf3-export"]


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("hear")
    found = {}
    for frontend in ("raw", "tf3"):
        found[f"{frontend}-run"] = make_run(root / frontend, frontend, seed=1)
        found[f"{frontend}-export"] = str(root / f"{frontend}.pt")
        export_run(found[f"{frontend}-run"], found[f"{frontend}-export"])
    return found


@pytest.fixture(scope="module")
def models(paths: dict[str, str]) -> dict[str, hear.HearModel]:
    return {name: hear.load_model(path, device="cpu") for name, path in paths.items()}


def noise(num_audio: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """White noise in [-1, 1), as hear-validator makes it."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((num_audio, int(seconds * SAMPLE_RATE)), generator=generator) * 2 - 1


def hop_ms(name: str) -> float:
    return 1000 * HOP_SAMPLES[name.split("-")[0]] / SAMPLE_RATE


@pytest.mark.parametrize("name", MODELS)
def test_model_has_the_api_attributes(name: str, models: dict[str, hear.HearModel]) -> None:
    model = models[name]
    assert isinstance(model, torch.nn.Module)
    assert type(model.sample_rate) is int and model.sample_rate in hear.HEAR_SAMPLE_RATES
    assert type(model.scene_embedding_size) is int and model.scene_embedding_size == 16
    assert type(model.timestamp_embedding_size) is int and model.timestamp_embedding_size == 16


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("seconds", [1.07, 1.98, 4.0])
def test_timestamp_embeddings_are_regular_frame_centres_in_ms(
        name: str, seconds: float, models: dict[str, hear.HearModel]) -> None:
    model = models[name]
    embeddings, timestamps = hear.get_timestamp_embeddings(noise(2, seconds), model)
    assert embeddings.dtype == torch.float32 and timestamps.dtype == torch.float32
    assert embeddings.ndim == 3 and embeddings.shape[0] == 2
    assert embeddings.shape[2] == model.timestamp_embedding_size
    assert timestamps.shape == embeddings.shape[:2] and embeddings.shape[1] > 1
    assert torch.isfinite(embeddings).all()
    ts = timestamps.numpy().astype(np.float64)
    np.testing.assert_array_equal(ts[0], ts[1])
    np.testing.assert_allclose(np.diff(ts[0]), hop_ms(name), atol=1e-3)  # the encoder's hop
    length_ms = 1000 * seconds
    assert 0 <= ts.min() <= hop_ms(name)
    assert length_ms - 2 * hop_ms(name) <= ts.max() <= length_ms


@pytest.mark.parametrize("name", MODELS)
def test_scene_embeddings_are_the_pooled_encoder_output(
        name: str, models: dict[str, hear.HearModel], paths: dict[str, str]) -> None:
    model = models[name]
    audio = noise(4, 2.74, seed=1)
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.dtype == torch.float32 and scene.shape == (4, model.scene_embedding_size)
    extractor, _ = artifacts.load_encoder(paths[name.replace("export", "run")])
    with torch.no_grad():
        torch.testing.assert_close(scene, extractor(audio), rtol=1e-4, atol=1e-5)
    frames, _ = hear.get_timestamp_embeddings(audio, model)
    torch.testing.assert_close(frames.mean(dim=1), scene, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_a_batch_of_one_gives_its_row_of_the_batch(name: str,
                                                   models: dict[str, hear.HearModel]) -> None:
    model = models[name]
    audio = noise(3, 1.3, seed=2)
    scene = hear.get_scene_embeddings(audio, model)
    frames, timestamps = hear.get_timestamp_embeddings(audio, model)
    for i in range(3):
        one = audio[i:i + 1]
        torch.testing.assert_close(hear.get_scene_embeddings(one, model), scene[i:i + 1],
                                   rtol=1e-4, atol=1e-5)
        frames_one, timestamps_one = hear.get_timestamp_embeddings(one, model)
        torch.testing.assert_close(frames_one, frames[i:i + 1], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(timestamps_one, timestamps[i:i + 1])


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("num_samples", [1, 100, 600, 16000])
def test_silence_and_any_length_give_finite_embeddings(
        name: str, num_samples: int, models: dict[str, hear.HearModel]) -> None:
    model = models[name]
    silence = torch.zeros(2, num_samples)
    scene = hear.get_scene_embeddings(silence, model)
    frames, timestamps = hear.get_timestamp_embeddings(silence, model)
    assert scene.shape == (2, 16) and torch.isfinite(scene).all()
    assert frames.shape[0] == 2 and frames.shape[1] >= 1 and frames.shape[2] == 16
    assert torch.isfinite(frames).all() and timestamps.shape == frames.shape[:2]
    torch.testing.assert_close(scene[0], scene[1])


@pytest.mark.parametrize("name", MODELS)
def test_timestamps_point_at_where_the_audio_changed(
        name: str, models: dict[str, hear.HearModel]) -> None:
    """A burst added at t changes most the frame whose timestamp is within one hop of t."""
    model = models[name]
    audio = 0.1 * noise(1, 4.0, seed=3)
    hop = hop_ms(name)
    for at_ms in (700.0, 2345.0):
        start = int(at_ms / 1000 * SAMPLE_RATE)
        burst = audio.clone()
        burst[:, start - 40:start + 40] += 0.8 * torch.sign(noise(1, 80 / SAMPLE_RATE, seed=4))
        before, timestamps = hear.get_timestamp_embeddings(audio, model)
        after, _ = hear.get_timestamp_embeddings(burst, model)
        change = (after - before).norm(dim=2)[0]  # (N,)
        assert abs(float(timestamps[0, int(change.argmax())]) - at_ms) <= hop, (at_ms, change)


def test_bad_input_is_a_one_line_error(models: dict[str, hear.HearModel], paths: dict[str, str],
                                       tmp_path: Path) -> None:
    model = models["raw-run"]
    cases = [
        (lambda: hear.get_scene_embeddings(torch.zeros(16000), model), "n_sounds, n_samples"),
        (lambda: hear.get_scene_embeddings(torch.zeros(1, 16000, dtype=torch.int16), model),
         "float"),
        (lambda: hear.get_scene_embeddings(np.zeros((1, 16000)), model), "torch.Tensor"),
        (lambda: hear.get_timestamp_embeddings(torch.zeros(2, 0), model), "one sample"),
        (lambda: hear.get_timestamp_embeddings(torch.zeros(1, 44100), model, sample_rate=44100),
         "44100 Hz, but the model takes 16000 Hz"),
        (lambda: hear.get_scene_embeddings(torch.zeros(1, 100), torch.nn.Identity()),
         "load_model"),
        (lambda: hear.load_model(""), "run directory"),
        (lambda: hear.load_model(str(Path(paths["raw-run"]) / artifacts.CONFIG_FILE)),
         "not a file written by clar-ray export"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert "\n" not in str(info.value)
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(FileNotFoundError, match="no trained encoder") as info:
        hear.load_model(str(tmp_path / "unfinished"))
    assert "\n" not in str(info.value)


def test_the_encoder_file_of_a_run_loads_like_its_directory(
        models: dict[str, hear.HearModel], paths: dict[str, str]) -> None:
    by_file = hear.load_model(str(Path(paths["tf3-run"]) / artifacts.ENCODER_FILE), device="cpu")
    audio = noise(2, 1.0, seed=5)
    torch.testing.assert_close(hear.get_scene_embeddings(audio, by_file),
                               hear.get_scene_embeddings(audio, models["tf3-run"]))
    assert by_file.metadata == models["tf3-run"].metadata == models["tf3-export"].metadata


@pytest.mark.parametrize("name", ["raw-export", "tf3-run"])
def test_hearvalidator_accepts_the_module(name: str, paths: dict[str, str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The HEAR 2021 validator itself, when installed (`pip install --no-deps hearvalidator`).

    hearvalidator is not a dependency: it requires TensorFlow (imported at its top, used only
    for TensorFlow models), which is large and unused here. A stand-in ``tensorflow`` module is
    enough for the validator's torch path.
    """
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        stand_in = types.ModuleType("tensorflow")
        stand_in.Module = type("Module", (), {})  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "tensorflow", stand_in)
    validate = pytest.importorskip(
        "hearvalidator.validate",
        reason="hearvalidator is not installed (it requires TensorFlow; see this test's doc)")
    validate.ValidateModel("clar_ray.hear", paths[name], device="cpu")()
