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
from clar_ray.checkpoint import read_trace
from clar_ray.config import load_job
from clar_ray.data.prepare import prepare_dataset
from clar_ray.optim import schedule
from clar_ray.resources import ResourcePlanError
from clar_ray.train import CRASH_AFTER_EPOCH, TRACE_STEPS, TrainingStoppedError, run_training

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


def assert_continued(trace: list[dict], *, resumed_epoch: int, steps_per_epoch: int,
                     epochs: int, lr: float) -> None:
    """Two attempts in a step trace: the second continued exactly where the first's checkpoint
    of ``resumed_epoch`` left off (step, parameters, optimiser state, learning rate), and no
    step before that checkpoint ran twice."""
    starts = [r for r in trace if r["event"] == "start"]
    assert [(r["epoch"], r["step"]) for r in starts] == [
        (0, 0), (resumed_epoch, resumed_epoch * steps_per_epoch)], starts
    assert starts[1]["source"] and "checkpoint_" in starts[1]["source"], starts[1]
    first, second = ([r for r in trace if r["event"] == "step" and r["attempt"] == s["attempt"]]
                     for s in starts)
    resumed_step = resumed_epoch * steps_per_epoch
    # The first attempt ran up to its checkpoint (and maybe past it, up to the kill)...
    done = [r for r in first if r["step"] < resumed_step]
    assert [r["step"] for r in done] == list(range(resumed_step))
    # ... the second starts at the checkpoint's step, not before it, and runs every later step.
    assert [r["step"] for r in second] == list(range(resumed_step, epochs * steps_per_epoch))
    assert {r["epoch"] for r in second} == set(range(resumed_epoch, epochs))
    for run in (first, second):  # within an attempt, each step starts where the last ended
        for a, b in zip(run, run[1:]):
            assert (b["params_before"], b["optim_before"]) == (a["params_after"], a["optim_after"])
    # It starts from the checkpoint's parameters and optimiser state, to the bit.
    assert second[0]["params_before"] == done[-1]["params_after"]
    assert second[0]["optim_before"] == done[-1]["optim_after"] > 0  # momentum buffers
    # The learning rate of each step is the schedule's at that step (cosine: it changes).
    total = epochs * steps_per_epoch
    for record in done + second:
        expected = schedule.lr_at(record["step"], base_lr=lr, warmup_steps=0, total_steps=total)
        assert record["lr"] == pytest.approx(expected, rel=1e-12), record
    assert second[0]["lr"] != pytest.approx(lr)


def test_killed_worker_resumes_from_its_checkpoint(datasets: dict[str, str],
                                                   tmp_path: Path) -> None:
    """Rank 0 dies right after reporting epoch 0's checkpoint, before Ray's controller has
    taken the report from the worker: the restart must still continue from that checkpoint."""
    job = tiny_job(datasets["small"], "train.epochs=3", "train.max_failures=1")
    run_dir, trace = tmp_path / "run", tmp_path / "trace.jsonl"
    run_training(job, str(run_dir), evaluate=False,
                 extra_loop_config={CRASH_AFTER_EPOCH: 0, TRACE_STEPS: str(trace)})
    assert (run_dir / "crashed-once").exists()  # the worker process really was killed
    steps = (27 // 1) // 8  # 27 train rows, batch 8
    assert_continued(read_trace(str(trace)), resumed_epoch=1, steps_per_epoch=steps, epochs=3,
                     lr=job.optim.lr)
    records = _metrics(run_dir)
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert [r["step"] for r in records] == [steps, 2 * steps, 3 * steps]
    assert artifacts.load_encoder(str(run_dir))[1]["epoch"] == 3


def test_resume_continues_a_stopped_run(datasets: dict[str, str], tmp_path: Path) -> None:
    run_dir, trace = tmp_path / "run", tmp_path / "trace.jsonl"
    loop = {TRACE_STEPS: str(trace)}
    run_training(tiny_job(datasets["small"], "train.epochs=1"), str(run_dir), evaluate=False,
                 extra_loop_config=loop)
    with pytest.raises(FileExistsError, match="--resume"):
        run_training(tiny_job(datasets["small"], "train.epochs=2"), str(run_dir), evaluate=False)
    job = tiny_job(datasets["small"], "train.epochs=2")
    run_training(job, str(run_dir), resume=True, evaluate=False, extra_loop_config=loop)
    assert [r["epoch"] for r in _metrics(run_dir)] == [0, 1]
    records = read_trace(str(trace))
    # The first run's schedule was for 1 epoch: compare the second attempt's own steps.
    starts = [r for r in records if r["event"] == "start"]
    assert [(r["epoch"], r["step"]) for r in starts] == [(0, 0), (1, 3)]
    first, second = ([r for r in records if r["event"] == "step" and r["attempt"] == s["attempt"]]
                     for s in starts)
    assert [r["step"] for r in second] == [3, 4, 5]
    assert second[0]["params_before"] == first[-1]["params_after"]
    assert second[0]["optim_before"] == first[-1]["optim_after"] > 0
    assert second[0]["lr"] == pytest.approx(
        schedule.lr_at(3, base_lr=job.optim.lr, warmup_steps=0, total_steps=6), rel=1e-12)


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
