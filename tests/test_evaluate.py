"""Tests of clar_ray.evaluate: feature extraction, linear probe, kNN, Probe and evaluate_run."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from clar_ray import artifacts
from clar_ray.augment import Augmenter
from clar_ray.config import JobConfig, dump_job
from clar_ray.data.manifest import Manifest, SplitInfo, load_split, pcm_to_arrow, row_schema
from clar_ray.evaluate import (
    Probe,
    evaluate_run,
    extract_features,
    knn_accuracy,
    linear_probe,
)
from clar_ray.models import FeatureExtractor, build_encoder, build_frontend

SAMPLE_RATE = 4000
CLIP_SAMPLES = 400
LABELS = ("low", "mid", "high")


# ---------------------------------------------------------------- tiny prepared data and runs


def clips(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n int16 clips whose tone depends on the class, plus their labels (every class present)."""
    labels = np.arange(n) % len(LABELS)
    t = np.arange(CLIP_SAMPLES) / SAMPLE_RATE
    freqs = np.array([200.0, 600.0, 1400.0])[labels]
    waves = 0.5 * np.sin(2 * np.pi * freqs[:, None] * t) + 0.05 * rng.standard_normal(
        (n, CLIP_SAMPLES))
    return (waves * 32767).astype(np.int16), labels.astype(np.int64)


def write_dataset(root: Path, rows: dict[str, int], *, seed: int = 0, shards: int = 1,
                  sample_rate: int = SAMPLE_RATE, relabel: dict[str, int] | None = None) -> str:
    """A prepared dataset in the manifest's schema, written with pyarrow alone.

    ``relabel`` shifts a split's labels by an offset (mod the classes): its tones then carry
    other classes' labels than in the other splits.
    """
    rng = np.random.default_rng(seed)
    infos, next_id = {}, 0
    for split, n in rows.items():
        pcm, labels = clips(n, rng)
        labels = (labels + (relabel or {}).get(split, 0)) % len(LABELS)
        ids = np.arange(next_id, next_id + n, dtype=np.int64) * 7919 + 11
        next_id += n
        (root / split).mkdir(parents=True)
        files = []
        for part, idx in enumerate(np.array_split(np.arange(n), shards)):
            table = pa.Table.from_arrays([
                pa.array(ids[idx]),
                pcm_to_arrow(pcm[idx]),
                pa.array(labels[idx]),
                pa.array([split] * len(idx)),
                pa.array([f"{split}/{i}.wav" for i in ids[idx]]),
            ], schema=row_schema(CLIP_SAMPLES))
            name = f"{split}/part-{part}.parquet"
            pq.write_table(table, root / name)
            files.append(name)
        counts = {LABELS[c]: int(np.sum(labels == c)) for c in range(len(LABELS))}
        infos[split] = SplitInfo(rows=n, files=tuple(files), class_counts=counts)
    Manifest(recipe="synthetic", source=None, options={}, sample_rate=sample_rate,
             clip_samples=CLIP_SAMPLES, labels=LABELS, splits=infos, skipped=(),
             created="2026-01-01T00:00:00+00:00").write(str(root))
    return str(root)


def tiny_job(path: str, **sections: dict) -> JobConfig:
    raw = {
        "name": "tiny",
        "data": {"path": path},
        "model": {"frontend": "raw", "encoder": "resnet18_1d", "width": 2},
        "train": {"batch_size": 8, "seed": 3},
        "eval": {"probe_epochs": 10, "knn_k": 3, "batch_size": 16},
    }
    for name, values in sections.items():
        raw[name] = {**raw.get(name, {}), **values}
    return JobConfig.from_dict(raw)


def tiny_extractor(seed: int = 0) -> FeatureExtractor:
    torch.manual_seed(seed)
    frontend = build_frontend("raw", sample_rate=SAMPLE_RATE)
    return FeatureExtractor(frontend, build_encoder("resnet18_1d", in_channels=1, width=2))


def make_run(run_dir: Path, job: JobConfig, *, epoch: int = 3) -> tuple[str, FeatureExtractor]:
    extractor = tiny_extractor()
    dump_job(job, str(run_dir / artifacts.CONFIG_FILE))
    artifacts.save_encoder(str(run_dir), extractor.encoder, job, sample_rate=SAMPLE_RATE,
                           clip_samples=CLIP_SAMPLES, epoch=epoch)
    return str(run_dir), extractor


# Augmentations that change every clip (p = 1), so a leak into evaluation would show.
CHANGING_AUGMENT = {"sequence": ["white_noise", "time_shift"],
                    "params": {"white_noise": {"p": 1.0}, "time_shift": {"p": 1.0}}}


# ---------------------------------------------------------------- extract_features


def test_extract_features_scales_int16_and_keeps_order() -> None:
    pcm = np.array([[0, 16384, -32768], [1, -1, 32767]], dtype=np.int16)
    feats = extract_features(lambda w: w * 1.0, pcm, batch_size=1)
    assert feats.dtype == np.float32
    np.testing.assert_array_equal(feats, pcm.astype(np.float32) / 32768)
    waves = np.array([[0.25, -0.5]], dtype=np.float32)
    np.testing.assert_array_equal(extract_features(lambda w: w, waves), waves)


def test_extract_features_is_batch_consistent() -> None:
    extractor = tiny_extractor()
    pcm, _ = clips(7, np.random.default_rng(1))
    whole = extract_features(extractor, pcm, batch_size=7)
    assert whole.shape == (7, extractor.num_features)
    for size in (1, 3):
        np.testing.assert_allclose(extract_features(extractor, pcm, batch_size=size), whole,
                                   rtol=1e-5, atol=1e-6)


def test_extract_features_runs_in_eval_mode_and_restores_the_mode() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Dropout(0.5))
    module.train()
    stats = module[1].running_mean.clone()
    pcm = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    first = extract_features(module, pcm, batch_size=4)
    second = extract_features(module, pcm, batch_size=2)
    np.testing.assert_allclose(first, second, rtol=1e-6)  # no dropout, running statistics
    assert module.training and all(m.training for m in module)
    assert torch.equal(module[1].running_mean, stats)  # batch norm statistics untouched


@pytest.mark.parametrize(("pcm", "error"), [
    (np.zeros((2, 3), dtype=np.int32), TypeError),
    (np.zeros(3, dtype=np.int16), ValueError),
    (np.zeros((0, 3), dtype=np.int16), ValueError),
])
def test_extract_features_rejects_bad_pcm(pcm: np.ndarray, error: type) -> None:
    with pytest.raises(error, match="pcm"):
        extract_features(lambda w: w, pcm)


def test_extract_features_rejects_an_output_that_is_not_b_by_d() -> None:
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        extract_features(lambda w: w[:, :, None], np.zeros((2, 3), dtype=np.float32))


# ---------------------------------------------------------------- linear probe and kNN


def gaussian_classes(rng: np.random.Generator, classes: int, per_class: int, dim: int,
                     separation: float) -> tuple[np.ndarray, np.ndarray]:
    centres = rng.standard_normal((classes, dim)) * separation / np.sqrt(dim)
    y = np.repeat(np.arange(classes), per_class)
    x = centres[y] + rng.standard_normal((len(y), dim))
    return x.astype(np.float32), y


def test_probes_reach_high_accuracy_on_separable_features() -> None:
    x, y = gaussian_classes(np.random.default_rng(0), 10, 90, 64, separation=12.0)
    test = np.arange(len(y)) % 3 == 0  # 600 train, 300 test rows from the same classes
    train_x, train_y, test_x, test_y = x[~test], y[~test], x[test], y[test]
    result = linear_probe(train_x, train_y, test_x, test_y, epochs=30, lr=0.01, seed=0)
    assert result["linear_top1"] > 0.95
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=20) > 0.95


def test_probes_are_at_chance_on_random_features() -> None:
    # 10 classes, 2000 test rows: the accuracy of a guess has standard deviation
    # sqrt(0.1 * 0.9 / 2000) = 0.0067, so +-0.05 is more than 7 standard deviations.
    rng = np.random.default_rng(1)
    train_x = rng.standard_normal((1000, 64)).astype(np.float32)
    test_x = rng.standard_normal((2000, 64)).astype(np.float32)
    train_y, test_y = rng.integers(0, 10, 1000), rng.integers(0, 10, 2000)
    linear = linear_probe(train_x, train_y, test_x, test_y, epochs=30)["linear_top1"]
    knn = knn_accuracy(train_x, train_y, test_x, test_y, k=20)
    assert abs(linear - 0.1) < 0.05
    assert abs(knn - 0.1) < 0.05


def test_linear_probe_standardises_with_train_statistics() -> None:
    # A tiny spread around a large offset: hopeless for Adam at lr 0.01 on raw features,
    # separable once standardised.
    rng = np.random.default_rng(2)
    x, y = gaussian_classes(rng, 4, 100, 16, separation=12.0)
    x = 100.0 + 1e-3 * x
    result = linear_probe(x[::2], y[::2], x[1::2], y[1::2], epochs=20, lr=0.01)
    assert result["linear_top1"] > 0.95


def test_linear_probe_is_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(3)
    x, y = gaussian_classes(rng, 5, 40, 8, separation=2.0)
    runs = [linear_probe(x[::2], y[::2], x[1::2], y[1::2], epochs=5, seed=7) for _ in range(2)]
    assert runs[0] == runs[1]


def test_progress_counts_clips_and_probe_epochs_and_changes_no_number() -> None:
    done: list[int] = []
    pcm, _ = clips(10, np.random.default_rng(4))
    feats = extract_features(tiny_extractor(), pcm, batch_size=4, progress=done.append)
    assert done == [4, 4, 2]
    np.testing.assert_array_equal(feats, extract_features(tiny_extractor(), pcm, batch_size=4))
    epochs: list[int] = []
    x, y = gaussian_classes(np.random.default_rng(3), 5, 40, 8, separation=2.0)
    counted = linear_probe(x[::2], y[::2], x[1::2], y[1::2], epochs=5, progress=epochs.append)
    assert epochs == [1] * 5
    assert counted == linear_probe(x[::2], y[::2], x[1::2], y[1::2], epochs=5)


def test_linear_probe_rejects_unlabelled_rows() -> None:
    x = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="train_y"):
        linear_probe(x, np.array([0, -1, 1]), x, np.array([0, 1, 1]))


def test_knn_votes_are_similarity_weighted() -> None:
    # Two neighbours of class 0 at cosine 0.6, one of class 1 at cosine 1: a majority vote
    # says 0, the weighted vote exp(cos / 0.07) says 1.
    train_x = np.array([[0.6, 0.8], [0.6, -0.8], [1.0, 0.0]], dtype=np.float32)
    train_y = np.array([0, 0, 1])
    test_x, test_y = np.array([[2.0, 0.0]], dtype=np.float32), np.array([1])
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=3) == 1.0
    assert knn_accuracy(train_x, train_y, test_x, np.array([0]), k=3) == 0.0


def test_knn_uses_cosine_similarity_and_caps_k() -> None:
    train_x = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    train_y = np.array([0, 1])
    test_x = np.array([[100.0, 1.0], [0.1, 3.0]], dtype=np.float32)  # scale does not matter
    assert knn_accuracy(train_x, train_y, test_x, np.array([0, 1]), k=1) == 1.0
    assert knn_accuracy(train_x, train_y, test_x, np.array([0, 1]), k=50) == 1.0


# ---------------------------------------------------------------- Probe


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_dataset(tmp_path_factory.mktemp("prepared"), {"train": 60, "test": 21},
                         shards=2)


def test_probe_uses_every_label_whatever_training_saw(dataset: str) -> None:
    probe = Probe(tiny_job(dataset, data={"label_fraction": 0.01}))
    assert probe.train_rows == 60 and probe.test_rows == 21
    assert sorted(set(probe.train_y.tolist())) == [0, 1, 2]
    assert (probe.train_y >= 0).all()


def test_probe_features_are_those_of_the_raw_clips(dataset: str) -> None:
    job = tiny_job(dataset, augment=CHANGING_AUGMENT)
    extractor = tiny_extractor()
    train_x, test_x = Probe(job).features(extractor)
    raw = load_split(dataset, "test")
    np.testing.assert_array_equal(test_x, extract_features(extractor, raw["pcm"], batch_size=16))
    np.testing.assert_array_equal(
        train_x, extract_features(extractor, load_split(dataset, "train")["pcm"], batch_size=16))
    # The job's augmentations would have changed the features: the equality above can fail.
    augmented = Augmenter(job.augment.sequence, sample_rate=SAMPLE_RATE,
                          params=job.augment.params)(raw["pcm"] / 32768.0, raw["sample_id"],
                                                     epoch=0, view=0)
    assert not np.allclose(extract_features(extractor, augmented), test_x, atol=1e-3)


def test_probe_is_scored_on_the_eval_split_not_the_training_split(tmp_path: Path) -> None:
    # The test split's tones carry shifted labels: a probe trained on the training split is
    # wrong on nearly every test clip, and right on nearly every training clip. Scored on the
    # training split by mistake, linear_top1 would be high.
    data = write_dataset(tmp_path / "shifted", {"train": 60, "test": 30},
                         relabel={"test": 1})
    probe = Probe(tiny_job(data, eval={"probe_epochs": 100}))
    extractor = tiny_extractor()
    result = probe.run(extractor.frontend, extractor.encoder)
    train_x, _ = probe.features(extractor)
    on_train = linear_probe(train_x, probe.train_y, train_x, probe.train_y, epochs=100,
                            lr=probe.job.eval.probe_lr, seed=probe.job.train.seed)
    assert on_train["linear_top1"] > 0.8  # the features separate the tones
    assert result["linear_top1"] < 0.34 and result["knn_top1"] < 0.34


def test_probe_run_restores_train_mode_and_scores(dataset: str) -> None:
    extractor = tiny_extractor()
    extractor.train()
    stats = extractor.encoder.stem[1].running_var.clone()
    probe = Probe(tiny_job(dataset))
    result = probe.run(extractor.frontend, extractor.encoder)
    assert set(result) == {"linear_top1", "knn_top1"}
    assert all(0.0 <= v <= 1.0 for v in result.values())
    assert extractor.frontend.training and extractor.encoder.training
    assert torch.equal(extractor.encoder.stem[1].running_var, stats)
    assert probe.last_seconds > 0


# ---------------------------------------------------------------- evaluate_run


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of TensorBoard event files (TFRecord framing, parsed with tensorboardX's proto)."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in folder.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_evaluate_run_scores_raw_clips_with_every_label(dataset: str, tmp_path: Path) -> None:
    job = tiny_job(dataset, data={"label_fraction": 0.01}, augment=CHANGING_AUGMENT,
                   objective={"name": "simclr"})
    run_dir, extractor = make_run(tmp_path / "run", job, epoch=3)
    result = evaluate_run(run_dir)

    assert json.loads((tmp_path / "run" / artifacts.RESULT_FILE).read_text()) == result
    assert result["train_rows"] == 60 and result["test_rows"] == 21
    assert result["label_fraction"] == 0.01
    assert (result["data"], result["train_split"], result["eval_split"]) == (dataset, "train",
                                                                             "test")
    assert (result["epoch"], result["objective"]) == (3, "simclr")
    # The same numbers as a probe on the raw clips' features, with every training label.
    train, test = load_split(dataset, "train"), load_split(dataset, "test")
    train_x = extract_features(extractor, train["pcm"], batch_size=16)
    test_x = extract_features(extractor, test["pcm"], batch_size=16)
    assert result["linear_top1"] == linear_probe(
        train_x, train["label"], test_x, test["label"], epochs=10, lr=job.eval.probe_lr,
        weight_decay=job.eval.probe_weight_decay, seed=3)["linear_top1"]
    assert result["knn_top1"] == knn_accuracy(train_x, train["label"], test_x, test["label"], k=3)
    scalars = read_scalars(tmp_path / "run" / artifacts.TENSORBOARD_DIR)
    # eval scalars sit at the last epoch's index (epoch 3 of a run = step 2), like epoch/*
    assert scalars["eval/linear_top1"] == [(2, pytest.approx(result["linear_top1"]))]
    assert scalars["eval/knn_top1"] == [(2, pytest.approx(result["knn_top1"]))]


def test_evaluate_run_prints_a_few_plain_lines_without_a_terminal(
        dataset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir, _ = make_run(tmp_path / "run", tiny_job(dataset))
    evaluate_run(run_dir)
    captured = capsys.readouterr()
    # 60 + 21 clips in batches of 16 (16, 32, 48, 60, 76, 81 done): a line as each quarter of
    # 81 is passed; then the probe's 10 epochs, a line at 3, 5, 8 and 10. No bar, no stdout.
    assert captured.err.splitlines() == [
        *(f"evaluate: features {n}/81 clips" for n in (32, 48, 76, 81)),
        *(f"evaluate: linear probe {n}/10 epochs" for n in (3, 5, 8, 10))]
    assert captured.out == ""


def test_evaluate_run_on_other_data_checks_the_audio_format(dataset: str,
                                                            tmp_path: Path) -> None:
    run_dir, _ = make_run(tmp_path / "run", tiny_job(dataset))
    other = write_dataset(tmp_path / "other", {"train": 9, "test": 6}, seed=5)
    result = evaluate_run(run_dir, other)
    assert (result["data"], result["train_rows"], result["test_rows"]) == (other, 9, 6)
    wrong = write_dataset(tmp_path / "wrong", {"train": 3, "test": 3}, sample_rate=8000)
    with pytest.raises(ValueError, match="8000 Hz.*4000 Hz"):
        evaluate_run(run_dir, wrong)


def test_evaluate_run_without_encoder_says_so(dataset: str, tmp_path: Path) -> None:
    dump_job(tiny_job(dataset), str(tmp_path / artifacts.CONFIG_FILE))
    with pytest.raises(FileNotFoundError, match="encoder"):
        evaluate_run(str(tmp_path))
