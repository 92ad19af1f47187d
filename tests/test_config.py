from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from clar_ray.augment.placement import ON_DEVICE_CHOICES
from clar_ray.augment.presets import PRESETS
from clar_ray.config import (
    AugmentConfig,
    ConfigError,
    JobConfig,
    apply_overrides,
    dump_job,
    load_job,
    parse_overrides,
)

JOBS = sorted((Path(__file__).resolve().parents[1] / "jobs").glob("*.yaml"))
TRAIN_JOBS = [path for path in JOBS if "grid" not in yaml.safe_load(path.read_text())
              and "study" not in yaml.safe_load(path.read_text())]


def test_defaults_round_trip_through_plain_dict() -> None:
    config = JobConfig()
    plain = config.to_dict()
    assert isinstance(plain["augment"]["sequence"], list)
    assert JobConfig.from_dict(plain) == config


def test_required_leaves_exist() -> None:
    plain = JobConfig().to_dict()
    for dotted in ["data.path", "data.label_fraction", "augment.sequence", "model.frontend",
                   "model.encoder", "model.width", "objective.name", "train.epochs",
                   "train.batch_size", "train.workers", "train.use_gpu", "train.seed",
                   "eval.every_epochs"]:
        section, leaf = dotted.split(".")
        assert leaf in plain[section], dotted


@pytest.mark.parametrize(("raw", "message"), [
    ({"trian": {}}, "trian: unknown key; allowed in job: augment, data"),
    ({"train": {"epoch": 3}}, "train.epoch: unknown key; allowed in train:"),
    ({"train": {"epochs": "three"}}, "train.epochs: expected an integer, got 'three'"),
    ({"train": {"epochs": 0}}, "train.epochs: must be > 0, got 0"),
    ({"train": {"use_gpu": "yes"}}, "train.use_gpu: expected true or false"),
    ({"data": {"label_fraction": 1.5}}, "data.label_fraction: must be in (0, 1], got 1.5"),
    ({"model": {"frontend": "cqt"}}, "model.frontend: must be one of 'raw', 'tf3', got 'cqt'"),
    ({"model": {"frontend": "raw"}}, "frontend 'raw' needs encoder 'resnet18_1d'"),
    ({"objective": {"name": "byol"}}, "objective.name: must be one of 'supervised'"),
    ({"augment": {"sequence": ["fade", "reverb"]}}, "unknown augmentation 'reverb'"),
    ({"augment": {"sequence": "fade"}}, "augment.sequence: expected a list"),
    ({"train": {"batch_size": 10, "workers": 3}}, "must be divisible by train.workers=3"),
    ({"objective": {"name": "slicer"}, "model": {"frontend": "raw", "encoder": "resnet18_1d"}},
     "objective.kmix: k-mix mixes log-power spectrograms and needs model.frontend=tf3"),
])
def test_bad_config_names_the_key(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        JobConfig.from_dict(raw)
    assert message in str(err.value)


def test_ints_are_accepted_for_floats_but_bools_are_not_ints() -> None:
    assert JobConfig.from_dict({"data": {"label_fraction": 1}}).data.label_fraction == 1.0
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        JobConfig.from_dict({"train": {"epochs": True}})


def test_overrides_parse_yaml_values_and_several_pairs_per_flag() -> None:
    parsed = parse_overrides(["train.epochs=3 model.width=16",
                              "augment.sequence=[fade, time_shift]", "train.use_gpu=true"])
    assert parsed == {"train.epochs": 3, "model.width": 16,
                      "augment.sequence": ["fade", "time_shift"], "train.use_gpu": True}
    config = JobConfig().replace(["train.epochs=3 model.width=16",
                                  "augment.params={fade: {p: 0.5}}"])
    assert config.train.epochs == 3 and config.model.width == 16
    assert config.augment.params == {"fade": {"p": 0.5}}


def test_override_of_unknown_leaf_fails() -> None:
    with pytest.raises(ConfigError, match="train.epohcs: unknown key"):
        JobConfig().replace(["train.epohcs=3"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_overrides(["train.epochs"])


def test_override_cannot_descend_into_a_value() -> None:
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])


def test_load_and_dump_round_trip(tmp_path: Path) -> None:
    config = JobConfig().replace(["name=roundtrip", "objective.name=simclr"])
    path = tmp_path / "job.yaml"
    dump_job(config, str(path))
    assert load_job(path) == config


def test_load_job_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: -1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: train.epochs: must be > 0"):
        load_job(path)


@pytest.mark.parametrize("path", TRAIN_JOBS, ids=lambda p: p.name)
def test_every_training_job_in_jobs_loads(path: Path) -> None:
    load_job(path)


def _allowed(tp: Any) -> set[Any]:
    """The values a field type allows: a Literal's, both bools, or a union of those."""
    if typing.get_origin(tp) is Literal:
        return set(typing.get_args(tp))
    if tp is bool:
        return {False, True}
    return set().union(*(_allowed(arg) for arg in typing.get_args(tp)))


@pytest.mark.parametrize(("leaf", "values"), [("preset", PRESETS),
                                              ("on_device", ON_DEVICE_CHOICES)])
def test_augment_choices_are_the_augment_packages(leaf: str, values: tuple[Any, ...]) -> None:
    assert _allowed(typing.get_type_hints(AugmentConfig)[leaf]) == set(values)
    for value in values:
        assert getattr(JobConfig.from_dict({"augment": {leaf: value}}).augment, leaf) == value
    with pytest.raises(ConfigError, match=f"augment.{leaf}"):
        JobConfig.from_dict({"augment": {leaf: "nope"}})


def test_with_absolute_data_resolves_relative_local_paths_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray Train's workers and Tune's trials run elsewhere: data/fsdd must name one folder."""
    monkeypatch.chdir(tmp_path)
    relative = JobConfig().replace(["data.path=data/fsdd"]).with_absolute_data()
    assert relative.data.path == str(tmp_path / "data" / "fsdd")
    for kept in ("", "/srv/fsdd", "s3://bucket/fsdd"):
        job = JobConfig().replace([f"data.path={kept!r}"])
        assert job.with_absolute_data().data.path == kept


def test_run_training_gives_its_workers_an_absolute_data_path(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python API resolves a relative data.path before anything starts, as the CLI does."""
    from clar_ray import train

    seen: list[str] = []

    def stop_at_start(job: JobConfig, *args: object, **kwargs: object) -> None:
        seen.append(job.data.path)
        raise RuntimeError("stopped before Ray")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train, "_start_run", stop_at_start)
    with pytest.raises(RuntimeError, match="stopped before Ray"):
        train.run_training(JobConfig().replace(["data.path=data/fsdd"]), str(tmp_path / "run"))
    assert seen == [str(tmp_path / "data" / "fsdd")]
