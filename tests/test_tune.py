"""Studies on Ray Tune: the tune file, trial expansion, the cluster plan, and real runs.

The Ray tests share one local Ray (6 logical CPUs) and one tiny 2 × 2 augmentation-pair study:
it is started as `clar-ray tune` in a subprocess, killed once a trial has finished, resumed,
and analysed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from clar_ray import tune
from clar_ray.config import AUGMENTATION_NAMES, ConfigError, JobConfig, load_job
from clar_ray.resources import DRIVER_CPUS, TRIAL_CPUS, ResourcePlanError, plan_study
from clar_ray.study import (
    TuneSpec,
    augmentation_pairs,
    expand_trials,
    grid_params,
    input_types,
    label_fractions,
    load_tune,
    parse_tune,
    trial_name,
)

ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "jobs"

TINY = {
    "name": "tiny",
    "model": {"frontend": "raw", "encoder": "resnet18_1d", "width": 4, "hidden_dim": 16,
              "projection_dim": 8},
    "objective": {"name": "simclr"},
    "optim": {"name": "sgd", "lr": 0.05, "reference_batch": 16, "warmup_epochs": 0},
    "train": {"epochs": 1, "batch_size": 16},
    "eval": {"every_epochs": 1, "probe_epochs": 20},
}


# ------------------------------------------------------------------------ pure: expansion


def test_grid_is_the_cartesian_product_last_key_fastest() -> None:
    params = grid_params({"objective.name": ["simclr", "clar"], "train.epochs": [1, 2, 3]})
    assert len(params) == 6
    assert params[:3] == [{"objective.name": "simclr", "train.epochs": e} for e in (1, 2, 3)]
    assert params[3] == {"objective.name": "clar", "train.epochs": 1}


@pytest.mark.parametrize("grid", [{}, {"train.epochs": []}, {"train.epochs": 3}])
def test_grid_of_the_wrong_shape_fails(grid: dict) -> None:
    with pytest.raises(ConfigError, match="grid"):
        grid_params(grid)


def test_augmentation_pairs_are_ordered_with_singles_on_the_diagonal() -> None:
    names = ["fade", "time_mask", "time_shift"]
    params = augmentation_pairs(names)
    assert len(params) == 9
    sequences = [p["augment.sequence"] for p in params]
    assert sequences[0] == ["fade"] and sequences[4] == ["time_mask"]
    assert sequences[1] == ["fade", "time_mask"] and sequences[3] == ["time_mask", "fade"]
    assert len({tuple(s) for s in sequences}) == 9


def test_augmentation_pairs_reject_unknown_and_repeated_names() -> None:
    with pytest.raises(ConfigError, match="unknown augmentation 'reverb'"):
        augmentation_pairs(["fade", "reverb"])
    with pytest.raises(ConfigError, match="'fade' is listed twice"):
        augmentation_pairs(["fade", "fade"])


def test_label_fractions_are_methods_times_fractions() -> None:
    params = label_fractions(["supervised", "clar"], [1.0, 0.1, 0.01])
    assert len(params) == 6
    assert params[2] == {"objective.name": "supervised", "data.label_fraction": 0.01}
    assert params[3] == {"objective.name": "clar", "data.label_fraction": 1.0}


def test_label_free_objectives_can_train_once_for_every_fraction() -> None:
    params = label_fractions(["supervised", "simclr", "clar"], [1.0, 0.1], label_free_once=True)
    assert [(p["objective.name"], p["data.label_fraction"]) for p in params] == [
        ("supervised", 1.0), ("supervised", 0.1), ("simclr", 1.0), ("clar", 1.0), ("clar", 0.1)]
    assert len(label_fractions(["simclr"], [1.0, 0.1])) == 2  # off by default


def test_input_types_pair_each_frontend_with_its_encoder() -> None:
    params = input_types(["raw", "tf3"], [["fade"], ["time_shift", "fade"]], ["/d/a", "/d/b"])
    assert len(params) == 8
    for p in params:
        assert p["model.encoder"] == {"raw": "resnet18_1d", "tf3": "resnet18_2d"}[
            p["model.frontend"]]
    assert params[0] == {"model.frontend": "raw", "model.encoder": "resnet18_1d",
                         "augment.sequence": ["fade"], "data.path": "/d/a"}
    assert input_types(["tf3"]) == [{"model.frontend": "tf3", "model.encoder": "resnet18_2d"}]
    with pytest.raises(ConfigError, match="unknown input 'mel'"):
        input_types(["mel"])


def test_trial_names_are_unique_safe_and_readable() -> None:
    assert trial_name(3, {"augment.sequence": ["fade", "time_mask"]}) == "003_fade+time_mask"
    assert trial_name(0, {"model.frontend": "raw", "model.encoder": "resnet18_1d",
                          "data.path": "s3://b/data/sc10/"}) == "000_raw-sc10"
    assert trial_name(1, {"augment.sequence": []}) == "001_none"
    assert trial_name(12, {"x": "a b/c"}, width=4) == "0012_a_b_c"


def _spec(**raw: object) -> TuneSpec:
    return parse_tune({"base": dict(TINY), **raw}, overrides=["data.path=/data/x"])


def test_expand_validates_every_trial_and_names_the_bad_one() -> None:
    spec = _spec(grid={"model.width": [4, 0]})
    with pytest.raises(ConfigError, match=r"trial 001_0: model.width: must be > 0, got 0"):
        expand_trials(spec)
    with pytest.raises(ConfigError, match="trial 000_.*model.nope: unknown key"):
        expand_trials(_spec(grid={"model.nope": [1]}))


def test_expand_applies_base_then_set_then_cli_then_the_trial() -> None:
    spec = parse_tune({"base": dict(TINY), "set": ["train.epochs=5", "model.width=8"],
                       "grid": {"objective.name": ["simclr", "clar"]}},
                      overrides=["model.width=6", "data.path=rel/data"])
    trials = expand_trials(spec)
    assert [t.name for t in trials] == ["000_simclr", "001_clar"]
    assert [t.job.objective.name for t in trials] == ["simclr", "clar"]
    assert all(t.job.train.epochs == 5 and t.job.model.width == 6 for t in trials)
    assert trials[0].job.data.path == os.path.abspath("rel/data")
    assert trials[0].params == {"objective.name": "simclr"}


def test_an_override_of_a_varied_leaf_is_refused() -> None:
    spec = parse_tune({"base": dict(TINY), "study": {"name": "augmentation-pairs",
                                                     "augmentations": ["fade"]}},
                      overrides=["augment.sequence=[fade]"])
    with pytest.raises(ConfigError, match="augment.sequence: set by an override, but the study"):
        expand_trials(spec)


def test_num_samples_repeats_with_consecutive_seeds() -> None:
    trials = expand_trials(_spec(grid={"objective.name": ["simclr", "clar"]}, num_samples=3))
    assert len(trials) == 6
    assert [t.job.train.seed for t in trials] == [0, 1, 2, 0, 1, 2]
    assert trials[1].name == "001_simclr-seed1"
    assert len({t.name for t in trials}) == 6
    with pytest.raises(ConfigError, match="do not also vary train.seed"):
        expand_trials(_spec(grid={"train.seed": [1, 2]}, num_samples=2))


@pytest.mark.parametrize(("raw", "message"), [
    ({"grid": {"train.epochs": [1]}, "gird": 1}, "unknown key 'gird'; allowed: base, set"),
    ({}, "give exactly one of 'grid' and 'study'"),
    ({"grid": {"train.epochs": [1]}, "study": "label-fractions"}, "exactly one"),
    ({"study": {"name": "augmentation-triples"}}, "unknown study 'augmentation-triples'"),
    ({"study": {"name": "label-fractions", "method": ["clar"]}},
     "study.method: unknown parameter of study 'label-fractions'; allowed: methods, "
     "fractions, label_free_once"),
    ({"study": "label-fractions", "num_samples": 0}, "num_samples must be an integer >= 1"),
    ({"study": "label-fractions", "max_concurrent_trials": "4"}, "max_concurrent_trials"),
    ({"study": "label-fractions", "set": "train.epochs=1"}, "set: expected a list"),
    ({"study": "label-fractions", "scheduler": "hyperband"}, "scheduler: expected fifo, asha"),
    ({"study": "label-fractions", "scheduler": {"name": "asha", "metric": "loss"}},
     "scheduler.metric must be one of linear_top1, knn_top1"),
    ({"study": "label-fractions", "scheduler": {"name": "asha", "patience": 3}},
     "scheduler.patience: unknown key"),
])
def test_bad_tune_files_fail_naming_the_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_tune({"base": dict(TINY), **raw})


def test_base_path_is_relative_to_the_tune_file(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    tune_file = tmp_path / "jobs" / "study.yaml"
    tune_file.write_text(yaml.safe_dump({"base": "tiny.yaml",
                                         "study": {"name": "label-fractions",
                                                   "methods": ["clar"], "fractions": [0.5]}}))
    spec = load_tune(tune_file, ["data.path=/data/x"])
    (trial,) = expand_trials(spec)
    assert trial.job.model.width == 4 and trial.job.data.label_fraction == 0.5
    tune_file.write_text(yaml.safe_dump({"base": "missing.yaml", "study": "label-fractions"}))
    with pytest.raises(ConfigError, match="base: no job file at .*missing.yaml"):
        load_tune(tune_file)


def test_asha_needs_probe_epochs() -> None:
    spec = _spec(grid={"objective.name": ["clar"]}, scheduler="asha")
    assert expand_trials(spec)[0].job.eval.every_epochs == 1
    with pytest.raises(ConfigError, match="scheduler asha .* eval.every_epochs is 0"):
        expand_trials(parse_tune({"base": dict(TINY), "grid": {"eval.every_epochs": [0]},
                                  "scheduler": "asha"}, overrides=["data.path=/x"]))


def test_resolved_spec_reads_back_to_the_same_trials() -> None:
    spec = _spec(study={"name": "augmentation-pairs", "augmentations": ["fade", "time_shift"]},
                 scheduler={"name": "asha", "grace_period": 2})
    again = parse_tune(yaml.safe_load(yaml.safe_dump(spec.to_dict())))
    assert again == spec
    assert [t.job for t in expand_trials(again)] == [t.job for t in expand_trials(spec)]


@pytest.mark.parametrize(("name", "count"), [("augmentation-pairs", 49), ("label-fractions", 12),
                                             ("input-types", 4)])
def test_shipped_study_jobs_expand_into_valid_trials(name: str, count: int) -> None:
    trials = expand_trials(load_tune(JOBS / f"study-{name}.yaml", ["data.path=/data/sc10"]))
    assert len(trials) == count
    assert len({t.name for t in trials}) == count
    if name == "augmentation-pairs":
        assert {t.job.augment.sequence for t in trials} >= {(a,) for a in AUGMENTATION_NAMES}
        assert {(t.job.model.frontend, t.job.objective.name) for t in trials} == {
            ("tf3", "simclr")}


# ------------------------------------------------------------------------ pure: resources


def _job(*overrides: str) -> JobConfig:
    return JobConfig().replace(["model.frontend=raw", "model.encoder=resnet18_1d", *overrides])


def test_concurrency_is_what_fits_and_actors_share_the_rest() -> None:
    jobs = [_job()] * 5
    plan = plan_study(jobs, cluster_cpus=10, cluster_gpus=0)
    assert plan.concurrency == 4  # (10 - 1 headroom) // (1 worker + 1 actor + 0.01)
    busy = sum(p.workers * p.cpus_per_worker + p.actors * p.cpus_per_actor + TRIAL_CPUS
               for p in plan.plans[:plan.concurrency])
    assert busy <= 10 - DRIVER_CPUS
    assert all(p.actors == 1 for p in plan.plans)
    wide = plan_study(jobs[:2], cluster_cpus=10, cluster_gpus=0)
    assert wide.concurrency == 2 and wide.plans[0].actors == 3  # 4.5 each: 1 worker + 3 actors


def test_concurrency_never_exceeds_the_limit_the_gpus_or_the_trials() -> None:
    jobs = [_job("train.use_gpu=true", "train.workers=2", "train.batch_size=256")] * 8
    assert plan_study(jobs, cluster_cpus=64, cluster_gpus=5).concurrency == 2
    assert plan_study(jobs, cluster_cpus=64, cluster_gpus=8, max_concurrent=3).concurrency == 3
    assert plan_study(jobs[:1], cluster_cpus=64, cluster_gpus=8).concurrency == 1


def test_fixed_actors_are_kept() -> None:
    plan = plan_study([_job("augment.actors=3")] * 3, cluster_cpus=14, cluster_gpus=0)
    assert [p.actors for p in plan.plans] == [3, 3, 3]
    assert plan.concurrency == 3  # 3 × (1 + 3 + 0.01) + 1 headroom <= 14
    assert plan_study([_job("augment.actors=3")] * 3, cluster_cpus=13,
                      cluster_gpus=0).concurrency == 2


@pytest.mark.parametrize(("overrides", "cpus", "gpus", "message"), [
    (("train.workers=8", "train.batch_size=256"), 6, 0, "the cluster has"),
    (("augment.actors=6",), 6, 0, "the cluster has"),
    (("train.use_gpu=true",), 16, 0, "needs 1 GPU"),
])
def test_a_trial_that_cannot_fit_fails_with_what_is_missing(overrides: tuple[str, ...],
                                                            cpus: float, gpus: float,
                                                            message: str) -> None:
    with pytest.raises(ResourcePlanError, match=f"a trial does not fit the cluster.*{message}"):
        plan_study([_job(), _job(*overrides)], cluster_cpus=cpus, cluster_gpus=gpus)


# ------------------------------------------------------------------------ on a real Ray


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A local Ray (6 logical CPUs: two tiny trials at once) and a synthetic dataset."""
    import ray

    from clar_ray.data.prepare import prepare_dataset

    ray.init(num_cpus=6, include_dashboard=False, log_to_driver=False)
    root = tmp_path_factory.mktemp("tune")
    data = str(root / "data")
    prepare_dataset("synthetic", data, options={"clips_per_class": "8", "num_classes": "3"},
                    progress=False)
    tune_file = root / "tiny-pairs.yaml"
    tune_file.write_text(yaml.safe_dump({
        "base": {**TINY, "data": {"path": data}},
        "study": {"name": "augmentation-pairs", "augmentations": ["fade", "time_shift"]},
    }))
    yield {"root": str(root), "data": data, "tune_file": str(tune_file),
           "address": ray.get_runtime_context().gcs_address}
    ray.shutdown()


def _results(experiment: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime for p in experiment.glob("runs/*/result.json")}


def _events(experiment: Path, name: str) -> list[str]:
    return [e["event"] for e in tune.read_events(str(experiment), name)]


@pytest.fixture(scope="module")
def experiment(cluster: dict[str, str]) -> Path:
    """The tiny study: run by `clar-ray tune`, killed after its first trial, then resumed."""
    out = Path(cluster["root"]) / "experiment"
    with (Path(cluster["root"]) / "tune.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "clar_ray.cli", "tune", cluster["tune_file"], "--out",
             str(out), "--address", cluster["address"]],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while not _results(out) and time.monotonic() < deadline:
            assert process.poll() is None, "clar-ray tune ended before any trial finished"
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    before = _results(out)
    assert before, "no trial finished within 300 s"
    assert len(before) < 4, "every trial finished before the interruption: nothing to resume"
    with pytest.raises(FileExistsError, match="--resume"):
        tune.run_study(cluster["tune_file"], str(out))
    tune.run_study(cluster["tune_file"], str(out), resume=True)
    after = _results(out)
    for name, mtime in before.items():
        assert after[name] == mtime, f"{name} finished before the interruption but ran again"
    return out


def test_interrupted_study_resumes_and_runs_each_training_once(experiment: Path) -> None:
    trials = json.loads((experiment / "trials.json").read_text())["trials"]
    names = [t["name"] for t in trials]
    assert names == ["000_fade", "001_fade+time_shift", "002_time_shift+fade", "003_time_shift"]
    for name in names:
        run = experiment / "runs" / name
        assert (run / "result.json").is_file(), name
        events = _events(experiment, name)
        assert events.count("finished") == 1, (name, events)
        assert events[0] == "start" and "failed" not in events, (name, events)
        job = load_job(run / "config.yaml")
        assert job.augment.actors == 1  # fixed by the study plan
        assert list(job.augment.sequence) == trials[names.index(name)]["params"][
            "augment.sequence"]
        epochs = [json.loads(line)["epoch"] for line in
                  (run / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [0], (name, epochs)
    status = json.loads((experiment / "tune_status.json").read_text())
    assert {s["status"] for s in status.values()} == {"finished"}


def test_clar_ray_tune_prints_its_table_not_rays_logs(cluster: dict[str, str],
                                                     experiment: Path) -> None:
    """What `clar-ray tune` printed until it was killed: its own lines and the trial table."""
    lines = [line for line in (Path(cluster["root"]) / "tune.log").read_text().splitlines()
             if line.strip()]
    header = ["trial", "augment.sequence", "state", "epoch", "linear_top1"]
    names = ["000_fade", "001_fade+time_shift", "002_time_shift+fade", "003_time_shift"]
    assert lines[0].startswith("Ray: connected to the cluster at"), lines
    assert lines[1].startswith("clar-ray tune: 4 trial(s);"), lines
    for line in lines[2:]:  # nothing but tables: a header, then a row per trial Tune knows
        words = line.split()
        assert words == header or (words[0] in names and len(words) == 5), "\n".join(lines)
    rows = [line.split() for line in lines[2:] if line.split() != header]
    assert any(r[4] != "-" and 0 <= float(r[4]) <= 1 for r in rows), "\n".join(lines)
    assert {r[1] for r in rows} <= {"fade", "fade+time_shift", "time_shift+fade", "time_shift"}


def test_resuming_a_finished_study_runs_nothing(cluster: dict[str, str],
                                                experiment: Path) -> None:
    before = _results(experiment)
    events = {n: _events(experiment, n) for n in before}
    tune.run_study(cluster["tune_file"], str(experiment), resume=True)
    assert _results(experiment) == before
    for name, old in events.items():
        new = _events(experiment, name)
        assert new[:len(old)] == old and set(new[len(old):]) <= {"skip"}, (name, new)


def test_resume_with_another_study_is_refused(cluster: dict[str, str],
                                              experiment: Path) -> None:
    with pytest.raises(ConfigError, match="--resume: trial .* differs .* train.epochs"):
        tune.run_study(cluster["tune_file"], str(experiment), resume=True,
                       overrides=["train.epochs=2"])


def test_analysis_of_the_study_draws_the_heatmap_tables_and_curves(experiment: Path,
                                                                   tmp_path: Path) -> None:
    from clar_ray.analyze import analyze_experiment

    report = Path(analyze_experiment(str(experiment), str(tmp_path / "report")))
    for name in ("augmentation_pairs.png", "augmentation_pairs.csv", "curves.png",
                 "trials.csv", "report.md"):
        assert (tmp_path / "report" / name).stat().st_size > 0, name
    rows = (tmp_path / "report" / "augmentation_pairs.csv").read_text().splitlines()
    assert rows[0] == "first \\ second,fade,time_shift,mean"
    result = json.loads((experiment / "runs" / "001_fade+time_shift" / "result.json").read_text())
    assert float(rows[1].split(",")[2]) == pytest.approx(result["linear_top1"], abs=1e-4)
    text = report.read_text()
    assert "4 finished" in text and "![augmentation pairs](augmentation_pairs.png)" in text


def test_a_study_that_cannot_fit_fails_before_any_trial(cluster: dict[str, str],
                                                        tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(ResourcePlanError, match="a trial does not fit the cluster"):
        tune.run_study(cluster["tune_file"], str(tmp_path / "exp"),
                       overrides=["train.workers=8"])
    assert time.monotonic() - started < 10
    assert not (tmp_path / "exp" / "runs").exists()


def test_a_missing_dataset_fails_before_any_trial(cluster: dict[str, str],
                                                  tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="manifest"):
        tune.run_study(cluster["tune_file"], str(tmp_path / "exp"),
                       overrides=[f"data.path={tmp_path / 'nowhere'}"])
    assert not (tmp_path / "exp").exists()
