"""Studies: grids of training runs on Ray Tune, one Ray Train run per trial.

A tune file (``jobs/study-*.yaml``) names a base job, overrides, and what varies::

    base: quickstart.yaml          # a job YAML beside this file, or an inline mapping
    set: [train.epochs=50]         # overrides applied to the base (then --set from the CLI)
    study:                         # a named study (STUDIES) ...
      name: augmentation-pairs
      augmentations: [fade, time_mask, time_shift]
    # grid: {objective.name: [simclr, clar], data.label_fraction: [1.0, 0.1]}  # ... or a grid
    num_samples: 1                 # repeats of every trial, with train.seed + 0, 1, ...
    max_concurrent_trials: null    # default: as many as fit the cluster
    scheduler: fifo                # or {name: asha, metric: linear_top1, ...} (see below)

Every trial's config is checked before anything starts; then the trials run as a Tune grid of
*function* trainables, each calling :func:`clar_ray.train.run_training` (Ray Train v2 cannot
be passed to ``Tuner`` directly). The experiment directory holds::

    EXPERIMENT/
      study.yaml          the tune file as resolved (base inline, every override)
      trials.json         trial names, varied leaves and their jobs
      runs/<trial>/       each trial's run directory (config.yaml, metrics.jsonl, result.json;
                          error.txt when it failed)
      events/<trial>.jsonl  start / resume / skip / finished / failed, with times
      tune_status.json    Tune's last word on every trial (written when the grid returns)
      tune_<trial>/, experiment_state-*.json, ...   Ray Tune's own state

Resources. A trial holds :data:`TRIAL_CPUS` CPU itself and starts a training whose plan
(:func:`clar_ray.data.stream.plan_resources`) holds its workers' CPUs and GPUs and its
augmentation actors; :data:`HEADROOM_CPUS` stay free for the streams' driver side (Ray Data's
executors and coordinators). As many trials run at once as fit the cluster (never more); a
trial whose job leaves ``augment.actors`` at 0 gets a fixed number of augmentation actors from
its share of the cluster, so concurrent trainings never wait on one another's CPUs.

Scheduler. The default is FIFO: every trial runs to the end. ``{name: asha}`` stops poor
trials early on their probe accuracy, but Ray 2.5x-2.60 do not tear down the Ray Train run of a
trial that Tune stops (ray-project/ray#54305): its placement group stays reserved and later
trials can time out waiting for CPUs. Use it only with room to spare, and re-check the cluster.

Resuming (``resume=True``) restores Tune's experiment state when there is one, and every trial
whose run directory already holds ``result.json`` is skipped, so no finished training runs
twice; an interrupted training continues from its last checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import os
import posixpath
import re
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from clar_ray import artifacts, storage
from clar_ray.config import (
    AUGMENTATION_NAMES,
    LABEL_FREE_OBJECTIVES,
    ConfigError,
    JobConfig,
    parse_overrides,
    set_leaf,
)
from clar_ray.data.stream import READ_CPUS, ResourcePlan, ResourcePlanError, plan_resources

#: Logical CPUs the trial function itself holds (Tune refuses 0); the training gets the rest.
TRIAL_CPUS = 0.01
#: Logical CPUs a study keeps free for the driver side of the trials' streams (Ray Data's
#: executors, split coordinators, stats actors), which run outside the planned actors.
HEADROOM_CPUS = 1.0
#: Top-level keys of a tune file.
TUNE_KEYS = ("base", "set", "grid", "study", "num_samples", "max_concurrent_trials", "scheduler")
#: Metrics an early-stopping scheduler may watch (reported on probe epochs).
SCHEDULER_METRICS = ("linear_top1", "knn_top1")
#: The encoder each input type needs.
INPUT_ENCODERS = {"raw": "resnet18_1d", "tf3": "resnet18_2d"}

RUNS_DIR = "runs"
EVENTS_DIR = "events"
TRIALS_FILE = "trials.json"
STUDY_FILE = "study.yaml"
TUNE_STATUS_FILE = "tune_status.json"
ERROR_FILE = "error.txt"

Params = dict[str, Any]


# ------------------------------------------------------------------------ named studies


def augmentation_pairs(augmentations: Sequence[str]) -> list[Params]:
    """Every ordered pair of augmentations; the diagonal is the single augmentation.

    Args:
        augmentations: Distinct augmentation names, in the order of the heatmap's axes.

    Returns:
        ``len(augmentations) ** 2`` parameter sets ``{"augment.sequence": [first, second]}``
        (``[first]`` when both are the same), row-major: the first augmentation varies slowest.
    """
    names = _distinct(augmentations, "augmentations")
    for name in names:
        if name not in AUGMENTATION_NAMES:
            raise ConfigError(f"study.augmentations: unknown augmentation {name!r}; allowed: "
                              f"{', '.join(AUGMENTATION_NAMES)}")
    return [{"augment.sequence": [a] if a == b else [a, b]} for a in names for b in names]


def label_fractions(methods: Sequence[str], fractions: Sequence[float],
                    label_free_once: bool = False) -> list[Params]:
    """Every method at every label fraction (method varies slowest).

    Args:
        methods: Objective names (``objective.name``).
        fractions: Label fractions in (0, 1] (``data.label_fraction``).
        label_free_once: Train the objectives that read no label (SimCLR, ACL, SLICER) at the
            first fraction only: their training is the same at every fraction (with ordered
            streams, to the bit), and the probe always reads every label.
    """
    if not isinstance(label_free_once, bool):
        raise ConfigError(f"study.label_free_once: expected true or false, got "
                          f"{label_free_once!r}")
    fractions = _distinct(fractions, "fractions")
    return [{"objective.name": m, "data.label_fraction": f}
            for m in _distinct(methods, "methods")
            for f in (fractions[:1] if label_free_once and m in LABEL_FREE_OBJECTIVES
                      else fractions)]


def input_types(inputs: Sequence[str], augmentations: Sequence[Sequence[str]] | None = None,
                datasets: Sequence[str] | None = None) -> list[Params]:
    """Input types (frontend and its encoder) × augmentation sets × datasets.

    Args:
        inputs: Frontends: ``raw`` (waveform, ResNet18-1D) or ``tf3`` (STFT magnitude, phase
            and log-mel, ResNet18-2D).
        augmentations: Augmentation sequences; None keeps the base job's.
        datasets: Prepared dataset paths (``data.path``); None keeps the base job's.
    """
    params = []
    for name in _distinct(inputs, "inputs"):
        if name not in INPUT_ENCODERS:
            raise ConfigError(f"study.inputs: unknown input {name!r}; allowed: "
                              f"{', '.join(INPUT_ENCODERS)}")
    for name, sequence, path in itertools.product(
            _distinct(inputs, "inputs"),
            [None] if augmentations is None else _distinct(augmentations, "augmentations"),
            [None] if datasets is None else _distinct(datasets, "datasets")):
        trial: Params = {"model.frontend": name, "model.encoder": INPUT_ENCODERS[name]}
        if sequence is not None:
            trial["augment.sequence"] = list(sequence)
        if path is not None:
            trial["data.path"] = path
        params.append(trial)
    return params


@dataclasses.dataclass(frozen=True)
class Study:
    """A named study: its parameters (with defaults) and how they expand into trials.

    Attributes:
        name: The name a tune file uses (``study: {name: ...}``).
        expand: ``(**params) -> [{leaf: value}, ...]``, one mapping per trial.
        defaults: Every parameter with its default (None: keep the base job's value).
        help: One line for error messages and docs.
    """

    name: str
    expand: Callable[..., list[Params]]
    defaults: Mapping[str, Any]
    help: str


STUDIES: dict[str, Study] = {
    "augmentation-pairs": Study(
        "augmentation-pairs", augmentation_pairs,
        {"augmentations": list(AUGMENTATION_NAMES)},
        "all ordered pairs of `augmentations` (diagonal: one augmentation): the paper's Fig. 4"),
    "label-fractions": Study(
        "label-fractions", label_fractions,
        {"methods": ["supervised", "simclr", "clar"], "fractions": [1.0, 0.2, 0.1, 0.01],
         "label_free_once": False},
        "`methods` × label `fractions`: the paper's semi-supervised table"),
    "input-types": Study(
        "input-types", input_types,
        {"inputs": ["raw", "tf3"], "augmentations": None, "datasets": None},
        "raw/ResNet18-1D vs tf3/ResNet18-2D × `augmentations` sets × `datasets` paths"),
}


def grid_params(grid: Mapping[str, Sequence[Any]]) -> list[Params]:
    """The cartesian product of a grid (``tune.grid_search`` semantics; last key fastest).

    Args:
        grid: Dotted config leaf → non-empty list of values.
    """
    if not isinstance(grid, Mapping) or not grid:
        raise ConfigError(f"grid: expected a non-empty mapping of leaf -> list, got {grid!r}")
    for leaf, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid.{leaf}: expected a non-empty list of values, got {values!r}")
    leaves = list(grid)
    return [dict(zip(leaves, combo)) for combo in itertools.product(*grid.values())]


def _distinct(values: Any, key: str) -> list[Any]:
    if not isinstance(values, (list, tuple)) or not values:
        raise ConfigError(f"study.{key}: expected a non-empty list, got {values!r}")
    seen: list[Any] = []
    for value in values:
        if value in seen:
            raise ConfigError(f"study.{key}: {value!r} is listed twice")
        seen.append(value)
    return seen


# ------------------------------------------------------------------------ the tune file


@dataclasses.dataclass(frozen=True)
class Scheduler:
    """How trials are scheduled: ``fifo`` (all run to the end) or ``asha`` (early stopping).

    Attributes:
        name: ``fifo`` or ``asha``.
        metric: What ASHA compares (reported on probe epochs: set ``eval.every_epochs``).
        grace_period: Reports (epochs) a trial runs before it may be stopped.
        reduction_factor: ASHA's halving rate.
    """

    name: str = "fifo"
    metric: str = "linear_top1"
    grace_period: int = 1
    reduction_factor: int = 2


@dataclasses.dataclass(frozen=True)
class TuneSpec:
    """A parsed tune file.

    Attributes:
        base: The base job as a plain dict (before overrides).
        overrides: ``section.key=value`` overrides: the file's ``set`` then the CLI's.
        grid: Dotted leaf → values, or None when a named study is used.
        study: The named study, or None with a grid.
        study_params: The study's parameters, defaults filled in.
        num_samples: Repeats of every trial (``train.seed`` + 0, 1, ...).
        max_concurrent_trials: An upper bound on trials at once (None: as many as fit).
        scheduler: FIFO or ASHA.
    """

    base: dict[str, Any]
    overrides: tuple[str, ...] = ()
    grid: dict[str, list[Any]] | None = None
    study: str | None = None
    study_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    num_samples: int = 1
    max_concurrent_trials: int | None = None
    scheduler: Scheduler = dataclasses.field(default_factory=Scheduler)

    def to_dict(self) -> dict[str, Any]:
        """The tune file as resolved (base inline), which :func:`parse_tune` reads back."""
        out: dict[str, Any] = {"base": self.base, "set": list(self.overrides)}
        if self.grid is not None:
            out["grid"] = self.grid
        else:
            out["study"] = {"name": self.study, **self.study_params}
        out["num_samples"] = self.num_samples
        out["max_concurrent_trials"] = self.max_concurrent_trials
        out["scheduler"] = dataclasses.asdict(self.scheduler)
        return out


def parse_tune(raw: Any, *, base_dir: str | Path = ".", overrides: Iterable[str] = (),
               where: str = "tune file") -> TuneSpec:
    """Check a tune file's mapping strictly and turn it into a :class:`TuneSpec`.

    Args:
        raw: The YAML mapping.
        base_dir: Directory a relative ``base:`` path is resolved against (the file's).
        overrides: Extra ``section.key=value`` overrides (the CLI's ``--set``), applied last.
        where: Names the file in error messages.

    Raises:
        ConfigError: An unknown key, a bad value or an unknown study; the message names it.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(TUNE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(TUNE_KEYS)}")
    if "base" not in raw:
        raise ConfigError(f"{where}: 'base' is required (a job YAML path or a mapping)")
    base = raw["base"]
    if isinstance(base, str):
        path = Path(base_dir) / base
        if not path.is_file():
            raise ConfigError(f"{where}: base: no job file at {path}")
        base = yaml.safe_load(path.read_text()) or {}
    if not isinstance(base, Mapping):
        raise ConfigError(f"{where}: base: expected a path or a mapping, got {base!r}")
    sets = raw.get("set") or []
    if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
        raise ConfigError(f"{where}: set: expected a list of 'section.key=value' strings, "
                          f"got {sets!r}")
    if ("grid" in raw) == ("study" in raw):
        raise ConfigError(f"{where}: give exactly one of 'grid' and 'study'")
    grid: dict[str, list[Any]] | None = None
    study: str | None = None
    study_params: dict[str, Any] = {}
    if "grid" in raw:
        grid = {str(k): v for k, v in (raw["grid"] or {}).items()}
        grid_params(grid)  # checks the shape
    else:
        study, study_params = _parse_study(raw["study"], where)
    num_samples = raw.get("num_samples", 1)
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ConfigError(f"{where}: num_samples must be an integer >= 1, got {num_samples!r}")
    concurrent = raw.get("max_concurrent_trials")
    if concurrent is not None and (not isinstance(concurrent, int)
                                   or isinstance(concurrent, bool) or concurrent < 1):
        raise ConfigError(f"{where}: max_concurrent_trials must be an integer >= 1 or null, "
                          f"got {concurrent!r}")
    return TuneSpec(base=copy.deepcopy(dict(base)), overrides=(*sets, *overrides), grid=grid,
                    study=study, study_params=study_params, num_samples=num_samples,
                    max_concurrent_trials=concurrent,
                    scheduler=_parse_scheduler(raw.get("scheduler"), where))


def _parse_study(raw: Any, where: str) -> tuple[str, dict[str, Any]]:
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, Mapping) or "name" not in raw:
        raise ConfigError(f"{where}: study: expected a mapping with a 'name', got {raw!r}")
    name = raw["name"]
    if name not in STUDIES:
        raise ConfigError(f"{where}: study.name: unknown study {name!r}; allowed: "
                          + "; ".join(f"{s.name} ({s.help})" for s in STUDIES.values()))
    study = STUDIES[name]
    params = {k: v for k, v in raw.items() if k != "name"}
    unknown = sorted(set(params) - set(study.defaults))
    if unknown:
        raise ConfigError(f"{where}: study.{unknown[0]}: unknown parameter of study {name!r}; "
                          f"allowed: {', '.join(study.defaults)}")
    return name, {**study.defaults, **params}


def _parse_scheduler(raw: Any, where: str) -> Scheduler:
    if raw is None or raw == "fifo":
        return Scheduler()
    if raw == "asha":
        raw = {"name": "asha"}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: scheduler: expected fifo, asha or a mapping, got {raw!r}")
    fields = {f.name for f in dataclasses.fields(Scheduler)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(f"{where}: scheduler.{unknown[0]}: unknown key; allowed: "
                          f"{', '.join(sorted(fields))}")
    scheduler = Scheduler(**raw)
    if scheduler.name not in ("fifo", "asha"):
        raise ConfigError(f"{where}: scheduler.name must be fifo or asha, got {scheduler.name!r}")
    if scheduler.metric not in SCHEDULER_METRICS:
        raise ConfigError(f"{where}: scheduler.metric must be one of "
                          f"{', '.join(SCHEDULER_METRICS)}, got {scheduler.metric!r}")
    for key in ("grace_period", "reduction_factor"):
        value = getattr(scheduler, key)
        if not isinstance(value, int) or value < (2 if key == "reduction_factor" else 1):
            raise ConfigError(f"{where}: scheduler.{key} must be an integer >= "
                              f"{2 if key == 'reduction_factor' else 1}, got {value!r}")
    return scheduler


def load_tune(path: str | Path, overrides: Iterable[str] = ()) -> TuneSpec:
    """Read a tune file (see the module docstring); ``overrides`` are applied to its base."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tune file at {path}")
    return parse_tune(yaml.safe_load(path.read_text()), base_dir=path.parent,
                      overrides=overrides, where=str(path))


# ------------------------------------------------------------------------ trials


@dataclasses.dataclass(frozen=True)
class Trial:
    """One training of a study.

    Attributes:
        name: Unique, file-name-safe name (``007_fade+time_mask``): its run directory's name.
        params: The leaves this trial sets on top of the base job (what the study varies).
        job: The full, validated job.
    """

    name: str
    params: Params
    job: JobConfig


def expand_trials(spec: TuneSpec) -> list[Trial]:
    """Every trial of a tune spec, each job validated (nothing runs).

    Local ``data.path`` values are made absolute (against the current directory), because a
    trial runs in another working directory.

    Raises:
        ConfigError: A trial's job is invalid (the message names the trial and the key), an
            override sets a leaf the study varies, or ASHA is asked for without probe epochs.
    """
    if spec.grid is not None:
        param_sets = grid_params(spec.grid)
    else:
        assert spec.study is not None
        param_sets = STUDIES[spec.study].expand(**spec.study_params)
    varied = _ordered_leaves(param_sets)
    fixed = parse_overrides(spec.overrides)
    clash = [leaf for leaf in fixed if leaf in varied]
    if clash:
        raise ConfigError(f"{clash[0]}: set by an override, but the study varies it "
                          f"(drop the override or the {clash[0]!r} entry of the study)")
    base = copy.deepcopy(spec.base)
    for leaf, value in fixed.items():
        set_leaf(base, leaf, value)
    try:
        base_job = JobConfig.from_dict(base)
    except ConfigError as err:
        raise ConfigError(f"base job: {err}") from None
    if spec.num_samples > 1:
        if "train.seed" in varied:
            raise ConfigError("num_samples > 1 repeats trials with train.seed + 0, 1, ...: "
                              "do not also vary train.seed")
        param_sets = [{**p, "train.seed": base_job.train.seed + r}
                      for p in param_sets for r in range(spec.num_samples)]
    width = max(3, len(str(len(param_sets) - 1)))
    trials = []
    for index, params in enumerate(param_sets):
        name = trial_name(index, params, width=width)
        raw = base_job.to_dict()
        for leaf, value in params.items():
            set_leaf(raw, leaf, value)
        try:
            job = JobConfig.from_dict(raw)
        except ConfigError as err:
            raise ConfigError(f"trial {name}: {err}") from None
        if spec.scheduler.name == "asha" and not job.eval.every_epochs:
            raise ConfigError(f"trial {name}: scheduler asha compares {spec.scheduler.metric} "
                              f"of the probe epochs, but eval.every_epochs is 0: set it")
        trials.append(Trial(name, params, _absolute_data(job)))
    return trials


def _ordered_leaves(param_sets: Sequence[Params]) -> list[str]:
    leaves: list[str] = []
    for params in param_sets:
        leaves.extend(leaf for leaf in params if leaf not in leaves)
    return leaves


def _absolute_data(job: JobConfig) -> JobConfig:
    if not job.data.path:
        return job
    return dataclasses.replace(job, data=dataclasses.replace(
        job.data, path=storage.absolute(job.data.path)))


def _slug(leaf: str, value: Any) -> str:
    if leaf == "model.encoder":
        return ""  # implied by model.frontend
    if leaf == "train.seed":
        return f"seed{value}"
    if isinstance(value, (list, tuple)):
        return "+".join(str(v) for v in value) or "none"
    if leaf == "data.path" and isinstance(value, str):
        return posixpath.basename(value.rstrip("/")) or "data"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def trial_name(index: int, params: Params, *, width: int = 3) -> str:
    """A unique, file-name-safe trial name: the index, then the varied values.

    >>> trial_name(7, {"augment.sequence": ["fade", "time_mask"]})
    '007_fade+time_mask'
    >>> trial_name(12, {"objective.name": "clar", "data.label_fraction": 0.1})
    '012_clar-0.1'
    """
    parts = [s for s in (_slug(k, v) for k, v in params.items()) if s]
    text = re.sub(r"[^A-Za-z0-9_.+=-]+", "_", "-".join(parts)).strip("_-")[:80]
    return f"{index:0{width}d}" + (f"_{text}" if text else "")


# ------------------------------------------------------------------------ resources


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
    :data:`TRIAL_CPUS`; :data:`HEADROOM_CPUS` stay free for the driver side of the streams. As
    many trials run at once as fit the rest at their smallest (one actor, unless the job fixes
    ``augment.actors``) and the GPUs (and ``max_concurrent``, and the number of trials). A job
    that leaves ``augment.actors`` at 0 then gets the actors that fit in its share,
    ``(cluster_cpus - HEADROOM_CPUS) / concurrency``, and at least one.

    Raises:
        ResourcePlanError: One trial alone does not fit the cluster (the message says what is
            missing).
    """
    if not jobs:
        raise ValueError("plan_study: no trials")
    usable = cluster_cpus - HEADROOM_CPUS
    smallest = []
    for job in jobs:
        floor_job = with_actors(job, job.augment.actors or 1)
        try:
            plan = plan_resources(floor_job, cluster_cpus=usable - TRIAL_CPUS + READ_CPUS,
                                  cluster_gpus=cluster_gpus, node_resources=node_resources)
        except ResourcePlanError as err:
            raise ResourcePlanError(
                f"a trial does not fit the cluster, so the study cannot start: {err} "
                f"(a study also keeps {HEADROOM_CPUS:g} CPU free for the streams' driver "
                f"side and {TRIAL_CPUS:g} CPU per trial)") from None
        smallest.append(plan)
    need_cpus = max(_steady_cpus(p) for p in smallest)
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
        spare = share - _steady_cpus(floor_plan) + floor_plan.cpus_per_actor
        actors = max(1, math.floor(spare / floor_plan.cpus_per_actor + 1e-9))
        plans.append(dataclasses.replace(floor_plan, actors=actors))
    return StudyPlan(concurrency, tuple(plans), cluster_cpus, cluster_gpus)


def _steady_cpus(plan: ResourcePlan) -> float:
    """CPUs a running trial holds: training workers, augmentation actors, the trial itself."""
    return plan.workers * plan.cpus_per_worker + plan.actors * plan.cpus_per_actor + TRIAL_CPUS


# ------------------------------------------------------------------------ running


def _event(experiment: str, name: str, event: str, **extra: Any) -> None:
    record = {"event": event, "time": time.time(), **extra}
    storage.append_text(storage.join_uri(experiment, EVENTS_DIR, f"{name}.jsonl"),
                        json.dumps(record) + "\n")


def read_events(experiment: str, name: str) -> list[dict[str, Any]]:
    """A trial's events (``start``, ``resume``, ``skip``, ``finished``, ``failed``)."""
    path = storage.join_uri(experiment, EVENTS_DIR, f"{name}.jsonl")
    if not storage.exists(path):
        return []
    return [json.loads(line) for line in storage.read_text(path).splitlines() if line]


def trial_job(experiment: str, name: str) -> JobConfig:
    """The job of one trial, as the study planned it (``trials.json``)."""
    record = storage.read_json(storage.join_uri(experiment, TRIALS_FILE))
    for trial in record["trials"]:
        if trial["name"] == name:
            return JobConfig.from_dict(trial["job"])
    raise KeyError(f"no trial {name!r} in {experiment}/{TRIALS_FILE}")


def run_trial(experiment: str, name: str) -> dict[str, Any]:
    """Run one trial inside Tune: train, unless its run directory already has a result.

    A run directory with ``config.yaml`` but no ``result.json`` (an interrupted trial) is
    resumed from its last checkpoint. A failure writes ``RUN_DIR/error.txt`` and is raised.

    Args:
        experiment: The experiment directory.
        name: The trial's name.

    Returns:
        The trial's final metrics (``linear_top1``, ``knn_top1``, ...), also reported to Tune.
    """
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from clar_ray.train import run_training

    run_dir = storage.join_uri(experiment, RUNS_DIR, name)
    result_path = artifacts.run_file(run_dir, artifacts.RESULT_FILE)
    if storage.exists(result_path):
        if "finished" not in [e["event"] for e in read_events(experiment, name)]:
            # The training wrote its result, then the study was stopped before it logged so.
            _event(experiment, name, "finished", note="result.json found after an interruption")
        _event(experiment, name, "skip")
        final = {**storage.read_json(result_path), "trial_status": "finished"}
        ray.tune.report(_scalars(final))
        return final
    error_path = artifacts.run_file(run_dir, ERROR_FILE)
    if storage.exists(error_path):
        fs, inner = storage.resolve_filesystem(error_path)
        fs.delete_file(inner)
    resume = storage.exists(artifacts.run_file(run_dir, artifacts.CONFIG_FILE))
    _event(experiment, name, "resume" if resume else "start")
    try:
        summary = run_training(trial_job(experiment, name), run_dir, resume=resume,
                               overwrite=not resume, callbacks=[TuneReportCallback()],
                               progress=False)  # the driver prints the study's table
    except BaseException as err:
        storage.write_text(error_path, f"{type(err).__name__}: {err}\n\n"
                                       + "".join(traceback.format_exception(err)))
        _event(experiment, name, "failed", error=f"{type(err).__name__}: {err}"[:500])
        raise
    _event(experiment, name, "finished")
    final = {**summary.get("result", {}), "trial_status": "finished"}
    ray.tune.report(_scalars(final))
    return final


def _scalars(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if isinstance(v, (int, float, str))}


def _trainable(config: dict[str, Any]) -> None:
    """Tune's function trainable: ``config["trial"] == {"name": ..., "experiment": ...}``."""
    run_trial(config["trial"]["experiment"], config["trial"]["name"])


def _trial_name(trial: Any) -> str:
    return str(trial.config["trial"]["name"])


def _trial_dirname(trial: Any) -> str:
    return f"tune_{trial.config['trial']['name']}"


def _connect(jobs: Sequence[JobConfig], address: str | None,
             max_concurrent: int | None) -> None:
    """Use a running Ray, connect to ``address``/RAY_ADDRESS, or start a local Ray.

    A local Ray declares ``k × local_cpus(job) + HEADROOM_CPUS`` logical CPUs for
    ``k = max_concurrent or 1``, so each of ``k`` concurrent trials gets what one
    ``clar-ray train`` would.
    """
    from clar_ray.train import ensure_ray, local_cpus

    per_trial = max(local_cpus(job) for job in jobs)
    ensure_ray(jobs[0], address,
               num_cpus=(max_concurrent or 1) * per_trial + math.ceil(HEADROOM_CPUS))


def _preflight(trials: Sequence[Trial]) -> None:
    """Fail before anything starts if a trial's dataset is missing or too small."""
    from clar_ray.data.manifest import Manifest
    from clar_ray.train import steps_per_epoch

    manifests: dict[str, Any] = {}
    for trial in trials:
        data = trial.job.data
        if not data.path:
            raise ConfigError(f"trial {trial.name}: data.path is empty: pass --set "
                              f"data.path=DIR (a prepared dataset)")
        if data.path not in manifests:
            manifests[data.path] = Manifest.read(data.path)
        try:
            rows = manifests[data.path].split(data.train_split).rows
            steps_per_epoch(rows, trial.job.train.batch_size, trial.job.train.workers)
        except (KeyError, ValueError) as err:
            raise ValueError(f"trial {trial.name}: {err}") from None


def _trials_record(spec: TuneSpec, trials: Sequence[Trial],
                   jobs: Sequence[JobConfig] | None = None) -> dict[str, Any]:
    return {
        "study": spec.study or "grid",
        "study_params": spec.study_params,
        "varied": _ordered_leaves([t.params for t in trials]),
        "trials": [{"name": t.name, "params": t.params, "run_dir": f"{RUNS_DIR}/{t.name}",
                    "job": job.to_dict()}
                   for t, job in zip(trials, jobs or [t.job for t in trials])],
    }


def _check_same_trials(experiment: str, record: Mapping[str, Any]) -> None:
    stored = storage.read_json(storage.join_uri(experiment, TRIALS_FILE))
    old = {t["name"]: _unplanned(t["job"]) for t in stored["trials"]}
    new = {t["name"]: _unplanned(t["job"]) for t in record["trials"]}
    if old.keys() != new.keys():
        extra = sorted(set(new) ^ set(old))
        raise ConfigError(f"--resume: the tune file and overrides give other trials than "
                          f"{experiment} holds (e.g. {extra[0]}); resume with the same tune "
                          f"file and --set, or start a new experiment")
    for name, job in new.items():
        if job != old[name]:
            diff = _first_difference(old[name], job)
            raise ConfigError(f"--resume: trial {name} differs from the one in {experiment} "
                              f"at {diff}; resume with the same tune file and --set, or start "
                              f"a new experiment")


def _unplanned(job: Mapping[str, Any]) -> dict[str, Any]:
    """A job dict without what the study plan sets (``augment.actors``)."""
    return {**job, "augment": {k: v for k, v in job.get("augment", {}).items() if k != "actors"}}


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')} ({a!r} vs {b!r})"


def run_study(job_path: str | Path, out: str, *, resume: bool = False,
              overrides: Iterable[str] = (), address: str | None = None) -> str:
    """Run (or resume) a study: check every trial, plan the cluster, run the Tune grid.

    Args:
        job_path: The tune file.
        out: The experiment directory (local path or URI).
        resume: Finish an interrupted experiment in ``out`` (finished trials are not re-run).
        overrides: ``section.key=value`` overrides of the base job (the CLI's ``--set``).
        address: A Ray cluster address (default: a running Ray, RAY_ADDRESS, or a new local
            Ray).

    Returns:
        The experiment directory.

    Raises:
        ConfigError: The tune file or a trial's job is invalid.
        ResourcePlanError: A trial cannot fit the cluster (raised before any trial starts).
        FileExistsError: ``out`` holds an experiment and ``resume`` is False.
        FileNotFoundError: ``resume`` is True and ``out`` holds no experiment.
    """
    import ray
    from ray import tune

    from clar_ray.tune_table import TrialTable

    spec = load_tune(job_path, overrides)
    trials = expand_trials(spec)
    experiment = storage.absolute(out).rstrip("/")
    record = _trials_record(spec, trials)
    trials_path = storage.join_uri(experiment, TRIALS_FILE)
    if resume:
        if not storage.exists(trials_path):
            raise FileNotFoundError(f"--resume: no experiment to continue in {experiment}")
        _check_same_trials(experiment, record)
    elif storage.exists(trials_path):
        raise FileExistsError(f"{experiment} already holds an experiment: pass --resume to "
                              f"finish it, or choose another --out")
    _preflight(trials)

    _connect([t.job for t in trials], address, spec.max_concurrent_trials)
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    total = ray.cluster_resources()
    plan = plan_study([t.job for t in trials], cluster_cpus=total.get("CPU", 0.0),
                      cluster_gpus=total.get("GPU", 0.0), node_resources=nodes,
                      max_concurrent=spec.max_concurrent_trials)
    print(f"clar-ray tune: {len(trials)} trial(s); {plan.describe()}")
    if spec.scheduler.name == "asha":
        print("clar-ray tune: warning: ASHA stops trials early, and Ray <= 2.60 leaves the "
              "Ray Train run of a stopped trial holding its CPUs (ray-project/ray#54305); "
              "later trials may wait for them. Prefer scheduler: fifo.")
    if not resume:
        storage.write_text(storage.join_uri(experiment, STUDY_FILE),
                           yaml.safe_dump(spec.to_dict(), sort_keys=False))
    planned = [with_actors(t.job, p.actors) for t, p in zip(trials, plan.plans)]
    storage.write_json(trials_path, {**_trials_record(spec, trials, planned),
                                     "plan": plan.describe()})

    specs = [{"name": t.name, "experiment": experiment, "params": t.params} for t in trials]
    trainable = tune.with_resources(_trainable, {"CPU": TRIAL_CPUS})
    # clar-ray's table (trial, varied values, state, linear_top1) instead of Tune's; Tune
    # takes a reporter only with its legacy output.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    reporter = TrialTable(_ordered_leaves([t.params for t in trials]))
    storage_path, name = experiment.rsplit("/", 1)
    if resume and tune.Tuner.can_restore(experiment):
        tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(specs)},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=plan.concurrency, scheduler=_scheduler(spec.scheduler),
                trial_name_creator=_trial_name, trial_dirname_creator=_trial_dirname),
            run_config=tune.RunConfig(name=name, storage_path=storage_path, verbose=1,
                                      progress_reporter=reporter,
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
    results = tuner.fit()
    status = _tune_status(results, specs)
    storage.write_json(storage.join_uri(experiment, TUNE_STATUS_FILE), status)
    counts: dict[str, int] = {}
    for entry in status.values():
        counts[entry["status"]] = counts.get(entry["status"], 0) + 1
    print("clar-ray tune: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + f" (of {len(specs)})")
    return experiment


def _scheduler(scheduler: Scheduler) -> Any:
    if scheduler.name == "fifo":
        return None
    from ray.tune.schedulers import ASHAScheduler

    # Results of non-probe epochs lack the metric; ASHA skips them, Tune's check must too.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    return ASHAScheduler(metric=scheduler.metric, mode="max",
                         grace_period=scheduler.grace_period,
                         reduction_factor=scheduler.reduction_factor, max_t=1_000_000)


def _tune_status(results: Any, specs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Every trial's outcome: finished (result.json), failed (error) or stopped (neither)."""
    errors: dict[str, str] = {}
    for result in results:
        name = (result.config or {}).get("trial", {}).get("name")
        if name and result.error is not None:
            errors[name] = f"{type(result.error).__name__}: {result.error}"[:2000]
    status = {}
    for spec in specs:
        run_dir = storage.join_uri(spec["experiment"], RUNS_DIR, spec["name"])
        done = storage.exists(artifacts.run_file(run_dir, artifacts.RESULT_FILE))
        if done:
            status[spec["name"]] = {"status": "finished"}
        elif spec["name"] in errors:
            status[spec["name"]] = {"status": "failed", "error": errors[spec["name"]]}
        else:
            status[spec["name"]] = {"status": "stopped"}
    return status
