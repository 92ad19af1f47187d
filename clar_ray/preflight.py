"""Checks that run before Ray starts a worker: the data, and whether a local plan can fit.

Each failure is one :class:`PreflightError` (a ``ValueError``) whose message names the cause and
the fix, raised within seconds instead of after Ray has started workers:

- :func:`check_data`: the manifest exists and each shard the run reads is a whole Parquet file
  (its footer reads) holding the rows the manifest lists;
- :func:`check_local_fit`: on a machine without a cluster, the training workers fit the
  physical cores, and workers (model + batch) plus augmentation actors fit the free memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

from clar_ray.config import JobConfig

__all__ = ["ACTIVATION_BYTES", "ACTOR_BYTES", "PROBE_BYTES", "WORKER_BASE_BYTES", "PreflightError",
           "check_data", "check_local_fit", "check_local_gpus", "physical_cores", "worker_bytes"]

#: Peak resident memory of a CPU training worker before its activations: Ray's worker, torch,
#: the model's frontend, the stream's iterator and the allocator's caches (measured 0.96-1.17
#: GiB; see :func:`worker_bytes`).
WORKER_BASE_BYTES = 1200 * 2**20
#: Peak resident memory of one augmentation actor (measured 296-300 MiB with fade + time mask
#: and with pitch shift + time stretch on 1 s clips).
ACTOR_BYTES = 400 * 2**20
#: Activation bytes of a training step (forward + backward) per input sample of a view, per unit
#: of ``model.width`` (measured 12-13 for tf3 + ResNet18-2D, 26 for raw + ResNet18-1D).
ACTIVATION_BYTES = 32
#: Bytes per input sample of a feature-extraction batch of the in-training probe (measured
#: 131-170 for tf3, width 4-16: mostly the frontend, whatever the width).
PROBE_BYTES = 256
#: Share of the free memory a local plan may use.
MEMORY_SHARE = 0.9


class PreflightError(ValueError):
    """A job that cannot run as given; the message says why and what to change."""


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_data(job: JobConfig, splits: Iterable[str] | None = None) -> Any:
    """Check the job's dataset before anything starts; return its manifest.

    Raises:
        PreflightError: ``data.path`` is empty, holds no manifest, lacks a split, or a shard is
            missing, truncated or holds other rows than the manifest says.
    """
    import pyarrow.parquet as pq

    from clar_ray import storage
    from clar_ray.data.manifest import Manifest, ManifestError

    path = job.data.path
    if not path:
        raise PreflightError("data.path is empty: pass --set data.path=DIR (a folder written by "
                             "clar-ray prepare)")
    try:
        manifest = Manifest.read(path)
    except ManifestError as err:
        raise PreflightError(f"data.path={path}: {err}") from None
    names = list(splits) if splits is not None else [job.data.train_split, job.data.eval_split]
    fix = f"prepare it again (clar-ray prepare ... --out {path} --overwrite)"
    for split in dict.fromkeys(names):
        if split not in manifest.splits:
            raise PreflightError(f"data.path={path} has no split {split!r} (it has "
                                 f"{', '.join(sorted(manifest.splits))}): set data.train_split / "
                                 f"data.eval_split")
        rows = 0
        for shard in manifest.shard_paths(path, split):
            fs, inner = storage.resolve_filesystem(shard)
            try:
                rows += pq.read_metadata(inner, filesystem=fs).num_rows
            except FileNotFoundError:
                raise PreflightError(f"shard {shard} is missing: the dataset is incomplete; "
                                     f"{fix}") from None
            except (OSError, ValueError) as err:  # ArrowInvalid is a ValueError
                raise PreflightError(f"shard {shard} is not a whole Parquet file ({err}): the "
                                     f"dataset is damaged; {fix}") from None
        if rows != manifest.split(split).rows:
            raise PreflightError(f"split {split!r} of {path} holds {rows} rows but its manifest "
                                 f"lists {manifest.split(split).rows}: {fix}")
    return manifest


def physical_cores() -> int:
    """Physical CPU cores of this machine (logical ones when that is unknown)."""
    import psutil

    return int(psutil.cpu_count(logical=False) or os.cpu_count() or 1)


def _parameters(job: JobConfig, manifest: Any) -> int:
    from clar_ray.methods import build_method
    from clar_ray.models import build_frontend

    frontend = build_frontend(job.model.frontend, sample_rate=manifest.sample_rate,
                              preset=job.model.frontend_preset)
    method = build_method(job.model, job.objective, in_channels=frontend.out_channels,
                          num_classes=len(manifest.labels))
    return sum(p.numel() for p in method.parameters())


def worker_bytes(job: JobConfig, manifest: Any, parameters: int | None = None) -> int:
    """Host memory one CPU training worker needs at its peak.

    ``WORKER_BASE_BYTES + 16 × parameters`` (weights, gradients and two optimiser buffers)
    ``+ max(train step, probe)``: a training step holds the activations of its local batch, both
    views (``local batch × 2 × clip samples × ACTIVATION_BYTES × model.width``); the probe, when
    it runs in training (``eval.every_epochs > 0``), those of one extraction batch
    (``eval.batch_size × clip samples × PROBE_BYTES``).

    Calibrated against the peak resident set (VmHWM) of the Ray Train worker of one-epoch
    ``clar-ray train`` runs of the quickstart job on 1 s clips at 16 kHz (2 cores, Ray 2.60,
    torch 2.11), estimate / measured in MiB:

    ========================================  ===========  ========
    job                                       estimate     measured
    ========================================  ===========  ========
    tf3, width 4, batch 16                    1264         1004
    tf3, width 4, batch 16, probe batch 256   2201         1475
    tf3, width 4, batch 16, probe batch 64    1451         1158
    tf3, width 16, batch 64                   2211         1588
    tf3, width 16, batch 64, probe batch 256  2211         1830
    tf3, width 16, batch 128                  3211         1995
    tf3, width 32, batch 64                   3243         1955
    raw + ResNet18-1D, width 16, batch 64     2204         1997
    tf3, width 16, 2 workers × batch 32       1711         1218
    ========================================  ===========  ========

    so it over-estimates by 10 % (raw audio) to 66 % (wide tf3), and a resident set counts the
    ~300 MiB of shared libraries every worker maps, which a sum over workers counts again.
    ``tests/test_safety.py`` measures a real worker against it (``--runslow``).
    """
    if parameters is None:
        parameters = _parameters(job, manifest)
    local_batch = max(1, job.train.batch_size // job.train.workers)
    step = local_batch * 2 * manifest.clip_samples * ACTIVATION_BYTES * job.model.width
    probe = (job.eval.batch_size * manifest.clip_samples * PROBE_BYTES
             if job.eval.every_epochs else 0)
    return WORKER_BASE_BYTES + 16 * parameters + max(step, probe)


def check_local_gpus(job: JobConfig, gpus: int | None = None) -> None:
    """Refuse a GPU job on a machine with fewer GPUs than workers (``gpus``: this machine's).

    Raises:
        PreflightError: suggesting ``train.use_gpu=false`` first (the paper jobs ask for GPUs).
    """
    train = job.train
    if not train.use_gpu:
        return
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count()
    if gpus < train.workers:
        raise PreflightError(
            f"train.workers={train.workers} with train.use_gpu=true needs {train.workers} "
            f"GPU(s); this machine has {gpus}: pass --set train.use_gpu=false to train on the "
            f"CPU, lower train.workers, or pass --address to use a cluster")


def check_local_fit(job: JobConfig, manifest: Any, *, cores: int | None = None,
                    free_bytes: int | None = None, parameters: int | None = None) -> None:
    """Refuse a local plan that this machine cannot hold, before Ray starts a worker.

    Args:
        job: The job.
        manifest: Its dataset's manifest (clip length, classes).
        cores: Physical cores (default: this machine's).
        free_bytes: Free memory (default: this machine's available memory).
        parameters: The model's parameter count (default: built once on the CPU).

    Raises:
        PreflightError: naming what is needed, what the machine has and what to lower.
    """
    train = job.train
    cores = cores or physical_cores()
    check_local_gpus(job)
    worker_cpus = train.workers * train.cpus_per_worker
    if worker_cpus > cores:
        most = max(1, math.floor(cores / train.cpus_per_worker))
        raise PreflightError(
            f"train.workers={train.workers} × train.cpus_per_worker={train.cpus_per_worker:g} "
            f"needs {worker_cpus:g} CPU cores; this machine has {cores} physical core(s): lower "
            f"train.workers to at most {most}, or pass --address to use a cluster")
    if free_bytes is None:
        import psutil

        free_bytes = int(psutil.virtual_memory().available)
    per_worker = 0 if train.use_gpu else worker_bytes(job, manifest, parameters)
    per_worker = per_worker or WORKER_BASE_BYTES
    actors = max(1, job.augment.actors)
    need = train.workers * per_worker + actors * ACTOR_BYTES
    if need > MEMORY_SHARE * free_bytes:
        raise PreflightError(
            f"train.workers={train.workers} (~{_gib(per_worker)} each: model + a batch of "
            f"{max(1, train.batch_size // train.workers)}) and {actors} augmentation actor(s) "
            f"need ~{_gib(need)} of memory; this machine has {_gib(free_bytes)} free: lower "
            f"train.workers, train.batch_size or augment.actors, or pass --address to use a "
            f"cluster")
