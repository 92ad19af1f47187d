"""The Ray Data stream of augmented view pairs, on a real local Ray cluster."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import ray

from clar_ray.config import JobConfig
from clar_ray.data.prepare import prepare_dataset
from clar_ray.data.stream import (
    ResourcePlan,
    ResourcePlanError,
    build_train_stream,
    cluster_plan,
    get_or_create_clock,
)


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
    got = _collect(build_train_stream(_job(data_dir), _plan(1), run_id=None, epoch=0))
    assert len(got["sample_id"]) == 24 and len(np.unique(got["sample_id"])) == 24
    assert got["view_a"].dtype == np.float32 and got["view_a"].shape == (24, 16000)
    assert not np.allclose(got["view_a"], got["view_b"])
    labelled = got["label"] >= 0
    assert labelled.sum() == 12  # half of each of the 3 classes of 8 rows
    assert set(got["label"][~labelled]) == {-1}


def test_views_do_not_depend_on_actors_or_batch_size(data_dir: str) -> None:
    one = _collect(build_train_stream(_job(data_dir, "augment.actor_batch_size=5"), _plan(1),
                                      run_id=None, epoch=3))
    two = _collect(build_train_stream(_job(data_dir, "augment.actor_batch_size=16"), _plan(2),
                                      run_id=None, epoch=3))
    for key in ("sample_id", "view_a", "view_b", "label"):
        np.testing.assert_array_equal(one[key], two[key])


def test_epoch_clock_gives_fresh_views_each_epoch(data_dir: str) -> None:
    clock = get_or_create_clock("stream-test")
    try:
        dataset = build_train_stream(_job(data_dir), _plan(1), run_id="stream-test")
        ray.get(clock.set.remote(0))
        first = _collect(dataset)
        ray.get(clock.set.remote(1))
        second = _collect(dataset)
        ray.get(clock.set.remote(0))
        again = _collect(dataset)
    finally:
        ray.kill(clock)
    np.testing.assert_array_equal(first["sample_id"], second["sample_id"])
    assert not np.allclose(first["view_a"], second["view_a"])
    np.testing.assert_array_equal(first["view_a"], again["view_a"])
    np.testing.assert_array_equal(first["label"], second["label"])  # the label mask is fixed


def test_impossible_plan_fails_within_seconds(data_dir: str) -> None:
    started = time.monotonic()
    with pytest.raises(ResourcePlanError, match="needs .* CPUs"):
        cluster_plan(_job(data_dir, "train.workers=2", "train.batch_size=16",
                          "augment.actors=8"))
    assert time.monotonic() - started < 10


def test_stream_reads_shards_named_by_the_manifest(data_dir: str) -> None:
    assert any(Path(data_dir, "train").glob("*.parquet"))
