"""Where the CPUs and GPUs of a run go, and how clar-ray reaches Ray: for train, stream and tune.

One training run holds, at once::

    workers × (cpus_per_worker CPU [+ 1 GPU])     Ray Train workers
    actors  × cpus_per_actor CPU                  the stream's augmentation actors
    DRIVER_CPUS                                   the stream's driver side

A study (``clar-ray tune``) runs several such plans side by side; each trial also holds
:data:`TRIAL_CPUS` for its Tune function, and the study keeps :data:`DRIVER_CPUS` free once for
all of them. Planning (:func:`plan_resources`, :func:`plan_study`, :func:`steps_per_epoch`) is
pure; :func:`read_cluster` and :func:`cluster_plan` read a connected cluster;
:func:`init_ray` and :func:`ensure_ray` reach one (a running Ray, an address, or a new local
Ray).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from clar_ray.config import ConfigError, JobConfig

__all__ = ["DRIVER_CPUS", "RAY_NAMESPACE", "TRIAL_CPUS", "Cluster", "RayStartError",
           "ResourcePlan", "ResourcePlanError", "StudyPlan", "check_reachable", "cluster_plan",
           "ensure_ray", "init_ray", "local_cpus", "plan_resources", "plan_study", "read_cluster",
           "steps_per_epoch", "study_local_cpus", "with_actors"]

#: Logical CPUs kept free for the driver side of the training streams: Ray Data's executor,
#: the split coordinators and Ray Data's stats and autoscaling actors. The streams start no
#: tasks (their actors read the shards), but these run on CPUs beside the planned actors. A
#: run keeps them beside its workers and actors; a study keeps them once for all its trials.
DRIVER_CPUS = 1.0
#: Logical CPUs a study's trial function itself holds (Tune refuses 0); its training gets the
#: rest.
TRIAL_CPUS = 0.01
#: The Ray namespace of clar-ray's drivers (its named actors, e.g. the stream's epoch clock).
RAY_NAMESPACE = "clar-ray"


class ResourcePlanError(RuntimeError):
    """A training plan that cannot fit the cluster it was given."""


class RayStartError(RuntimeError):
    """Ray could not be started or reached."""


# ------------------------------------------------------------------------ one run


@dataclasses.dataclass(frozen=True)
class ResourcePlan:
    """Where the CPUs and GPUs of a training run go.

    Attributes:
        workers: Ray Train workers.
        cpus_per_worker: Logical CPUs per training worker.
        gpus_per_worker: GPUs per training worker (0 or 1).
        actors: Augmentation actors of the stream.
        cpus_per_actor: Logical CPUs per augmentation actor.
        read_cpus: Logical CPUs left free for the stream's driver side (:data:`DRIVER_CPUS`;
            the name is the key of ``plan.json``).
    """

    workers: int
    cpus_per_worker: float
    gpus_per_worker: int
    actors: int
    cpus_per_actor: float
    read_cpus: float = DRIVER_CPUS

    @property
    def held_cpus(self) -> float:
        """Logical CPUs the workers and actors reserve (the driver side not counted)."""
        return self.workers * self.cpus_per_worker + self.actors * self.cpus_per_actor

    @property
    def cpus(self) -> float:
        """Logical CPUs the whole plan needs at once."""
        return self.held_cpus + self.read_cpus

    def describe(self) -> str:
        """One line for logs."""
        gpu = f" + {self.gpus_per_worker} GPU" if self.gpus_per_worker else ""
        return (f"{self.workers} train worker(s) × ({self.cpus_per_worker:g} CPU{gpu}), "
                f"{self.actors} augmentation actor(s) × {self.cpus_per_actor:g} CPU, "
                f"stream driver {self.read_cpus:g} CPU — {self.cpus:g} CPUs in all")


def plan_resources(
    config: JobConfig,
    *,
    cluster_cpus: float,
    cluster_gpus: float,
    node_resources: Sequence[Mapping[str, float]] | None = None,
) -> ResourcePlan:
    """Fit the job's training workers and augmentation actors into a cluster.

    Args:
        config: The job.
        cluster_cpus: Logical CPUs in the cluster (``ray.cluster_resources()["CPU"]``).
        cluster_gpus: GPUs in the cluster.
        node_resources: Resources of each alive node, to check that every training worker
            fits on one node; None skips that check.

    Returns:
        The plan. With ``augment.actors == 0`` every CPU left after the training workers and
        the driver side goes to augmentation actors (at least one).

    Raises:
        ResourcePlanError: When the workers, their GPUs or one augmentation actor do not fit;
            the message says what is missing.
    """
    train, augment = config.train, config.augment
    gpus_per_worker = 1 if train.use_gpu else 0
    if train.use_gpu and cluster_gpus < train.workers:
        raise ResourcePlanError(
            f"train.workers={train.workers} with train.use_gpu needs {train.workers} GPU(s); "
            f"the cluster has {cluster_gpus:g}. Lower train.workers or add GPU nodes.")
    train_cpus = train.workers * train.cpus_per_worker
    left = cluster_cpus - train_cpus - DRIVER_CPUS
    if augment.actors:
        actors = augment.actors
    else:
        actors = max(1, math.floor(left / augment.cpus_per_actor + 1e-9))
    plan = ResourcePlan(train.workers, train.cpus_per_worker, gpus_per_worker, actors,
                        augment.cpus_per_actor)
    if plan.cpus > cluster_cpus + 1e-9:
        raise ResourcePlanError(
            f"the plan needs {plan.cpus:g} CPUs ({plan.describe()}) but the cluster has "
            f"{cluster_cpus:g}: lower train.workers, train.cpus_per_worker, augment.actors "
            f"or augment.cpus_per_actor, or add CPUs")
    if node_resources is not None:
        _check_workers_fit_nodes(plan, node_resources)
    return plan


def _check_workers_fit_nodes(plan: ResourcePlan, nodes: Sequence[Mapping[str, float]]) -> None:
    free = [dict(node) for node in nodes]
    for index in range(plan.workers):
        for node in free:
            if (node.get("CPU", 0.0) + 1e-9 >= plan.cpus_per_worker
                    and node.get("GPU", 0.0) + 1e-9 >= plan.gpus_per_worker):
                node["CPU"] = node.get("CPU", 0.0) - plan.cpus_per_worker
                node["GPU"] = node.get("GPU", 0.0) - plan.gpus_per_worker
                break
        else:
            raise ResourcePlanError(
                f"training worker {index + 1} of {plan.workers} needs {plan.cpus_per_worker:g} "
                f"CPU and {plan.gpus_per_worker} GPU on one node, and no node has that left")


def steps_per_epoch(rows: int, batch_size: int, workers: int) -> int:
    """Optimiser steps per epoch: each worker gets rows // workers rows, drops the last batch."""
    local = batch_size // workers
    steps = (rows // workers) // local
    if steps < 1:
        raise ValueError(
            f"train.batch_size={batch_size} is larger than the {rows} training rows split over "
            f"{workers} worker(s): lower train.batch_size")
    return steps


def epoch_rows(rows: int, batch_size: int, workers: int) -> int:
    """Rows an epoch keeps: its steps' global batches (the stream leaves out the rest)."""
    return steps_per_epoch(rows, batch_size, workers) * (batch_size // workers) * workers


# ------------------------------------------------------------------------ a study


@dataclasses.dataclass(frozen=True)
class StudyPlan:
    """How a study's trials share the cluster.

    Attributes:
        concurrency: Trials at once.
        plans: Each trial's training plan (its augmentation actors fixed).
        cluster_cpus: Logical CPUs of the cluster planned for.
        cluster_gpus: GPUs of the cluster planned for.
    """

    concurrency: int
    plans: tuple[ResourcePlan, ...]
    cluster_cpus: float
    cluster_gpus: float

    def describe(self) -> str:
        """One line for logs."""
        worst = max(self.plans, key=lambda p: p.cpus)
        return (f"{self.concurrency} trial(s) at once on {self.cluster_cpus:g} CPUs / "
                f"{self.cluster_gpus:g} GPUs; largest trial: {worst.describe()} + "
                f"{TRIAL_CPUS:g} CPU for the trial itself")


def with_actors(job: JobConfig, actors: int) -> JobConfig:
    """The job with ``augment.actors`` set."""
    return dataclasses.replace(job, augment=dataclasses.replace(job.augment, actors=actors))


def plan_study(
    jobs: Sequence[JobConfig],
    *,
    cluster_cpus: float,
    cluster_gpus: float,
    node_resources: Sequence[Mapping[str, float]] | None = None,
    max_concurrent: int | None = None,
) -> StudyPlan:
    """Decide how many trials run at once and how many augmentation actors each gets.

    A running trial holds its training workers, its augmentation actors and
    :data:`TRIAL_CPUS`; :data:`DRIVER_CPUS` stay free once for the driver side of all the
    streams. As many trials run at once as fit the rest at their smallest (one actor, unless
    the job fixes ``augment.actors``) and the GPUs (and ``max_concurrent``, and the number of
    trials). A job that leaves ``augment.actors`` at 0 then gets the actors that fit in its
    share, ``(cluster_cpus - DRIVER_CPUS) / concurrency``, and at least one.

    Raises:
        ResourcePlanError: One trial alone does not fit the cluster (the message says what is
            missing).
    """
    if not jobs:
        raise ValueError("plan_study: no trials")
    usable = cluster_cpus - DRIVER_CPUS
    smallest = []
    for job in jobs:
        floor_job = with_actors(job, job.augment.actors or 1)
        try:
            # plan_resources keeps DRIVER_CPUS free again, which the study already did.
            plan = plan_resources(floor_job, cluster_cpus=usable - TRIAL_CPUS + DRIVER_CPUS,
                                  cluster_gpus=cluster_gpus, node_resources=node_resources)
        except ResourcePlanError as err:
            raise ResourcePlanError(
                f"a trial does not fit the cluster, so the study cannot start: {err} "
                f"(a study also keeps {DRIVER_CPUS:g} CPU free for the streams' driver "
                f"side and {TRIAL_CPUS:g} CPU per trial)") from None
        smallest.append(plan)
    need_cpus = max(_trial_cpus(p) for p in smallest)
    need_gpus = max(p.workers * p.gpus_per_worker for p in smallest)
    fit = math.floor(usable / need_cpus + 1e-9)
    if need_gpus:
        fit = min(fit, math.floor(cluster_gpus / need_gpus + 1e-9))
    concurrency = max(1, min(fit, len(jobs), max_concurrent or len(jobs)))
    share = usable / concurrency
    plans = []
    for job, floor_plan in zip(jobs, smallest):
        if job.augment.actors:
            plans.append(floor_plan)
            continue
        spare = share - _trial_cpus(floor_plan) + floor_plan.cpus_per_actor
        actors = max(1, math.floor(spare / floor_plan.cpus_per_actor + 1e-9))
        plans.append(dataclasses.replace(floor_plan, actors=actors))
    return StudyPlan(concurrency, tuple(plans), cluster_cpus, cluster_gpus)


def _trial_cpus(plan: ResourcePlan) -> float:
    """CPUs a running trial holds: training workers, augmentation actors, the trial itself."""
    return plan.held_cpus + TRIAL_CPUS


# ------------------------------------------------------------------------ the cluster


@dataclasses.dataclass(frozen=True)
class Cluster:
    """What a connected Ray cluster offers.

    Attributes:
        cpus: Logical CPUs of all nodes.
        gpus: GPUs of all nodes.
        nodes: Resources of each alive node.
    """

    cpus: float
    gpus: float
    nodes: tuple[Mapping[str, float], ...]


def read_cluster() -> Cluster:
    """The resources of the connected Ray cluster."""
    import ray

    total = ray.cluster_resources()
    nodes = tuple(node["Resources"] for node in ray.nodes() if node.get("Alive"))
    return Cluster(total.get("CPU", 0.0), total.get("GPU", 0.0), nodes)


def cluster_plan(config: JobConfig, *, poll_s: float = 5.0) -> ResourcePlan:
    """:func:`plan_resources` against the connected Ray cluster.

    With ``train.wait_for_resources_s > 0`` a plan that does not fit yet asks the autoscaler
    for its bundles and is checked again until it fits or the time is up; otherwise (the
    default) it fails at once.
    """
    deadline = time.monotonic() + config.train.wait_for_resources_s
    requested = False
    while True:
        cluster = read_cluster()
        try:
            return plan_resources(config, cluster_cpus=cluster.cpus, cluster_gpus=cluster.gpus,
                                  node_resources=cluster.nodes)
        except ResourcePlanError as err:
            if time.monotonic() >= deadline:
                if requested:
                    raise ResourcePlanError(
                        f"{err} (after waiting train.wait_for_resources_s="
                        f"{config.train.wait_for_resources_s:g} s for the autoscaler)") from None
                raise
        if not requested:
            _request_bundles(config)
            requested = True
        time.sleep(poll_s)


def _request_bundles(config: JobConfig) -> None:
    """Ask the autoscaler for the training workers and augmentation actors of a job."""
    from ray.autoscaler.sdk import request_resources

    train, augment = config.train, config.augment
    worker = {"CPU": train.cpus_per_worker, **({"GPU": 1} if train.use_gpu else {})}
    bundles = [worker] * train.workers + [{"CPU": augment.cpus_per_actor}] * max(1, augment.actors)
    selectors = ([dict(train.node_labels)] * train.workers
                 + [dict(augment.node_labels)] * max(1, augment.actors))
    if any(selectors):
        request_resources(bundles=bundles, bundle_label_selectors=selectors)
    else:
        request_resources(bundles=bundles)


# ------------------------------------------------------------------------ reaching Ray


def local_cpus(job: JobConfig) -> int:
    """Logical CPUs to declare for a local Ray: the machine's cores plus the train workers'.

    Ray Train reserves its workers' CPUs before Ray Data gets any; declaring them on top of
    the cores keeps the augmentation actors and reads schedulable on small machines. Whether
    the workers fit the machine at all is :func:`clar_ray.preflight.check_local_fit`'s call.
    """
    return (os.cpu_count() or 1) + math.ceil(job.train.workers * job.train.cpus_per_worker)


def study_local_cpus(jobs: Sequence[JobConfig], max_concurrent: int | None) -> int:
    """Logical CPUs of a local Ray for a study: ``k × local_cpus(job) + DRIVER_CPUS``.

    ``k = max_concurrent or 1``, so each of ``k`` concurrent trials gets what one
    ``clar-ray train`` would.
    """
    per_trial = max(local_cpus(job) for job in jobs)
    return (max_concurrent or 1) * per_trial + math.ceil(DRIVER_CPUS)


_ADDRESS_HINT = ("check --address / RAY_ADDRESS (ray://HOST:10001 or a head's HOST:6379; "
                 "http://...:8265 is for `ray job submit` only)")
#: Seconds :func:`check_reachable` waits for a Ray address to accept a connection.
REACH_TIMEOUT_S = 5.0


def check_reachable(address: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Refuse a Ray address on which nothing accepts a TCP connection, within seconds.

    ``ray.init`` retries such an address for minutes, printing Ray's own warnings. Only
    ``HOST:PORT`` and ``ray://HOST:PORT`` are checked (``auto`` and other forms are left to
    Ray); a local host also counts as reached on this machine's node IP, which Ray puts in
    its place.

    Raises:
        RayStartError: Nothing answered at the address (one line, with the fix).
    """
    import socket

    host, sep, port_text = address.removeprefix("ray://").rstrip("/").rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        return
    hosts = [host.strip("[]")]
    if hosts[0] in ("localhost", "127.0.0.1", "::1"):
        import ray.util

        with contextlib.suppress(Exception):
            hosts.append(ray.util.get_node_ip_address())
    errors = []
    for name in hosts:
        try:
            with socket.create_connection((name, int(port_text)), timeout=timeout_s):
                return
        except OSError as err:
            errors.append(f"{name}:{port_text}: {err.strerror or type(err).__name__}")
    raise RayStartError(f"could not reach the Ray cluster at {address} (nothing answered within "
                        f"{timeout_s:g} s: {'; '.join(errors)}): is the cluster up (`ray "
                        f"status`)? Otherwise {_ADDRESS_HINT}")


def init_ray(address: str | None = None, *, num_cpus: int | None = None,
             env_vars: Mapping[str, str] | None = None) -> bool:
    """Connect to ``address`` (or RAY_ADDRESS), or start a local Ray, unless Ray is running.

    A local Ray is always a new one (``address="local"``), never another user's. Ray's logs
    follow :func:`clar_ray.console.quiet_ray`.

    Args:
        address: A Ray cluster address; None reads RAY_ADDRESS, and without one a local Ray
            starts.
        num_cpus: Logical CPUs of a local Ray (default: Ray's count of this machine's).
        env_vars: Environment variables of the session's workers (its runtime environment).

    Returns:
        True when this call started or connected the session (the caller may shut it down),
        False when Ray was already running.

    Raises:
        ConfigError: ``address`` is the job API (``http://...:8265``).
        RayStartError: Ray did not start, or the address could not be reached (one line).
    """
    import ray

    from clar_ray import console

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address.startswith(("http://", "https://")):
        raise ConfigError(
            f"Ray address {address} is the job API (port 8265), which runs submitted jobs: run "
            f"the command as `ray job submit --working-dir . -- clar-ray ...`, or unset "
            f"RAY_ADDRESS to run it on this machine")
    runtime: dict[str, Any] = {"runtime_env": {"env_vars": dict(env_vars)}} if env_vars else {}
    if address:
        check_reachable(address)  # Ray itself retries an address nobody answers for minutes
    try:
        if address:
            ray.init(address=address, namespace=RAY_NAMESPACE, **runtime,
                     **console.ray_init_kwargs())
        else:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     namespace=RAY_NAMESPACE, **runtime, **console.ray_init_kwargs())
    except Exception as err:  # ConnectionError, TimeoutError, RuntimeError, ValueError...
        with contextlib.suppress(Exception):
            ray.shutdown()  # the processes of a half-started local Ray would block a re-run
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        hint = (_ADDRESS_HINT if address
                else "this machine may be overloaded or short of memory or /tmp space: check "
                     "`ray status` and free memory, stop a stale Ray with `ray stop`, and "
                     "try again")
        first = (str(err).strip().splitlines() or [""])[0]
        raise RayStartError(f"could not start or reach {where} ({type(err).__name__}: "
                            f"{first}): {hint}") from err
    if address:  # Ray's own "Connecting to existing Ray cluster" line is off with its INFO logs
        print(f"Ray: connected to the cluster at {ray.get_runtime_context().gcs_address}",
              flush=True)
    console.quiet_data_context()
    return True


def ensure_ray(job: JobConfig, address: str | None = None, *,
               num_cpus: int | None = None) -> None:
    """Connect to ``address`` (or RAY_ADDRESS), or start a local Ray sized for the job.

    ``num_cpus`` overrides the local size (:func:`local_cpus` of the job).

    Raises:
        PreflightError: A local start for a GPU job on a machine without enough GPUs.
        RayStartError: Ray did not start, or the address could not be reached (one line).
    """
    import ray

    from clar_ray import preflight

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    if not (address or os.environ.get("RAY_ADDRESS")):
        preflight.check_local_gpus(job)  # before a local Ray starts (tune, quickstart too)
    init_ray(address, num_cpus=num_cpus or local_cpus(job))
