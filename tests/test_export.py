"""Tests of clar_ray.export and `clar-ray export`: one TorchScript file that torch alone runs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import tiny_job

from clar_ray import artifacts
from clar_ray.cli import main
from clar_ray.config import JobConfig, dump_job
from clar_ray.export import export_run, frame_geometry, load_exported, read_metadata
from clar_ray.models import FRONTENDS, FeatureExtractor, build_encoder, build_frontend

SAMPLE_RATE = 16000
CLIP_SAMPLES = 16000
ENCODER_FOR = {"raw": "resnet18_1d", "tf3": "resnet18_2d"}
# Frame hops worked out by hand from the architecture (not from frame_geometry): the 1D stem
# strides 4 * 4 and three stages stride 2 (128 samples); the 2D stem strides 2 * 2 and three
# stages 2 (32 frames), each tf3 frame 8 ms = 128 samples at 16 kHz (4096 samples).
HOP_SAMPLES = {"raw": 128, "tf3": 32 * 128}


# ---------------------------------------------------------------- tiny runs without Ray


def make_extractor(frontend: str, seed: int = 0) -> FeatureExtractor:
    """A width-2 encoder with random weights and random batch-norm statistics."""
    torch.manual_seed(seed)
    fe = build_frontend(frontend, sample_rate=SAMPLE_RATE)
    extractor = FeatureExtractor(fe, build_encoder(ENCODER_FOR[frontend],
                                                   in_channels=fe.out_channels, width=2))
    for m in extractor.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return extractor.eval()


def make_run(run_dir: Path, frontend: str, seed: int = 0) -> str:
    """A run directory with config.yaml and encoder.pt, as a finished training leaves them."""
    job = JobConfig().replace([f"model.frontend={frontend}",
                               f"model.encoder={ENCODER_FOR[frontend]}", "model.width=2"])
    dump_job(job, str(run_dir / artifacts.CONFIG_FILE))
    artifacts.save_encoder(str(run_dir), make_extractor(frontend, seed).encoder, job,
                           sample_rate=SAMPLE_RATE, clip_samples=CLIP_SAMPLES, epoch=2)
    return str(run_dir)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("runs")
    return {name: make_run(root / name, name) for name in ("raw", "tf3")}


@pytest.fixture(scope="module")
def exported(runs: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("exported")
    files = {}
    for name, run_dir in runs.items():
        files[name] = str(root / f"{name}.pt")
        export_run(run_dir, files[name])
    return files


def waves_of(shapes: list[tuple[int, int]], seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(shape, generator=generator) * 2 - 1 for shape in shapes]


# ---------------------------------------------------------------- a fresh process, torch alone

FRESH = r"""
import sys
sys.path.append(sys.argv[1])  # site-packages without its .pth files: no editable clar-ray hook
try:
    import clar_ray
except ImportError:
    pass
else:
    raise SystemExit("clar_ray is importable: " + clar_ray.__file__)
sys.modules["nnAudio"] = None  # installed beside torch: make any use of it fail
import torch
waves = torch.load(sys.argv[2])
results = []
for path in sys.argv[4:]:
    extra = {"clar_ray.json": ""}
    model = torch.jit.load(path, _extra_files=extra)
    with torch.no_grad():
        results.append({
            "scene": [model(w) for w in waves],
            "frames": [model.timestamp_embeddings(w) for w in waves],
            "attributes": {"sample_rate": model.sample_rate,
                           "embedding_size": model.embedding_size,
                           "hop_samples": model.hop_samples, "min_samples": model.min_samples},
            "metadata": extra["clar_ray.json"].decode(),
            "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("clar_ray", "nnAudio")
                              and sys.modules[m] is not None)})
torch.save(results, sys.argv[3])
"""


def run_fresh(model_files: list[str], waves: list[torch.Tensor], tmp_path: Path) -> list[dict]:
    """Run exported files in `python -I -S` with only site-packages (no clar-ray) on the path."""
    inputs, outputs = tmp_path / "waves.pt", tmp_path / "out.pt"
    torch.save(waves, inputs)
    site = sysconfig.get_paths()["purelib"]
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", FRESH, site, str(inputs),
                           str(outputs), *model_files], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return list(torch.load(outputs))


def check_against_encoder(run_dir: str, fresh: dict, waves: list[torch.Tensor]) -> None:
    extractor, _ = artifacts.load_encoder(run_dir)
    assert fresh["modules"] == []
    with torch.no_grad():
        for wave, scene in zip(waves, fresh["scene"]):
            want = extractor(wave)
            assert scene.shape == want.shape and scene.dtype == torch.float32
            torch.testing.assert_close(scene, want, rtol=1e-4, atol=1e-5)
    for wave, (frames, ms) in zip(waves, fresh["frames"]):
        assert frames.shape[0] == wave.shape[0] and ms.shape == frames.shape[:2]


def test_exported_files_run_with_torch_alone_and_give_the_encoders_embeddings(
        runs: dict[str, str], exported: dict[str, str], tmp_path: Path) -> None:
    waves = waves_of([(2, 16000), (1, 9001), (3, 40000)])
    frontends = sorted(exported)
    for frontend, fresh in zip(frontends, run_fresh([exported[f] for f in frontends], waves,
                                                    tmp_path)):
        check_against_encoder(runs[frontend], fresh, waves)
        metadata = json.loads(fresh["metadata"])
        assert metadata == read_metadata(exported[frontend])
        assert fresh["attributes"] == {"sample_rate": SAMPLE_RATE, "embedding_size": 16,
                                       "hop_samples": HOP_SAMPLES[frontend],
                                       "min_samples": metadata["min_samples"]}


def test_metadata_names_the_audio_format_the_model_and_the_config(
        runs: dict[str, str], exported: dict[str, str]) -> None:
    for frontend, run_dir in runs.items():
        metadata = read_metadata(exported[frontend])
        config = (Path(run_dir) / artifacts.CONFIG_FILE).read_bytes()
        assert metadata["config_sha256"] == hashlib.sha256(config).hexdigest()
        assert (metadata["sample_rate"], metadata["clip_samples"]) == (SAMPLE_RATE, CLIP_SAMPLES)
        assert metadata["clip_seconds"] == 1.0 and metadata["embedding_size"] == 16
        assert (metadata["frontend"], metadata["encoder"]) == (frontend, ENCODER_FOR[frontend])
        assert metadata["hop_samples"] == HOP_SAMPLES[frontend] and metadata["epoch"] == 2
        model, loaded = load_exported(exported[frontend])
        assert loaded == metadata and json.loads(model.metadata) == metadata


@pytest.mark.parametrize("frontend", sorted(FRONTENDS))
def test_frame_geometry_matches_the_feature_map_of_every_frontend(frontend: str) -> None:
    extractor = make_extractor(frontend)
    geometry = frame_geometry(extractor.frontend, extractor.encoder)
    assert geometry.hop_samples == HOP_SAMPLES[frontend]
    features = torch.nn.Sequential(extractor.frontend, extractor.encoder.stem,
                                   extractor.encoder.stages)
    with torch.no_grad():
        for length in (geometry.min_samples, 9001, 16000, 40000):
            frames = features(torch.zeros(1, length)).shape[-1]
            last = geometry.first_frame_samples + (frames - 1) * geometry.hop_samples
            # Frames cover the audio: the last centre lies in the clip, within two hops of its end.
            assert length - 2 * geometry.hop_samples <= last <= length, (length, frames)
        with pytest.raises((RuntimeError, ValueError)):  # min_samples is the least that works
            features(torch.zeros(1, geometry.min_samples - 1))


@pytest.mark.parametrize(("frontend", "shape"), [("raw", (16, 40000)), ("tf3", (2, 200000))])
def test_frame_centres_are_the_centres_of_the_receptive_fields(frontend: str,
                                                                shape: tuple[int, int]) -> None:
    """The samples a middle frame depends on (its gradient's support) are centred on it."""
    extractor = make_extractor(frontend)
    geometry = frame_geometry(extractor.frontend, extractor.encoder)
    features = torch.nn.Sequential(extractor.frontend, extractor.encoder.stem,
                                   extractor.encoder.stages)
    audio = waves_of([shape], seed=7)[0].requires_grad_()
    h = features(audio)
    h = h.mean(dim=2) if h.dim() == 4 else h  # (B, D, N)
    for j in (h.shape[-1] // 2 - 1, h.shape[-1] // 2):
        (grad,) = torch.autograd.grad(h[..., j].abs().sum(), audio, retain_graph=True)
        support = torch.nonzero(grad.abs().sum(dim=0) > 0).flatten()  # union over the batch
        middle = (float(support.min()) + float(support.max())) / 2
        centre = geometry.first_frame_samples + j * geometry.hop_samples
        assert abs(middle - centre) <= 4, (j, middle, centre)


def test_export_errors_are_one_line(runs: dict[str, str], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.yaml" in err
    no_encoder = tmp_path / "unfinished"
    dump_job(JobConfig(), str(no_encoder / artifacts.CONFIG_FILE))
    assert main(["export", str(no_encoder), "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no trained encoder" in err
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(ValueError, match="not a file written by clar-ray export"):
        read_metadata(str(Path(runs["raw"]) / artifacts.ENCODER_FILE))


# ---------------------------------------------------------------- through `clar-ray train`


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A run directory from `clar-ray train` (one epoch of the tiny raw job, real local Ray)."""
    import ray

    from clar_ray.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("trained")
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        data = str(root / "data")
        prepare_dataset("synthetic", data, options={"clips_per_class": "8", "num_classes": "3"},
                        progress=False)
        job_file = str(root / "job.yaml")
        dump_job(tiny_job(data, "train.epochs=1"), job_file)
        assert main(["train", job_file, "--out", str(root / "run"), "--no-eval"]) == 0
        yield str(root / "run")
    finally:
        ray.shutdown()


def test_clar_ray_export_of_a_trained_run(trained: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model.pt"
    assert main(["export", trained, "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    waves = waves_of([(2, 16000), (1, 5000)], seed=3)
    check_against_encoder(trained, run_fresh([str(out)], waves, tmp_path)[0], waves)
