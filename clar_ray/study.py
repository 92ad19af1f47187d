"""Studies without Ray: the tune file, the named studies and grids, and the trials they expand to.

A tune file (``jobs/study-*.yaml``) names a base job, overrides, and what varies::

    base: quickstart.yaml          # a job YAML beside this file, or an inline mapping
    set: [train.epochs=50]         # overrides applied to the base (then --set from the CLI)
    study:                         # a named study (STUDIES) ...
      name: augmentation-pairs
      augmentations: [fade, time_mask, time_shift]
    # grid: {objective.name: [simclr, clar], data.label_fraction: [1.0, 0.1]}  # ... or a grid
    num_samples: 1                 # repeats of every trial, with train.seed + 0, 1, ...
    max_concurrent_trials: null    # default: as many as fit the cluster
    scheduler: fifo                # or {name: asha, metric: linear_top1, ...}

:func:`parse_tune` checks the file strictly into a :class:`TuneSpec`; :func:`expand_trials`
turns it into :class:`Trial` s, each with a unique name (:func:`trial_name`) and a validated
job. Nothing here starts Ray: :mod:`clar_ray.tune` runs the trials.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from clar_ray.config import (
    AUGMENTATION_NAMES,
    FRONTEND_ENCODERS,
    LABEL_FREE_OBJECTIVES,
    ConfigError,
    JobConfig,
)
from clar_ray.overrides import parse_overrides, set_leaf

__all__ = ["SCHEDULER_METRICS", "STUDIES", "TUNE_KEYS", "Params", "Scheduler", "Study", "Trial",
           "TuneSpec", "augmentation_pairs", "expand_trials", "grid_params", "input_types",
           "label_fractions", "load_tune", "ordered_leaves", "parse_tune", "trial_name"]

#: Top-level keys of a tune file.
TUNE_KEYS = ("base", "set", "grid", "study", "num_samples", "max_concurrent_trials", "scheduler")
#: Metrics an early-stopping scheduler may watch (reported on probe epochs).
SCHEDULER_METRICS = ("linear_top1", "knn_top1")

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
        if name not in FRONTEND_ENCODERS:
            raise ConfigError(f"study.inputs: unknown input {name!r}; allowed: "
                              f"{', '.join(FRONTEND_ENCODERS)}")
    for name, sequence, path in itertools.product(
            _distinct(inputs, "inputs"),
            [None] if augmentations is None else _distinct(augmentations, "augmentations"),
            [None] if datasets is None else _distinct(datasets, "datasets")):
        trial: Params = {"model.frontend": name, "model.encoder": FRONTEND_ENCODERS[name]}
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
    varied = ordered_leaves(param_sets)
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
        trials.append(Trial(name, params, job.with_absolute_data()))
    return trials


def ordered_leaves(param_sets: Sequence[Params]) -> list[str]:
    """Every leaf the parameter sets name, in first-seen order."""
    leaves: list[str] = []
    for params in param_sets:
        leaves.extend(leaf for leaf in params if leaf not in leaves)
    return leaves


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
