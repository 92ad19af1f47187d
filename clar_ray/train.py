"""Training on Ray Train: :func:`run_training` checks, plans and launches a run.

    preflight (no Ray) → Ray → resource plan → run directory (config.yaml, plan.json)
      → TorchTrainer(train_func on the plan's workers, the stream of the CPU augmentations)
      → one console line per epoch while it runs → result.json from the final probe

What each worker runs is :func:`clar_ray.train_loop.train_func` (re-exported here with its test
hooks :data:`TRACE_STEPS` and :data:`CRASH_AFTER_EPOCH`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Mapping
from typing import Any

from clar_ray import artifacts, rundir, storage
from clar_ray.augment.placement import Placement
from clar_ray.config import JobConfig, dump_job
from clar_ray.resources import ResourcePlan, cluster_plan, ensure_ray, epoch_rows, steps_per_epoch
from clar_ray.runlog import read_metrics
from clar_ray.train_loop import CRASH_AFTER_EPOCH, TRACE_STEPS, train_func

__all__ = ["CRASH_AFTER_EPOCH", "TRACE_STEPS", "TrainingStoppedError", "prepare_run_dir",
           "run_id_for", "run_training", "train_func"]


class TrainingStoppedError(RuntimeError):
    """A run that stopped before its planned epochs (a non-finite loss)."""


def run_id_for(run_dir: str) -> str:
    """A stable id for a run directory (the same after a restart or ``--resume``)."""
    return hashlib.sha1(run_dir.encode()).hexdigest()[:12]


def prepare_run_dir(run_dir: str, job: JobConfig, *, resume: bool, overwrite: bool) -> None:
    """Reuse a run directory only as :mod:`clar_ray.rundir` allows (clears only its own files)."""
    rundir.prepare_run_dir(run_dir, job, resume=resume, overwrite=overwrite)


def run_training(job: JobConfig, run_dir: str, *, resume: bool = False, overwrite: bool = False,
                 evaluate: bool = True, address: str | None = None,
                 extra_loop_config: Mapping[str, Any] | None = None,
                 callbacks: list[Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Train a job with Ray Train, then evaluate the encoder; return the run's summary.

    Args:
        job: The job.
        run_dir: The run directory (local path or URI); its parent is Ray's storage path.
        resume: Continue the run in ``run_dir`` from its last checkpoint.
        overwrite: Start again in a ``run_dir`` that already holds a run.
        evaluate: Run the linear probe at the end and write ``result.json``.
        address: A Ray cluster address (default: RAY_ADDRESS or a new local Ray).
        extra_loop_config: Extra keys for ``train_loop_config`` (tests).
        callbacks: Ray Train callbacks (Tune's report callback).
        progress: Print one line per epoch on the driver (:mod:`clar_ray.console`).

    Raises:
        PreflightError: When the data is missing or damaged, or a local plan cannot fit this
            machine (before Ray starts).
        FileExistsError, FileNotFoundError, ConfigError: When ``run_dir`` may not be used as
            asked (:mod:`clar_ray.rundir`; nothing in it is changed).
        ResourcePlanError: When the job does not fit the cluster (before anything starts).
        TrainingStoppedError: When the loss became non-finite.
    """
    import ray

    from clar_ray import console
    from clar_ray.data.stream import get_or_create_clock

    run_dir = storage.absolute(run_dir)
    job = job.with_absolute_data()  # data/fsdd means the same in Ray Train's workers
    plan, placement, rows = _start_run(job, run_dir, resume=resume, overwrite=overwrite,
                                       address=address)
    run_id = run_id_for(run_dir)
    clock = get_or_create_clock(run_id)
    trainer = _trainer(job, run_dir, run_id, plan, placement,
                       loop_config={"rows": rows, **(extra_loop_config or {})},
                       callbacks=callbacks)
    follower = console.EpochFollower(artifacts.run_file(run_dir, artifacts.METRICS_FILE),
                                     job.train.epochs, done_before=_epochs_done(run_dir),
                                     enabled=progress)
    try:
        with follower:
            result = trainer.fit()
    finally:
        with contextlib.suppress(Exception):
            ray.kill(clock)
    status = result.return_value or {}  # type: ignore[attr-defined]  # Train v2 only
    if status.get("status") == "non_finite":
        raise TrainingStoppedError(status["message"])
    summary: dict[str, Any] = {"run_dir": run_dir, "epochs": status.get("epochs"),
                               "plan": plan.describe()}
    if evaluate:
        from clar_ray.evaluate import evaluate_run, result_from_training

        # The last epoch's probe is the final one: computed once, in training, on the device.
        summary["result"] = result_from_training(run_dir) or evaluate_run(run_dir)
    return summary


def _start_run(job: JobConfig, run_dir: str, *, resume: bool, overwrite: bool,
               address: str | None) -> tuple[ResourcePlan, Placement, int]:
    """Everything before Ray Train starts; returns the plan, the placement and the train rows.

    The checks that need no Ray come first, then Ray, the plan against the cluster, and the
    run directory's ``config.yaml`` and ``plan.json``.
    """
    import ray

    from clar_ray import preflight
    from clar_ray.augment import place

    manifest = preflight.check_data(job)
    clear = rundir.check_run_dir(run_dir, job, resume=resume, overwrite=overwrite)
    if not ray.is_initialized() and not (address or os.environ.get("RAY_ADDRESS")):
        preflight.check_local_fit(job, manifest)
    rows = manifest.split(job.data.train_split).rows
    steps_per_epoch(rows, job.train.batch_size, job.train.workers)  # fails early if too small
    ensure_ray(job, address)
    plan = cluster_plan(job)
    if clear:
        rundir.clear_run(run_dir)
    rundir.mark_run(run_dir)
    dump_job(job, artifacts.run_file(run_dir, artifacts.CONFIG_FILE))
    placement = place(job.augment.sequence, job.augment.on_device, use_gpu=job.train.use_gpu)
    storage.write_json(artifacts.run_file(run_dir, artifacts.PLAN_FILE),
                       {"plan": plan.describe(), **plan.__dict__,
                        "augmentations": placement.describe()})
    return plan, placement, rows


def _trainer(job: JobConfig, run_dir: str, run_id: str, plan: ResourcePlan,
             placement: Placement, *, loop_config: Mapping[str, Any],
             callbacks: list[Any] | None) -> Any:
    """The TorchTrainer of a run, with Ray's checkpoints and restarts in ``run_dir``.

    :func:`train_func` runs on the plan's workers, fed by the stream of the placement's CPU part.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    from clar_ray.data.stream import build_train_stream, ingest_config

    storage_path, name = run_dir.rstrip("/").rsplit("/", 1)
    resources = {"CPU": plan.cpus_per_worker}
    if plan.gpus_per_worker:
        resources["GPU"] = plan.gpus_per_worker
    return TorchTrainer(
        train_func,  # type: ignore[arg-type]  # Ray types the loop as returning None
        train_loop_config={"job": job.to_dict(), "run_dir": run_dir, "run_id": run_id,
                           "placement": placement.describe(), **loop_config},
        scaling_config=ray.train.ScalingConfig(
            num_workers=plan.workers, use_gpu=job.train.use_gpu,
            resources_per_worker=resources,
            label_selector=dict(job.train.node_labels) or None),  # type: ignore[call-arg]
        dataset_config=ingest_config(job),
        # An epoch keeps a whole number of global batches: the trainer's epochs are the
        # stream's, and a resumed run sees the rows the uninterrupted run would have.
        datasets={"train": lambda: build_train_stream(
            job, plan, run_id=run_id, cpu_sequence=placement.actors,
            rows_per_epoch=epoch_rows(loop_config["rows"], job.train.batch_size, plan.workers))},
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=job.train.max_failures),
            callbacks=callbacks),
    )


def _epochs_done(run_dir: str) -> int:
    """Epochs recorded in a run's ``metrics.jsonl`` (0 for a new run)."""
    return len({record["epoch"] for record in read_metrics(run_dir)})
