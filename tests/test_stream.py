"""The Ray Data stream of augmented view pairs, on a real local Ray cluster."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import ray

from clar_ray.config import JobConfig
from clar_ray.data.manifest import load_split
from clar_ray.data.prepare import prepare_dataset
from clar_ray.data.stream import build_train_stream, dropped_ids, get_or_create_clock
from clar_ray.resources import ResourcePlan, ResourcePlanError, cluster_plan


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    out = str(tmp_path_factory.mktemp("stream") / "synthetic")
    prepare_dataset("synthetic", out, options={"clips_per_class": "10", "num_classes": "3",
                                               "test_fraction": "0.2"}, progress=False)
    yield out
    ray.shutdown()


def _job(data_dir: str, *overrides: str) -> JobConfig:
    return JobConfig().replace([f"data.path={data_dir}", "augment.sequence=[fade, time_shift]",
                                "data.label_fraction=0.5", *overrides])


def _collect(dataset: ray.data.Dataset) -> dict[str, np.ndarray]:
    rows: dict[str, list[np.ndarray]] = {}
    for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
        for key, value in batch.items():
            rows.setdefault(key, []).append(value)
    out = {key: np.concatenate(values) for key, values in rows.items()}
    order = np.argsort(out["sample_id"])
    return {key: value[order] for key, value in out.items()}


def _plan(actors: int) -> ResourcePlan:
    return ResourcePlan(workers=1, cpus_per_worker=1.0, gpus_per_worker=0, actors=actors,
                        cpus_per_actor=1.0)


def test_every_sample_once_with_two_distinct_float_views(data_dir: str) -> None:
    got = _collect(build_train_stream(_job(data_dir), _plan(1), run_id=None, epoch=0, epochs=1))
    assert len(got["sample_id"]) == 24 and len(np.unique(got["sample_id"])) == 24
    assert got["view_a"].dtype == np.float32 and got["view_a"].shape == (24, 16000)
    assert not np.allclose(got["view_a"], got["view_b"])
    labelled = got["label"] >= 0
    assert labelled.sum() == 12  # half of each of the 3 classes of 8 rows
    assert set(got["label"][~labelled]) == {-1}


def test_an_epoch_keeps_exactly_its_planned_rows(data_dir: str) -> None:
    """With ``rows_per_epoch`` each epoch is a whole number of batches: 16 of 24 rows, the
    eight left out a seeded choice of that epoch (so the trainer's epochs are the stream's)."""
    job = _job(data_dir)
    ids = load_split(data_dir, "train", columns=["sample_id"])["sample_id"]
    got = _collect(build_train_stream(job, _plan(2), run_id=None, epoch=3, epochs=2,
                                      rows_per_epoch=16))
    left_out = []
    for epoch in (3, 4):
        rows = got["sample_id"][got["epoch"] == epoch]
        dropped = dropped_ids(ids, 16, job.train.seed, epoch)
        assert len(rows) == 16 and len(np.unique(rows)) == 16
        assert set(rows.tolist()) == set(ids.tolist()) - set(dropped.tolist())
        left_out.append(set(dropped.tolist()))
    assert left_out[0] != left_out[1]  # each epoch leaves out other rows
    np.testing.assert_array_equal(dropped_ids(ids, 16, job.train.seed, 3),
                                  dropped_ids(ids[::-1], 16, job.train.seed, 3))
    assert len(dropped_ids(ids, None, job.train.seed, 3)) == 0


def test_views_do_not_depend_on_actors_or_batch_size(data_dir: str) -> None:
    one = _collect(build_train_stream(_job(data_dir, "augment.actor_batch_size=5"), _plan(1),
                                      run_id=None, epoch=3, epochs=1))
    two = _collect(build_train_stream(_job(data_dir, "augment.actor_batch_size=16"), _plan(2),
                                      run_id=None, epoch=3, epochs=1))
    for key in ("sample_id", "view_a", "view_b", "label", "epoch"):
        np.testing.assert_array_equal(one[key], two[key])


def _train_ids(data_dir: str) -> np.ndarray:
    return np.sort(load_split(data_dir, "train", columns=["sample_id"])["sample_id"])


def _by_epoch(got: dict[str, np.ndarray], epoch: int) -> dict[str, np.ndarray]:
    rows = got["epoch"] == epoch
    part = {key: value[rows] for key, value in got.items()}
    order = np.argsort(part["sample_id"], kind="stable")
    return {key: value[order] for key, value in part.items()}


def test_one_stream_holds_every_epoch_from_the_clock_with_fresh_views(data_dir: str) -> None:
    clock = get_or_create_clock("stream-test")
    try:
        ray.get(clock.set.remote(2))  # a run resumed at epoch 2
        got = _collect(build_train_stream(_job(data_dir), _plan(2), run_id="stream-test",
                                          epochs=3))
    finally:
        ray.kill(clock)
    assert sorted(set(got["epoch"].tolist())) == [2, 3, 4]
    epochs = [_by_epoch(got, epoch) for epoch in (2, 3, 4)]
    for part in epochs:  # every sample once per epoch
        np.testing.assert_array_equal(part["sample_id"], _train_ids(data_dir))
    for earlier, later in zip(epochs, epochs[1:]):  # fresh views, the same label mask
        assert not np.allclose(earlier["view_a"], later["view_a"])
        assert not np.allclose(earlier["view_b"], later["view_b"])
        np.testing.assert_array_equal(earlier["label"], later["label"])
    alone = _collect(build_train_stream(_job(data_dir), _plan(1), run_id=None, epoch=3, epochs=1))
    for key in ("sample_id", "view_a", "view_b", "label"):  # a view depends on its epoch only
        np.testing.assert_array_equal(epochs[1][key], alone[key])


def test_row_order_changes_from_epoch_to_epoch(data_dir: str) -> None:
    dataset = build_train_stream(_job(data_dir, "augment.actor_batch_size=4"), _plan(1),
                                 run_id=None, epoch=0, epochs=2)
    ids: dict[int, list[int]] = {0: [], 1: []}
    for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
        for epoch, sample in zip(batch["epoch"].tolist(), batch["sample_id"].tolist()):
            ids[epoch].append(sample)
    assert sorted(ids[0]) == sorted(ids[1]) == _train_ids(data_dir).tolist()
    assert ids[0] != ids[1]


def test_impossible_plan_fails_within_seconds(data_dir: str) -> None:
    started = time.monotonic()
    with pytest.raises(ResourcePlanError, match="needs .* CPUs"):
        cluster_plan(_job(data_dir, "train.workers=2", "train.batch_size=16",
                          "augment.actors=8"))
    assert time.monotonic() - started < 10


def test_stream_reads_shards_named_by_the_manifest(data_dir: str) -> None:
    assert any(Path(data_dir, "train").glob("*.parquet"))


def _order(dataset: ray.data.Dataset) -> list[int]:
    """Sample ids in the order the stream delivers them (all epochs)."""
    return [int(i) for batch in dataset.iter_batches(batch_format="numpy", batch_size=None)
            for i in batch["sample_id"]]


def test_ordered_stream_repeats_its_order_with_two_actors(tmp_path: Path) -> None:
    # Many small shards and small actor batches on two actors: unordered, the delivery order
    # follows which actor finishes first; ordered, it is the input's order every time.
    data = str(tmp_path / "small-shards")
    prepare_dataset("synthetic", data, options={"clips_per_class": "12", "num_classes": "3",
                                                "test_fraction": "0.2"},
                    rows_per_shard=3, progress=False)
    job = _job(data, "augment.actor_batch_size=2", "data.ordered=true")
    runs = [_order(build_train_stream(job, _plan(2), run_id=None, epoch=0, epochs=2))
            for _ in range(3)]
    rows = len(load_split(data, "train", columns=["sample_id"])["sample_id"])
    assert len(runs[0]) == 2 * rows and sorted(runs[0][:rows]) == sorted(runs[0][rows:])
    assert runs[0] == runs[1] == runs[2]
