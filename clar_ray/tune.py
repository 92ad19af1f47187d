"""Studies: grids of training runs on Ray Tune, one Ray Train run per trial.

The tune file, its named studies and grids and the trials they expand to are
:mod:`clar_ray.study` (no Ray); how trials share the cluster is
:func:`clar_ray.resources.plan_study`; this module runs them.

Every trial's config is checked before anything starts; then the trials run as a Tune grid of
*function* trainables, each calling :func:`clar_ray.train.run_training` (Ray Train v2 cannot
be passed to ``Tuner`` directly). The experiment directory (names in :mod:`clar_ray.rundir`)
holds::

    EXPERIMENT/
      study.yaml          the tune file as resolved (base inline, every override)
      trials.json         trial names, varied leaves and their jobs
      runs/<trial>/       each trial's run directory (config.yaml, metrics.jsonl, result.json;
                          error.txt when it failed)
      events/<trial>.jsonl  start / resume / skip / finished / failed, with times
      tune_status.json    Tune's last word on every trial (written when the grid returns)
      tune_<trial>/, experiment_state-*.json, ...   Ray Tune's own state

Resources. A trial holds :data:`~clar_ray.resources.TRIAL_CPUS` CPU itself and starts a
training whose plan (:func:`clar_ray.resources.plan_resources`) holds its workers' CPUs and GPUs
and its augmentation actors; :data:`~clar_ray.resources.DRIVER_CPUS` stay free for the streams'
driver side (Ray Data's executors and coordinators). As many trials run at once as fit the
cluster (never more); a trial whose job leaves ``augment.actors`` at 0 gets a fixed number of
augmentation actors from its share of the cluster, so concurrent trainings never wait on one
another's CPUs.

Scheduler. The default is FIFO: every trial runs to the end. ``{name: asha}`` stops poor
trials early on their probe accuracy, but Ray 2.5x-2.60 do not tear down the Ray Train run of a
trial that Tune stops (ray-project/ray#54305): its placement group stays reserved and later
trials can time out waiting for CPUs. Use it only with room to spare, and re-check the cluster.

Resuming (``resume=True``) restores Tune's experiment state when there is one, and every trial
whose run directory already holds ``result.json`` is skipped, so no finished training runs
twice; an interrupted training continues from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from clar_ray import rundir, storage
from clar_ray.config import ConfigError, JobConfig
from clar_ray.resources import (
    TRIAL_CPUS,
    ensure_ray,
    plan_study,
    read_cluster,
    steps_per_epoch,
    study_local_cpus,
    with_actors,
)
from clar_ray.rundir import (
    ERROR_FILE,
    EVENTS_DIR,
    RUNS_DIR,
    STUDY_FILE,
    TRIALS_FILE,
    TUNE_STATUS_FILE,
)
from clar_ray.study import Scheduler, Trial, TuneSpec, expand_trials, load_tune, ordered_leaves

__all__ = ["read_events", "run_study", "run_trial", "trial_job"]


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
    result_path = rundir.run_file(run_dir, rundir.RESULT_FILE)
    if storage.exists(result_path):
        if "finished" not in [e["event"] for e in read_events(experiment, name)]:
            # The training wrote its result, then the study was stopped before it logged so.
            _event(experiment, name, "finished", note="result.json found after an interruption")
        _event(experiment, name, "skip")
        final = {**storage.read_json(result_path), "trial_status": "finished"}
        ray.tune.report(_scalars(final))
        return final
    error_path = rundir.run_file(run_dir, ERROR_FILE)
    if storage.exists(error_path):
        fs, inner = storage.resolve_filesystem(error_path)
        fs.delete_file(inner)
    resume = storage.exists(rundir.run_file(run_dir, rundir.CONFIG_FILE))
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


def _preflight(trials: Sequence[Trial], *, local: bool) -> None:
    """Fail before Ray starts if a trial's dataset is missing, damaged or too small (one line).

    Each dataset is checked once (:func:`clar_ray.preflight.check_data`: the manifest and every
    shard's footer), so a truncated shard stops the study here, not inside every trial. On a
    ``local`` machine each distinct trial shape must also fit its physical cores and memory
    (:func:`clar_ray.preflight.check_local_fit`), as one ``clar-ray train`` must.
    """
    from clar_ray import preflight

    manifests: dict[tuple[str, str, str], Any] = {}
    shapes: set[str] = set()
    for trial in trials:
        data = trial.job.data
        key = (data.path, data.train_split, data.eval_split)
        try:
            if key not in manifests:
                manifests[key] = preflight.check_data(trial.job)
            rows = manifests[key].split(data.train_split).rows
            steps_per_epoch(rows, trial.job.train.batch_size, trial.job.train.workers)
            shape = json.dumps({**trial.job.to_dict(), "augment": trial.job.augment.actors},
                               sort_keys=True, default=str)
            if local and shape not in shapes:
                shapes.add(shape)
                preflight.check_local_fit(trial.job, manifests[key])
        except (KeyError, ValueError) as err:
            raise ValueError(f"trial {trial.name}: {err}") from None


def _trials_record(spec: TuneSpec, trials: Sequence[Trial],
                   jobs: Sequence[JobConfig] | None = None) -> dict[str, Any]:
    return {
        "study": spec.study or "grid",
        "study_params": spec.study_params,
        "varied": ordered_leaves([t.params for t in trials]),
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
    spec = load_tune(job_path, overrides)
    trials = expand_trials(spec)  # each job's data.path absolute: trials run elsewhere
    experiment = storage.absolute(out).rstrip("/")
    trials_path = storage.join_uri(experiment, TRIALS_FILE)
    _check_experiment(experiment, _trials_record(spec, trials), resume=resume)
    import ray

    _preflight(trials, local=not (ray.is_initialized() or address
                                  or os.environ.get("RAY_ADDRESS")))

    jobs = [t.job for t in trials]
    ensure_ray(jobs[0], address,
               num_cpus=study_local_cpus(jobs, spec.max_concurrent_trials))
    cluster = read_cluster()
    plan = plan_study(jobs, cluster_cpus=cluster.cpus, cluster_gpus=cluster.gpus,
                      node_resources=cluster.nodes, max_concurrent=spec.max_concurrent_trials)
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
    tuner = _tuner(experiment, specs, ordered_leaves([t.params for t in trials]),
                   concurrency=plan.concurrency, scheduler=spec.scheduler, resume=resume)
    results = tuner.fit()
    status = _tune_status(results, specs)
    storage.write_json(storage.join_uri(experiment, TUNE_STATUS_FILE), status)
    counts: dict[str, int] = {}
    for entry in status.values():
        counts[entry["status"]] = counts.get(entry["status"], 0) + 1
    print("clar-ray tune: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + f" (of {len(specs)})")
    return experiment


def _check_experiment(experiment: str, record: Mapping[str, Any], *, resume: bool) -> None:
    """Refuse to start over an experiment, or to resume one that is missing or differs."""
    trials_path = storage.join_uri(experiment, TRIALS_FILE)
    if resume:
        if not storage.exists(trials_path):
            raise FileNotFoundError(f"--resume: no experiment to continue in {experiment}")
        _check_same_trials(experiment, record)
    elif storage.exists(trials_path):
        raise FileExistsError(f"{experiment} already holds an experiment: pass --resume to "
                              f"finish it, or choose another --out")


def _tuner(experiment: str, specs: Sequence[Mapping[str, Any]], leaves: Sequence[str], *,
           concurrency: int, scheduler: Scheduler, resume: bool) -> Any:
    """The Tune grid of the trials (restored from Tune's state on ``resume`` when it has one)."""
    from ray import tune

    from clar_ray.tune_table import TrialTable

    trainable = tune.with_resources(_trainable, {"CPU": TRIAL_CPUS})
    # clar-ray's table (trial, varied values, state, linear_top1) instead of Tune's; Tune
    # takes a reporter only with its legacy output.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    if resume and tune.Tuner.can_restore(experiment):
        return tune.Tuner.restore(experiment, trainable, resume_unfinished=True,
                                  resume_errored=True)
    storage_path, name = experiment.rsplit("/", 1)
    return tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(list(specs))},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=concurrency, scheduler=_scheduler(scheduler),
            trial_name_creator=_trial_name, trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(name=name, storage_path=storage_path, verbose=1,
                                  progress_reporter=TrialTable(leaves),
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )


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
        done = storage.exists(rundir.run_file(run_dir, rundir.RESULT_FILE))
        if done:
            status[spec["name"]] = {"status": "finished"}
        elif spec["name"] in errors:
            status[spec["name"]] = {"status": "failed", "error": errors[spec["name"]]}
        else:
            status[spec["name"]] = {"status": "stopped"}
    return status
