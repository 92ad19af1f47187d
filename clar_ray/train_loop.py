"""What each Ray Train worker runs: ``train_func(config)``, for one CPU or many GPUs.

:func:`clar_ray.train.run_training` starts it on every worker. It reads as the run it does (the
shape of Ray's PBT example)::

    worker = _restore(config)                  model, optimiser, the run's last checkpoint
    worker.augment = _device_augmenter(...)    the device part of the augmentations
    for epoch in the epochs left:
        _train_epoch → _epoch_record → _probe → _report   steps, means, probe, checkpoint
    _finish(worker, status)                    the encoder of a finished run

Per step on each worker (:func:`_train_step`):

    shard batch {view_a, view_b: (b, T), label, sample_id, epoch: (b,)}   b = batch_size / workers
      → [batch augmentations on the device]   (augment.on_device)
      → frontend, float32, outside DDP         (b, C, T) or (b, C, F, T)
      → method under autocast (bf16 on GPU)    encoder → heads → loss over the global batch
      → LARS step with the warmup + cosine learning rate of this step

The shard is one stream of every epoch of the run (one Ray Data execution, so the augmentation
actors start once); an epoch is ``steps_per_epoch`` steps of it, the same count on every rank.

Rank 0 writes TensorBoard events and ``metrics.jsonl`` (:class:`clar_ray.runlog.RunLog`) and
saves checkpoints; every rank reports, because ``ray.train.report`` is a barrier. A non-finite
loss stops the run on every rank at the same step; the last good checkpoint stays where it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from clar_ray import artifacts, dist, storage
from clar_ray import checkpoint as checkpoints
from clar_ray.augment.placement import Placement
from clar_ray.config import JobConfig
from clar_ray.data.manifest import Manifest
from clar_ray.methods import build_method, unwrap
from clar_ray.optim import LarsAdam, lars, schedule
from clar_ray.resources import steps_per_epoch
from clar_ray.runlog import RunLog

#: Key of ``train_loop_config`` that makes rank 0 kill its own process once, after the
#: checkpoint of the given epoch (fault-tolerance tests).
CRASH_AFTER_EPOCH = "_crash_after_epoch"
#: Key of ``train_loop_config`` naming a file where rank 0 records every optimiser step
#: (:class:`clar_ray.checkpoint.StepTrace`, fault-tolerance tests).
TRACE_STEPS = "_trace_steps"


class _NonFiniteLossError(Exception):
    """Raised on every rank at the step whose loss is not finite (its message says where)."""


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


@dataclasses.dataclass
class _Worker:
    """What one Ray Train worker holds through the run (built by :func:`_restore`).

    Attributes:
        job: The job.
        run_dir: The run directory (local path or URI).
        rank: This worker's rank; world: the number of workers.
        device: This worker's device.
        manifest: The prepared dataset's manifest.
        frontend: The frontend (no parameters to train; outside DDP).
        model: The method, wrapped by Ray Train (DDP when distributed).
        optimizer: Its optimiser.
        steps: Optimiser steps per epoch (the same on every rank).
        base_lr: The learning rate after batch scaling, before warmup and cosine.
        start_epoch: The epoch this attempt starts at (after a restored checkpoint).
        step: Optimiser steps taken in the run so far.
        trace: Rank 0's step trace (:data:`TRACE_STEPS`), else None.
        log: Rank 0's TensorBoard and metrics.jsonl, else None.
        augment: The device part of the augmentations, or None.
        probe: Rank 0's linear probe, built at the first probing epoch.
    """

    job: JobConfig
    run_dir: str
    rank: int
    world: int
    device: torch.device
    manifest: Manifest
    frontend: torch.nn.Module
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    steps: int
    base_lr: float
    start_epoch: int
    step: int
    trace: checkpoints.StepTrace | None = None
    log: RunLog | None = None
    augment: Any = None
    probe: Any = None

    @property
    def local_batch(self) -> int:
        """Rows per step on this worker."""
        return self.job.train.batch_size // self.world

    def lr_at(self, step: int) -> float:
        """The learning rate of optimiser step ``step``: linear warmup, then cosine to 0."""
        return schedule.lr_at(step, base_lr=self.base_lr,
                              warmup_steps=round(self.job.optim.warmup_epochs * self.steps),
                              total_steps=self.steps * self.job.train.epochs)


def train_func(config: dict[str, Any]) -> dict[str, Any]:
    """Train one job on this Ray Train worker.

    Args:
        config: ``{"job": JobConfig.to_dict(), "run_dir": str, "run_id": str,
            "placement": Placement.describe(), "rows": int}`` (built by
            :func:`clar_ray.train.run_training`), and the test hooks :data:`TRACE_STEPS` and
            :data:`CRASH_AFTER_EPOCH`.

    Returns:
        On rank 0: ``{"status": "finished" | "non_finite", "message": str, "epochs": int}``.
    """
    worker = _restore(config)
    worker.augment = _device_augmenter(worker, Placement.from_record(config["placement"]))
    stream = _open_stream(worker, config["run_id"])
    status: dict[str, Any] = {"status": "finished", "message": "", "epochs": worker.start_epoch}
    for epoch in range(worker.start_epoch, worker.job.train.epochs):
        try:
            sums, seconds = _train_epoch(worker, stream, epoch)
        except _NonFiniteLossError as stop:
            status = {"status": "non_finite", "epochs": epoch, "message": str(stop)}
            break
        record = _epoch_record(worker, epoch, sums, seconds)
        _probe(worker, record, epoch)
        status["epochs"] = epoch + 1
        _report(worker, record, epoch)
        if worker.rank == 0 and config.get(CRASH_AFTER_EPOCH) == epoch:
            _crash_once(worker.run_dir)
    return _finish(worker, status)


def _restore(config: Mapping[str, Any]) -> _Worker:
    """Build this worker's frontend, method and optimiser; load the run's last checkpoint."""
    import ray.train
    import ray.train.torch

    from clar_ray.models import build_frontend

    job = JobConfig.from_dict(config["job"])
    run_dir = config["run_dir"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(job.train.seed)
    manifest = Manifest.read(job.data.path)
    frontend = build_frontend(job.model.frontend, sample_rate=manifest.sample_rate,
                              preset=job.model.frontend_preset).to(device)
    method = build_method(job.model, job.objective, in_channels=frontend.out_channels,
                          num_classes=len(manifest.labels))
    if world > 1 and device.type == "cuda" and job.train.sync_batchnorm:
        method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
    base_lr = schedule.scaled_lr(job.optim.lr, job.train.batch_size, job.optim.reference_batch)
    optimizer = _make_optimizer(job, method, base_lr)
    start_epoch, step, restored_from = checkpoints.restore(run_dir, method, optimizer)
    trace = (checkpoints.StepTrace(config[TRACE_STEPS], start_epoch=start_epoch, step=step,
                                   source=restored_from)
             if rank == 0 and config.get(TRACE_STEPS) else None)
    model = ray.train.torch.prepare_model(method)
    return _Worker(job=job, run_dir=run_dir, rank=rank, world=world, device=device,
                   manifest=manifest, frontend=frontend, model=model, optimizer=optimizer,
                   steps=steps_per_epoch(config["rows"], job.train.batch_size, world),
                   base_lr=base_lr, start_epoch=start_epoch, step=step, trace=trace,
                   log=RunLog(run_dir, start_epoch) if rank == 0 else None)


def _device_augmenter(worker: _Worker, placement: Placement) -> Any:
    """The batch augmenter of the placement's device part (None: the actors run it all)."""
    if not placement.device:
        return None
    from clar_ray.augment.batch import BatchAugmenter

    job = worker.job
    return BatchAugmenter(placement.device, sample_rate=worker.manifest.sample_rate,
                          preset=job.augment.preset, params=job.augment.params,
                          seed=job.train.seed, first_step=placement.device_first_step)


def _open_stream(worker: _Worker, run_id: str) -> Iterator[dict[str, Tensor]]:
    """This worker's batches of the whole run, once the stream's epoch clock is set."""
    import ray
    import ray.train

    if worker.rank == 0:  # the stream starts counting its epochs here (see clar_ray.data.stream)
        from clar_ray.data.stream import clock_name

        ray.get(ray.get_actor(clock_name(run_id)).set.remote(worker.start_epoch))
    if dist.is_distributed():
        torch.distributed.barrier()  # no rank asks for a batch before the clock is set
    return _batches(ray.train.get_dataset_shard("train"), worker)


def _batches(shard: Any, worker: _Worker) -> Iterator[dict[str, Tensor]]:
    """The worker's batches of the whole run (every epoch, one stream execution)."""
    job = worker.job
    buffer = job.data.shuffle_buffer
    seed = job.train.seed * 1_000_003 + worker.start_epoch * 101 + worker.rank
    yield from shard.iter_torch_batches(
        batch_size=worker.local_batch, drop_last=True, device=worker.device,
        local_shuffle_buffer_size=buffer or None, local_shuffle_seed=seed if buffer else None)


def _train_epoch(worker: _Worker, stream: Iterator[dict[str, Tensor]],
                 epoch: int) -> tuple[dict[str, float], float]:
    """Run one epoch's steps: the sums of the loss and its metrics, and the seconds it took.

    Raises:
        _NonFiniteLossError: A step's loss was not finite (on every rank at the same step).
        RuntimeError: The stream ended before the epoch's steps.
    """
    worker.model.train()
    sums: dict[str, float] = {}
    seen, started = 0, time.perf_counter()
    for batch in itertools.islice(stream, worker.steps):
        loss, metrics = _train_step(worker, batch, epoch)
        seen += len(batch["sample_id"])
        for name, value in {"loss": loss, **metrics}.items():
            sums[name] = sums.get(name, 0.0) + float(value)
    if seen != worker.steps * worker.local_batch:
        raise RuntimeError(f"the stream ended after {seen // worker.local_batch} of "
                           f"{worker.steps} steps of epoch {epoch} on rank {worker.rank}")
    return sums, time.perf_counter() - started


def _train_step(worker: _Worker, batch: dict[str, Tensor],
                epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
    """One optimiser step on one batch: the loss (detached) and the method's metrics."""
    lr = worker.lr_at(worker.step)
    for group in worker.optimizer.param_groups:
        group["lr"] = lr
    before = _fingerprints(worker.model, worker.optimizer) if worker.trace is not None else None
    ids, labels = batch["sample_id"], batch["label"]
    views = [batch["view_a"], batch["view_b"]]
    if worker.augment is not None:
        views = _device_views(worker.augment, views, ids, batch["epoch"])
    with torch.no_grad():
        x_a, x_b = worker.frontend(views[0]), worker.frontend(views[1])
    with _autocast(worker.job, worker.device):
        loss, metrics = worker.model(x_a, x_b, ids, labels)
    if not dist.all_finite(loss.detach()):
        raise _NonFiniteLossError(
            f"non-finite loss ({loss.item()}) at epoch {epoch}, step {worker.step}: training "
            f"stopped; the last good checkpoint is kept in {worker.run_dir}. Lower optim.lr or "
            f"check the input for NaNs.")
    worker.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    worker.optimizer.step()
    unwrap(worker.model).after_step()
    if worker.trace is not None and before is not None:
        worker.trace.step(epoch=epoch, step=worker.step, lr=lr, before=before,
                          after=_fingerprints(worker.model, worker.optimizer),
                          rows=(ids.tolist(), batch["epoch"].tolist()))
    worker.step += 1
    if worker.log is not None and worker.step % worker.job.train.log_every_steps == 0:
        worker.log.step({"loss": float(loss.detach()), "lr": lr}, worker.step)
    return loss.detach(), metrics


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


def _epoch_record(worker: _Worker, epoch: int, sums: Mapping[str, float],
                  seconds: float) -> dict[str, Any]:
    """An epoch's record: loss and metrics (means over its steps and the ranks), lr, speed.

    ``lr`` is the mean rate of the epoch's steps, ``views_per_s`` counts both views on every rank.
    """
    steps = worker.steps
    record: dict[str, Any] = {"epoch": epoch, "step": worker.step}
    names = sorted(sums)
    means = dist.all_reduce_mean(torch.tensor([sums[n] / steps for n in names],
                                              dtype=torch.float64, device=worker.device))
    record.update({name: float(value) for name, value in zip(names, means.tolist())})
    # The mean learning rate of this epoch's steps (the rate after its last step is 0 at the
    # end of the cosine, which says nothing about the epoch).
    record["lr"] = sum(worker.lr_at(s) for s in range(worker.step - steps, worker.step)) / steps
    record["views_per_s"] = 2 * steps * worker.local_batch * worker.world / max(seconds, 1e-9)
    record["epoch_seconds"] = seconds
    return record


def _probe(worker: _Worker, record: dict[str, Any], epoch: int) -> None:
    """On rank 0, add the probe's scores every ``eval.every_epochs`` and at the last epoch.

    The last epoch's probe is the run's final one (:func:`clar_ray.evaluate.result_from_training`).
    """
    every, last = worker.job.eval.every_epochs, epoch + 1 == worker.job.train.epochs
    if worker.rank != 0 or not every or not ((epoch + 1) % every == 0 or last):
        return
    from clar_ray.evaluate import Probe

    worker.probe = worker.probe or Probe(worker.job, device=worker.device)
    record.update(worker.probe.run(worker.frontend, unwrap(worker.model).encoder))
    record["probe_seconds"] = worker.probe.last_seconds


def _report(worker: _Worker, record: dict[str, Any], epoch: int) -> None:
    """Checkpoint and log on rank 0, then report the record on every rank (a barrier).

    The checkpoint is saved every ``train.checkpoint_every`` epochs and at the last.
    """
    import ray.train

    last = epoch + 1 == worker.job.train.epochs
    with tempfile.TemporaryDirectory(prefix="clar-ray-ckpt-") as folder:
        checkpoint = None
        if worker.rank == 0 and ((epoch + 1) % worker.job.train.checkpoint_every == 0 or last):
            checkpoints.save(folder, {"method": unwrap(worker.model).state_dict(),
                                      "optimizer": worker.optimizer.state_dict(),
                                      "epoch": epoch + 1, "step": worker.step})
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        if worker.log is not None:
            worker.log.epoch(record)
        ray.train.report(record, checkpoint=checkpoint)


def _finish(worker: _Worker, status: dict[str, Any]) -> dict[str, Any]:
    """Close rank 0's log and, when the run finished, save its encoder; return ``status``."""
    if worker.log is not None:
        worker.log.close()
    if worker.rank == 0 and status["status"] == "finished":
        artifacts.save_encoder(worker.run_dir, unwrap(worker.model).encoder, worker.job,
                               sample_rate=worker.manifest.sample_rate,
                               clip_samples=worker.manifest.clip_samples,
                               epoch=status["epochs"])
    return status


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
