"""A seeded run repeats: same job, same seed, same cluster shape → the same per-epoch losses.

Two augmentation actors over many small shards finish their batches in a varying order; the
stream's ordered output (``data.ordered``, the default) hands them on in the input's order, so
training sees the same batches every time. With ``data.ordered=false`` this test fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray
from conftest import tiny_job

from clar_ray.data.prepare import prepare_dataset
from clar_ray.train import run_training


@pytest.fixture(scope="module")
def many_shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    data = str(tmp_path_factory.mktemp("repeat") / "synthetic")
    prepare_dataset("synthetic", data, options={"clips_per_class": "8", "num_classes": "3"},
                    rows_per_shard=3, progress=False)
    yield data
    ray.shutdown()


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text()
            .splitlines()]


def test_two_runs_with_one_seed_give_the_same_losses(many_shards: str, tmp_path: Path) -> None:
    job = tiny_job(many_shards, "augment.actors=2", "augment.actor_batch_size=2",
                   "data.shuffle_buffer=0", "data.ordered=true")
    losses = []
    for name in ("first", "second"):
        run_training(job, str(tmp_path / name), evaluate=False)
        losses.append(_losses(tmp_path / name))
    assert len(losses[0]) == job.train.epochs
    assert losses[0] == losses[1]  # to the bit
