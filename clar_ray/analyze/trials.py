"""Reading a study's trials: one :class:`TrialRecord` per run directory, whatever its state.

The run directories are the source of truth: ``config.yaml`` says what ran, ``result.json``
that it finished and how well, ``metrics.jsonl`` how accuracy grew, ``error.txt`` why it
failed. ``trials.json`` (written by :mod:`clar_ray.tune`) adds the trials that never started
and what the study varied; without it, the varied leaves are those that differ between the
runs' configs. A trial without ``result.json`` is listed with its status (failed, stopped,
unfinished or pending), never dropped.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow.fs as pafs
import yaml

from clar_ray import storage
from clar_ray.rundir import (
    CONFIG_FILE,
    ERROR_FILE,
    METRICS_FILE,
    RESULT_FILE,
    RUNS_DIR,
    TRIALS_FILE,
    TUNE_STATUS_FILE,
    run_file,
)

__all__ = ["IGNORED_LEAVES", "IMPLIED_LEAVES", "METRIC", "REPEAT_LEAF", "Key", "TrialRecord",
           "flatten", "load_trials", "varied_leaves"]

#: The accuracy that tables and figures show.
METRIC = "linear_top1"
#: Leaves that differ between trials without being part of the study.
IGNORED_LEAVES = ("augment.actors",)
#: The leaf whose values are repeats: averaged over, not a row or column.
REPEAT_LEAF = "train.seed"
#: Leaves implied by another (never a row or column of their own).
IMPLIED_LEAVES = ("model.encoder",)

Key = tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """What is known about one trial.

    Attributes:
        name: The trial (its run directory's name).
        status: ``finished``, ``failed``, ``stopped`` (by the scheduler or an interrupt),
            ``unfinished`` (started, no result yet) or ``pending`` (never started).
        params: The varied leaves and this trial's values (lists as tuples).
        result: ``result.json``, or None.
        curve: Probe epochs of ``metrics.jsonl``: ``{"epoch", "linear_top1", "knn_top1"}``.
        error: The error's first line, when known.
        run_dir: The run directory.
    """

    name: str
    status: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    curve: tuple[dict[str, float], ...]
    error: str | None
    run_dir: str

    @property
    def metric(self) -> float | None:
        """The trial's :data:`METRIC`, or None when it has no result."""
        value = (self.result or {}).get(METRIC)
        return float(value) if isinstance(value, (int, float)) else None



def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists become tuples (hashable)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = _hashable(value)
    return flat


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def varied_leaves(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Leaves of flat configs that take more than one value (in first-seen order)."""
    leaves: list[str] = []
    for config in configs:
        leaves.extend(k for k in config if k not in leaves)
    return [leaf for leaf in leaves if leaf not in IGNORED_LEAVES
            and len({c.get(leaf) for c in configs}) > 1]


def _list_dirs(path: str) -> list[str]:
    fs, inner = storage.resolve_filesystem(path)
    if fs.get_file_info(inner).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=False))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def _read_json(path: str) -> Any:
    return storage.read_json(path) if storage.exists(path) else None


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")[:300]


def _curve(run_dir: str) -> tuple[dict[str, float], ...]:
    path = run_file(run_dir, METRICS_FILE)
    if not storage.exists(path):
        return ()
    points = []
    for line in storage.read_text(path).splitlines():
        try:
            record = json.loads(line) if line.strip() else {}
        except json.JSONDecodeError:  # a line cut short by an interrupted run
            continue
        if METRIC in record:
            points.append({"epoch": record["epoch"], METRIC: record[METRIC],
                           "knn_top1": record.get("knn_top1", math.nan)})
    return tuple(points)


def load_trials(experiment_dir: str) -> tuple[list[TrialRecord], dict[str, Any]]:
    """Every trial of an experiment (or of a folder of run directories).

    Args:
        experiment_dir: A ``clar-ray tune`` experiment (``trials.json``, ``runs/``) or any
            folder whose subfolders are run directories.

    Returns:
        The trials (in the study's order, then any other run directories) and the study's
        ``trials.json`` info (empty without one).
    """
    info = _read_json(storage.join_uri(experiment_dir, TRIALS_FILE)) or {}
    tune_status = _read_json(storage.join_uri(experiment_dir, TUNE_STATUS_FILE)) or {}
    runs_root = storage.join_uri(experiment_dir, RUNS_DIR)
    found = _list_dirs(runs_root)
    if not info and not storage.exists(runs_root):  # a folder of run directories
        runs_root = experiment_dir
        found = [n for n in _list_dirs(runs_root) if any(
            storage.exists(run_file(storage.join_uri(runs_root, n), f))
            for f in (CONFIG_FILE, RESULT_FILE, ERROR_FILE))]
    planned = {t["name"]: t for t in info.get("trials", [])}
    names = list(planned) + [n for n in found if n not in planned]
    raw: list[tuple[str, str, dict[str, Any], dict[str, Any] | None, str | None, str]] = []
    for name in names:
        run_dir = storage.join_uri(runs_root, name)
        config_path = run_file(run_dir, CONFIG_FILE)
        if storage.exists(config_path):
            config = flatten(yaml.safe_load(storage.read_text(config_path)) or {})
        else:
            config = flatten(planned.get(name, {}).get("job", {}))
        result = _read_json(run_file(run_dir, RESULT_FILE))
        error_path = run_file(run_dir, ERROR_FILE)
        error = (_first_line(storage.read_text(error_path)) if storage.exists(error_path)
                 else tune_status.get(name, {}).get("error"))
        if result is not None:
            status = "finished"
        elif error:
            status = "failed"
        elif tune_status.get(name, {}).get("status") == "stopped":
            status = "stopped"
        elif storage.exists(config_path):
            status = "unfinished"
        elif name in planned:
            status = "pending"
        else:
            status, error = "failed", f"no {CONFIG_FILE} in {run_dir}"
        raw.append((name, status, config, result, error, run_dir))
    leaves = list(info.get("varied") or varied_leaves([c for _, _, c, _, _, _ in raw if c]))
    records = []
    for name, status, config, result, error, run_dir in raw:
        if name in planned:
            params = {k: _hashable(v) for k, v in planned[name].get("params", {}).items()}
        else:
            params = {leaf: config[leaf] for leaf in leaves if leaf in config}
        records.append(TrialRecord(name, status, params, result, _curve(run_dir), error,
                                   run_dir))
    return records, {**info, "varied": leaves}
