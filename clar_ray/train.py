"""Training on Ray Train: one ``train_func(config)`` for one CPU or many GPUs, and its launcher.

Per step on each worker:

    shard batch {view_a, view_b: (b, T), label, sample_id, epoch: (b,)}   b = batch_size / workers
      → [batch augmentations on the device]   (augment.on_device)
      → frontend, float32, outside DDP         (b, C, T) or (b, C, F, T)
      → method under autocast (bf16 on GPU)    encoder → heads → loss over the global batch
      → LARS step with the warmup + cosine learning rate of this step

The shard is one stream of every epoch of the run (one Ray Data execution, so the augmentation
actors start once); an epoch is ``steps_per_epoch`` steps of it, the same count on every rank.

Rank 0 writes TensorBoard events and ``metrics.jsonl`` and saves checkpoints; every rank
reports, because ``ray.train.report`` is a barrier. A non-finite loss stops the run on every
rank at the same step; the last good checkpoint stays where it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from clar_ray import artifacts, dist, rundir, storage
from clar_ray import checkpoint as checkpoints
from clar_ray.config import JobConfig, dump_job
from clar_ray.data.manifest import Manifest
from clar_ray.methods import build_method, unwrap
from clar_ray.optim import LarsAdam, lars, schedule
from clar_ray.resources import cluster_plan, ensure_ray, steps_per_epoch

#: Key of ``train_loop_config`` that makes rank 0 kill its own process once, after the
#: checkpoint of the given epoch (fault-tolerance tests).
CRASH_AFTER_EPOCH = "_crash_after_epoch"
#: Key of ``train_loop_config`` naming a file where rank 0 records every optimiser step
#: (:class:`clar_ray.checkpoint.StepTrace`, fault-tolerance tests).
TRACE_STEPS = "_trace_steps"


class TrainingStoppedError(RuntimeError):
    """A run that stopped before its planned epochs (a non-finite loss)."""


def _autocast(job: JobConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    bf16 = job.train.precision == "bf16" or (job.train.precision == "auto"
                                             and device.type == "cuda")
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _make_optimizer(job: JobConfig, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    groups = lars.param_groups(model, job.optim.weight_decay)
    if job.optim.name == "lars":
        return lars.LARS(groups, lr=lr, momentum=job.optim.momentum,
                         trust_coefficient=job.optim.trust)
    if job.optim.name == "lars_adam":
        return LarsAdam(groups, lr=lr, trust_coefficient=job.optim.trust)
    if job.optim.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=job.optim.momentum)
    return torch.optim.AdamW(groups, lr=lr)


class _Logger:
    """Rank 0's TensorBoard writer and metrics.jsonl."""

    def __init__(self, run_dir: str, start_epoch: int) -> None:
        from tensorboardX import SummaryWriter

        self.run_dir = run_dir
        self.remote = storage.is_uri(run_dir)
        tb_dir = (tempfile.mkdtemp(prefix="clar-ray-tb-") if self.remote
                  else artifacts.run_file(run_dir, artifacts.TENSORBOARD_DIR))
        self.tb_dir = tb_dir
        self.writer = SummaryWriter(tb_dir)
        self.metrics_path = artifacts.run_file(run_dir, artifacts.METRICS_FILE)
        self._keep_epochs_before(start_epoch)

    def _keep_epochs_before(self, start_epoch: int) -> None:
        """Drop lines of epochs that a restart from a checkpoint will run again."""
        if not storage.exists(self.metrics_path):
            return
        lines = [line for line in storage.read_text(self.metrics_path).splitlines() if line]
        kept = [line for line in lines if json.loads(line)["epoch"] < start_epoch]
        storage.write_text(self.metrics_path, "".join(line + "\n" for line in kept))

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def epoch(self, record: Mapping[str, Any]) -> None:
        self.scalars("epoch", {k: v for k, v in record.items()
                               if isinstance(v, (int, float)) and k != "epoch"},
                     int(record["epoch"]))
        self.writer.flush()
        storage.append_text(self.metrics_path, json.dumps(record) + "\n")
        if self.remote:
            storage.upload_dir(self.tb_dir, artifacts.run_file(self.run_dir,
                                                               artifacts.TENSORBOARD_DIR))

    def close(self) -> None:
        self.writer.close()


def _batches(shard: Any, local_batch: int, job: JobConfig, start_epoch: int, rank: int,
             device: torch.device) -> Iterator[dict[str, Tensor]]:
    """The worker's batches of the whole run (every epoch, one stream execution)."""
    buffer = job.data.shuffle_buffer
    seed = job.train.seed * 1_000_003 + start_epoch * 101 + rank
    yield from shard.iter_torch_batches(
        batch_size=local_batch, drop_last=True, device=device,
        local_shuffle_buffer_size=buffer or None, local_shuffle_seed=seed if buffer else None)


def _device_views(augment: Any, views: list[Tensor], ids: Tensor,
                  epochs: Tensor) -> list[Tensor]:
    """The device part of the sequence, each row augmented for its own epoch."""
    present = torch.unique(epochs).tolist()
    if len(present) == 1:
        return [augment(v, ids, epoch=int(present[0]), view=i) for i, v in enumerate(views)]
    out = [torch.empty_like(v) for v in views]
    for epoch in present:
        rows = epochs == epoch
        for i, v in enumerate(views):
            out[i][rows] = augment(v[rows], ids[rows], epoch=int(epoch), view=i)
    return out


def train_func(config: dict[str, Any]) -> dict[str, Any]:
    """Train one job on this Ray Train worker.

    Args:
        config: ``{"job": JobConfig.to_dict(), "run_dir": str, "run_id": str,
            "device_sequence": [...], "rows": int}`` (built by :func:`run_training`).

    Returns:
        On rank 0: ``{"status": "finished" | "non_finite", "message": str, "epochs": int}``.
    """
    import ray.train
    import ray.train.torch

    job = JobConfig.from_dict(config["job"])
    run_dir, run_id = config["run_dir"], config["run_id"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(job.train.seed)

    manifest = Manifest.read(job.data.path)
    from clar_ray.models import build_frontend

    frontend = build_frontend(job.model.frontend, sample_rate=manifest.sample_rate,
                              preset=job.model.frontend_preset).to(device)
    method = build_method(job.model, job.objective, in_channels=frontend.out_channels,
                          num_classes=len(manifest.labels))
    if world > 1 and device.type == "cuda" and job.train.sync_batchnorm:
        method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
    steps = steps_per_epoch(config["rows"], job.train.batch_size, world)
    total_steps = steps * job.train.epochs
    warmup_steps = round(job.optim.warmup_epochs * steps)
    base_lr = schedule.scaled_lr(job.optim.lr, job.train.batch_size, job.optim.reference_batch)
    optimizer = _make_optimizer(job, method, base_lr)

    start_epoch, step, restored_from = checkpoints.restore(run_dir, method, optimizer)
    trace = (checkpoints.StepTrace(config[TRACE_STEPS], start_epoch=start_epoch, step=step,
                                   source=restored_from)
             if rank == 0 and config.get(TRACE_STEPS) else None)
    model = ray.train.torch.prepare_model(method)
    device_augment = None
    if config.get("device_sequence"):
        from clar_ray.augment.batch import BatchAugmenter

        device_augment = BatchAugmenter(
            config["device_sequence"], sample_rate=manifest.sample_rate,
            preset=job.augment.preset, params=job.augment.params, seed=job.train.seed,
            first_step=len(job.augment.sequence) - len(config["device_sequence"]))

    logger = _Logger(run_dir, start_epoch) if rank == 0 else None
    if rank == 0:  # the stream starts counting its epochs here (see clar_ray.data.stream)
        from clar_ray.data.stream import clock_name

        ray.get(ray.get_actor(clock_name(run_id)).set.remote(start_epoch))
    if dist.is_distributed():
        torch.distributed.barrier()  # no rank asks for a batch before the clock is set
    shard = ray.train.get_dataset_shard("train")
    local_batch = job.train.batch_size // world
    stream = _batches(shard, local_batch, job, start_epoch, rank, device)
    autocast = _autocast(job, device)
    probe = None
    status: dict[str, Any] = {"status": "finished", "message": "", "epochs": start_epoch}

    for epoch in range(start_epoch, job.train.epochs):
        model.train()
        sums: dict[str, float] = {}
        seen, started, finite = 0, time.perf_counter(), True
        for batch in itertools.islice(stream, steps):
            lr = schedule.lr_at(step, base_lr=base_lr, warmup_steps=warmup_steps,
                                total_steps=total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            before = _fingerprints(model, optimizer) if trace is not None else None
            ids, labels = batch["sample_id"], batch["label"]
            views = [batch["view_a"], batch["view_b"]]
            if device_augment is not None:
                views = _device_views(device_augment, views, ids, batch["epoch"])
            with torch.no_grad():
                x_a, x_b = frontend(views[0]), frontend(views[1])
            with autocast:
                loss, metrics = model(x_a, x_b, ids, labels)
            if not dist.all_finite(loss.detach()):
                finite = False
                status = {"status": "non_finite", "epochs": epoch, "message": (
                    f"non-finite loss ({loss.item()}) at epoch {epoch}, step {step}: training "
                    f"stopped; the last good checkpoint is kept in {run_dir}. Lower optim.lr or "
                    f"check the input for NaNs.")}
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            unwrap(model).after_step()
            if trace is not None and before is not None:
                trace.step(epoch=epoch, step=step, lr=lr, before=before,
                           after=_fingerprints(model, optimizer),
                           rows=(ids.tolist(), batch["epoch"].tolist()))
            step += 1
            seen += len(ids)
            for name, value in {"loss": loss.detach(), **metrics}.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            if logger is not None and step % job.train.log_every_steps == 0:
                logger.scalars("step", {"loss": float(loss.detach()), "lr": lr}, step)
        if not finite:
            break
        if seen != steps * local_batch:
            raise RuntimeError(f"the stream ended after {seen // local_batch} of {steps} "
                               f"steps of epoch {epoch} on rank {rank}")
        elapsed = time.perf_counter() - started
        record: dict[str, Any] = {"epoch": epoch, "step": step}
        names = sorted(sums)
        means = dist.all_reduce_mean(torch.tensor([sums[n] / steps for n in names],
                                                  dtype=torch.float64, device=device))
        record.update({name: float(value) for name, value in zip(names, means.tolist())})
        # The mean learning rate of this epoch's steps (the rate after its last step is 0
        # at the end of the cosine, which says nothing about the epoch).
        record["lr"] = sum(schedule.lr_at(s, base_lr=base_lr, warmup_steps=warmup_steps,
                                          total_steps=total_steps)
                           for s in range(step - steps, step)) / steps
        record["views_per_s"] = 2 * seen * world / max(elapsed, 1e-9)
        record["epoch_seconds"] = elapsed
        last = epoch + 1 == job.train.epochs
        if rank == 0 and job.eval.every_epochs and ((epoch + 1) % job.eval.every_epochs == 0
                                                    or last):
            from clar_ray.evaluate import Probe

            probe = probe or Probe(job, device=device)
            record.update(probe.run(frontend, unwrap(model).encoder))
            record["probe_seconds"] = probe.last_seconds
        status["epochs"] = epoch + 1
        _report(record, epoch, step, model, optimizer, job, rank, logger, last)
        if rank == 0 and config.get(CRASH_AFTER_EPOCH) == epoch:
            _crash_once(run_dir)

    if logger is not None:
        logger.close()
    if rank == 0 and status["status"] == "finished":
        artifacts.save_encoder(run_dir, unwrap(model).encoder, job,
                               sample_rate=manifest.sample_rate,
                               clip_samples=manifest.clip_samples, epoch=status["epochs"])
    return status


def _report(record: dict[str, Any], epoch: int, step: int, model: torch.nn.Module,
            optimizer: torch.optim.Optimizer, job: JobConfig, rank: int,
            logger: _Logger | None, last: bool) -> None:
    import ray.train

    with tempfile.TemporaryDirectory(prefix="clar-ray-ckpt-") as folder:
        checkpoint = None
        if rank == 0 and ((epoch + 1) % job.train.checkpoint_every == 0 or last):
            checkpoints.save(folder, {"method": unwrap(model).state_dict(),
                                      "optimizer": optimizer.state_dict(),
                                      "epoch": epoch + 1, "step": step})
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        if logger is not None:
            logger.epoch(record)
        ray.train.report(record, checkpoint=checkpoint)


def _fingerprints(model: torch.nn.Module,
                  optimizer: torch.optim.Optimizer) -> tuple[float, float]:
    return (checkpoints.fingerprint(unwrap(model).state_dict()),
            checkpoints.fingerprint(optimizer.state_dict()["state"]))


def _crash_once(run_dir: str) -> None:
    """Kill this worker process once per run (fault-tolerance tests)."""
    marker = artifacts.run_file(run_dir, "crashed-once")
    if storage.exists(marker):
        return
    storage.write_text(marker, "killed on purpose to test resuming\n")
    os.kill(os.getpid(), 9)


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
    import ray.train
    from ray.train.torch import TorchTrainer

    from clar_ray import console, preflight
    from clar_ray.augment import place
    from clar_ray.data.stream import build_train_stream, get_or_create_clock, ingest_config

    run_dir = storage.absolute(run_dir)
    # Everything that can be checked without Ray, before Ray starts a worker.
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
    cpu_sequence, device_sequence = placement.actors, placement.device
    run_id = run_id_for(run_dir)
    clock = get_or_create_clock(run_id)
    storage_path, name = run_dir.rstrip("/").rsplit("/", 1)
    resources = {"CPU": plan.cpus_per_worker}
    if plan.gpus_per_worker:
        resources["GPU"] = plan.gpus_per_worker
    trainer = TorchTrainer(
        train_func,  # type: ignore[arg-type]  # Ray types the loop as returning None
        train_loop_config={"job": job.to_dict(), "run_dir": run_dir, "run_id": run_id,
                           "device_sequence": list(device_sequence), "rows": rows,
                           **(extra_loop_config or {})},
        scaling_config=ray.train.ScalingConfig(
            num_workers=plan.workers, use_gpu=job.train.use_gpu,
            resources_per_worker=resources,
            label_selector=dict(job.train.node_labels) or None),  # type: ignore[call-arg]
        dataset_config=ingest_config(job),
        datasets={"train": lambda: build_train_stream(job, plan, run_id=run_id,
                                                      cpu_sequence=cpu_sequence)},
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=job.train.max_failures),
            callbacks=callbacks),
    )
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


def _epochs_done(run_dir: str) -> int:
    """Epochs recorded in a run's ``metrics.jsonl`` (0 for a new run)."""
    path = artifacts.run_file(run_dir, artifacts.METRICS_FILE)
    if not storage.exists(path):
        return 0
    return len({json.loads(line)["epoch"] for line in storage.read_text(path).splitlines()
                if line.strip()})
