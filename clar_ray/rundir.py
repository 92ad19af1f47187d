"""The files of run and experiment directories, which of them clar-ray owns, and reuse rules.

The names of every file clar-ray writes live here, in a module without torch or Ray, so that
training, studies and their analysis read one list::

    RUN_DIR/
      .clar-ray-run          the marker (:data:`MARKER`)
      config.yaml            the job as run (every default filled in)
      plan.json              where the CPUs and GPUs went
      checkpoint_*/state.pt  Ray Train checkpoints (model, optimiser, epoch, step)
      tensorboard/           TensorBoard event files (rank 0)
      metrics.jsonl          one JSON object per epoch: epoch, loss, views_per_s, lr, ...
      encoder.pt             the final frontend settings and encoder weights
      result.json            linear-probe and kNN accuracy of the final encoder
      error.txt              why a study's trial failed

    EXPERIMENT/              (``clar-ray tune``)
      study.yaml             the tune file as resolved
      trials.json            trial names, varied leaves and their jobs
      runs/<trial>/          each trial's run directory
      events/<trial>.jsonl   start / resume / skip / finished / failed, with times
      tune_status.json       Tune's last word on every trial

clar-ray never deletes or changes a file it did not write. A run directory is recognised by
its marker file (:data:`MARKER`, written before anything else of the run), or, for runs of
earlier versions, by ``config.yaml`` beside ``plan.json``. Only the entries clar-ray and Ray
Train write there (:func:`is_owned`) are ever removed; a user's ``notes.txt`` stays.

    out does not exist or is empty   → a new run
    out holds other files, no run    → refused, even with --overwrite (choose another --out)
    out holds a run that trained     → refused unless --resume or --overwrite
    out holds a run that never got   → its files are replaced (a failed start never blocks
      a checkpoint or an encoder       a re-run)
    --resume                         → the job is checked against config.yaml before any
                                       write: only :data:`RESUMABLE` leaves may differ (a
                                       run with no checkpoint yet starts afresh)
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow.fs as pafs
import yaml

from clar_ray import storage
from clar_ray.config import ConfigError, JobConfig

__all__ = ["CONFIG_FILE", "ENCODER_FILE", "ERROR_FILE", "EVENTS_DIR", "MARKER", "METRICS_FILE",
           "PLAN_FILE", "RESULT_FILE", "RESUMABLE", "RUNS_DIR", "STATE_FILE", "STUDY_FILE",
           "TENSORBOARD_DIR", "TRIALS_FILE", "TUNE_STATUS_FILE", "check_resume",
           "check_run_dir", "clear_run", "is_owned", "is_run", "mark_run", "prepare_run_dir",
           "run_file"]

# The files of a run directory.
#: The marker file of a run directory (JSON: what wrote it).
MARKER = ".clar-ray-run"
CONFIG_FILE = "config.yaml"
PLAN_FILE = "plan.json"
METRICS_FILE = "metrics.jsonl"
ENCODER_FILE = "encoder.pt"
RESULT_FILE = "result.json"
TENSORBOARD_DIR = "tensorboard"
ERROR_FILE = "error.txt"
#: The file of a checkpoint folder (``checkpoint_*/``).
STATE_FILE = "state.pt"

# The files of an experiment directory (``clar-ray tune``).
RUNS_DIR = "runs"
EVENTS_DIR = "events"
TRIALS_FILE = "trials.json"
STUDY_FILE = "study.yaml"
TUNE_STATUS_FILE = "tune_status.json"

#: Entries clar-ray and Ray Train write in a run directory (glob patterns on the base name).
OWNED = (MARKER, CONFIG_FILE, PLAN_FILE, METRICS_FILE, ENCODER_FILE, RESULT_FILE,
         TENSORBOARD_DIR, "checkpoint_*", "checkpoint_manager_snapshot.json",
         ".validate_storage_marker", "crashed-once", ERROR_FILE)
#: Config leaves (and sections, ending in ``.``) that may differ on ``--resume``: how long,
#: how often to checkpoint, log and probe, and where the work runs; never what is learned.
RESUMABLE = ("name", "train.epochs", "train.max_failures", "train.wait_for_resources_s",
             "train.checkpoint_every", "train.log_every_steps", "train.node_labels",
             "train.cpus_per_worker", "train.use_gpu", "augment.actors",
             "augment.cpus_per_actor", "augment.node_labels", "eval.")


def run_file(run_dir: str, name: str) -> str:
    """Path of one file of a run directory."""
    return storage.join_uri(run_dir, name)


def is_owned(name: str) -> bool:
    """True for a base name that clar-ray or Ray Train writes in a run directory."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in OWNED)


def _entries(run_dir: str) -> list[pafs.FileInfo]:
    fs, inner = storage.resolve_filesystem(run_dir)
    return list(fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True)))


def is_run(run_dir: str) -> bool:
    """True if ``run_dir`` holds a clar-ray run (its marker, or an older run's files)."""
    names = {info.base_name for info in _entries(run_dir)}
    return MARKER in names or {CONFIG_FILE, PLAN_FILE} <= names


def mark_run(run_dir: str) -> None:
    """Write the marker that makes ``run_dir`` a run directory clar-ray may clear later."""
    from clar_ray import __version__

    storage.write_json(run_file(run_dir, MARKER),
                       {"kind": "run", "written_by": f"clar-ray {__version__}"})


def _has_training(names: set[str]) -> bool:
    return ENCODER_FILE in names or any(n.startswith("checkpoint_") for n in names)


def clear_run(run_dir: str) -> list[str]:
    """Remove the entries clar-ray owns in a run directory (the marker last); return them."""
    fs, _ = storage.resolve_filesystem(run_dir)
    owned = sorted((i for i in _entries(run_dir) if is_owned(i.base_name)),
                   key=lambda i: i.base_name == MARKER)
    for info in owned:
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(info.path)
        else:
            fs.delete_file(info.path)
    return [info.base_name for info in owned]


def _shown(names: list[str]) -> str:
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def check_run_dir(run_dir: str, job: JobConfig, *, resume: bool, overwrite: bool) -> bool:
    """Check ``run_dir`` against the rules above, changing nothing.

    Returns:
        True when the run's own files must be cleared before the new run starts.

    Raises:
        FileExistsError: ``run_dir`` is a file, holds files that are not a run, or holds a
            trained run and neither ``resume`` nor ``overwrite`` is set.
        FileNotFoundError: ``resume`` and no run in ``run_dir``.
        ConfigError: ``resume`` with a job that differs from the run's in a leaf that may
            not change.
    """
    fs, inner = storage.resolve_filesystem(run_dir)
    kind = fs.get_file_info(inner).type
    if kind not in (pafs.FileType.NotFound, pafs.FileType.Directory):
        raise FileExistsError(f"--out {run_dir} is a file, not a folder: choose another --out")
    names = sorted(info.base_name for info in _entries(run_dir))
    if names and not is_run(run_dir):
        raise FileExistsError(
            f"--out {run_dir} holds files that are not a clar-ray run ({_shown(names)}): "
            f"choose a new or empty folder (clar-ray never deletes what it did not write)")
    if resume:
        if not names:
            raise FileNotFoundError(f"--resume: no run to continue in {run_dir} (start it "
                                    f"without --resume)")
        check_resume(run_dir, job)
        return not _has_training(set(names))  # nothing trained yet: start it afresh
    if names and _has_training(set(names)) and not overwrite:
        raise FileExistsError(
            f"{run_dir} already holds a run: pass --resume to continue it or --overwrite to "
            f"start again")
    return bool(names)


def prepare_run_dir(run_dir: str, job: JobConfig, *, resume: bool, overwrite: bool) -> None:
    """:func:`check_run_dir`, then clear the run's own files when it says so."""
    if check_run_dir(run_dir, job, resume=resume, overwrite=overwrite):
        clear_run(run_dir)


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and not dotted.endswith("node_labels"):
            yield from _leaves(value, dotted + ".")
        else:
            yield dotted, value


def _resumable(dotted: str) -> bool:
    return any(dotted == key or (key.endswith(".") and dotted.startswith(key))
               for key in RESUMABLE)


def check_resume(run_dir: str, job: JobConfig) -> None:
    """Refuse to resume with a job that would train something else than the run did.

    Leaves that a newer clar-ray added (absent from the run's ``config.yaml``) are ignored.

    Raises:
        ConfigError: naming the first leaf that differs, both values and what may change.
    """
    path = run_file(run_dir, CONFIG_FILE)
    if not storage.exists(path):
        raise FileNotFoundError(f"--resume: {run_dir} has no {CONFIG_FILE}")
    try:
        old = dict(_leaves(yaml.safe_load(storage.read_text(path)) or {}))
    except yaml.YAMLError as err:
        raise ConfigError(f"--resume: {path} is not valid YAML ({err})") from None
    for dotted, value in _leaves(job.to_dict()):
        if dotted in old and old[dotted] != value and not _resumable(dotted):
            allowed = ", ".join(k + "*" if k.endswith(".") else k for k in RESUMABLE)
            raise ConfigError(
                f"--resume: {run_dir} was trained with {dotted}={old[dotted]!r}, this job has "
                f"{dotted}={value!r}; on --resume only {allowed} may change: restore "
                f"{dotted} or start a new run (another --out, or --overwrite)")
