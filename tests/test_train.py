"""Training on a real local Ray cluster: the quickstart, DDP on CPU, failures and resuming."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import ray
import torch
from conftest import tiny_job

from clar_ray import artifacts
from clar_ray.config import load_job
from clar_ray.data.prepare import prepare_dataset
from clar_ray.data.stream import ResourcePlanError
from clar_ray.train import CRASH_AFTER_EPOCH, TrainingStoppedError, run_training

JOBS = Path(__file__).resolve().parents[1] / "jobs"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A local Ray sized like `clar-ray train` sizes it, and two synthetic datasets."""
    ray.init(address="local", num_cpus=5, include_dashboard=False, log_to_driver=False)
    root = tmp_path_factory.mktemp("train")
    small = str(root / "small")
    prepare_dataset("synthetic", small, options={"clips_per_class": "12", "num_classes": "3"},
                    progress=False)
    quick = str(root / "quickstart")
    prepare_dataset("synthetic", quick, progress=False)
    yield {"small": small, "quickstart": quick}
    ray.shutdown()


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_quickstart_job_runs_end_to_end_and_its_loss_falls(datasets: dict[str, str],
                                                          tmp_path: Path) -> None:
    job = load_job(JOBS / "quickstart.yaml", [f"data.path={datasets['quickstart']}"])
    summary = run_training(job, str(tmp_path / "run"))
    run_dir = tmp_path / "run"
    records = _metrics(run_dir)
    assert [r["epoch"] for r in records] == list(range(job.train.epochs))
    assert records[-1]["loss"] < records[0]["loss"], records
    assert all(r["views_per_s"] > 0 for r in records)
    probed = [r for r in records if "linear_top1" in r]
    assert probed and probed[-1]["epoch"] == job.train.epochs - 1
    result = json.loads((run_dir / "result.json").read_text())
    assert summary["result"]["linear_top1"] == result["linear_top1"]
    assert 0.0 <= result["knn_top1"] <= 1.0 and result["linear_top1"] > 1 / 6
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert list(run_dir.glob("checkpoint_*/state.pt"))
    assert load_job(run_dir / "config.yaml") == job
    extractor, info = artifacts.load_encoder(str(run_dir))
    assert info["epoch"] == job.train.epochs
    with torch.no_grad():
        assert extractor(torch.zeros(2, info["clip_samples"])).shape == (2, 8 * job.model.width)


def test_two_workers_train_with_ddp_on_cpu(datasets: dict[str, str], tmp_path: Path) -> None:
    job = tiny_job(datasets["small"], "train.workers=2", "train.epochs=1",
                "objective.name=simclr")
    run_training(job, str(tmp_path / "run"), evaluate=False)
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert plan["workers"] == 2
    (record,) = _metrics(tmp_path / "run")
    assert record["step"] == (27 // 2) // 4  # 27 train rows, 2 workers, 4 rows each per step


def test_killed_worker_resumes_from_its_checkpoint(datasets: dict[str, str],
                                                   tmp_path: Path) -> None:
    job = tiny_job(datasets["small"], "train.epochs=3", "train.max_failures=1")
    run_dir = tmp_path / "run"
    run_training(job, str(run_dir), evaluate=False, extra_loop_config={CRASH_AFTER_EPOCH: 0})
    assert (run_dir / "crashed-once").exists()  # the worker process really was killed
    records = _metrics(run_dir)
    assert [r["epoch"] for r in records] == [0, 1, 2]  # epoch 0 not run twice
    steps = [r["step"] for r in records]
    assert steps == sorted(steps) and steps[0] > 0
    assert artifacts.load_encoder(str(run_dir))[1]["epoch"] == 3


def test_resume_continues_a_stopped_run(datasets: dict[str, str], tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_training(tiny_job(datasets["small"], "train.epochs=1"), str(run_dir), evaluate=False)
    with pytest.raises(FileExistsError, match="--resume"):
        run_training(tiny_job(datasets["small"], "train.epochs=2"), str(run_dir), evaluate=False)
    run_training(tiny_job(datasets["small"], "train.epochs=2"), str(run_dir), resume=True,
                 evaluate=False)
    assert [r["epoch"] for r in _metrics(run_dir)] == [0, 1]


def test_non_finite_loss_stops_with_a_clear_message(datasets: dict[str, str],
                                                    tmp_path: Path) -> None:
    job = tiny_job(datasets["small"], "train.epochs=3", "optim.lr=1e30", "optim.name=sgd",
                "objective.name=supervised", "data.label_fraction=1.0")
    with pytest.raises(TrainingStoppedError, match="non-finite loss .* the last good checkpoint"):
        run_training(job, str(tmp_path / "run"), evaluate=False)
    assert not (tmp_path / "run" / "encoder.pt").exists()


def test_plan_that_cannot_fit_fails_before_training(datasets: dict[str, str],
                                                    tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ResourcePlanError, match="the cluster has 5"):
        run_training(tiny_job(datasets["small"], "train.workers=4", "augment.actors=2"),
                     str(tmp_path / "run"))
    assert time.monotonic() - started < 10
    assert not (tmp_path / "run").exists()
