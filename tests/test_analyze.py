"""Study analysis on hand-made run directories: figures, tables, failed and missing trials."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import yaml

from clar_ray.analyze import (
    TrialRecord,
    aggregate,
    analyze_experiment,
    cell_text,
    flatten,
    load_trials,
    markdown_table,
    pair_matrix,
    varied_leaves,
    with_means,
)
from clar_ray.config import JobConfig


def _record(name: str, metric: float | None, params: dict[str, object], *,
            status: str = "finished") -> TrialRecord:
    result = None if metric is None else {"linear_top1": metric, "knn_top1": metric / 2}
    return TrialRecord(name, status, params, result, (), None, f"/x/{name}")


# ------------------------------------------------------------------------ pure helpers


def test_flatten_gives_dotted_leaves_and_hashable_lists() -> None:
    flat = flatten({"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": {}})
    assert flat == {"a.b": 1, "a.c": (1, 2), "d": "x", "e": ()}


def test_varied_leaves_skip_the_plans_actor_count() -> None:
    configs = [{"x": 1, "augment.actors": 1, "y": "a"}, {"x": 1, "augment.actors": 3, "y": "b"}]
    assert varied_leaves(configs) == ["y"]


def test_pair_matrix_rows_are_first_columns_second_and_repeats_average() -> None:
    records = [
        _record("a", 0.5, {"augment.sequence": ("fade",)}),
        _record("b", 0.6, {"augment.sequence": ("fade", "time_mask")}),
        _record("c", 0.8, {"augment.sequence": ("fade", "time_mask")}),
        _record("d", 0.1, {"augment.sequence": ("time_mask", "fade")}),
        _record("e", None, {"augment.sequence": ("time_mask",)}, status="failed"),
    ]
    matrix = pair_matrix(records, ["fade", "time_mask"])
    np.testing.assert_allclose(matrix, [[0.5, 0.7], [0.1, np.nan]])


def test_means_skip_missing_cells() -> None:
    full = with_means(np.array([[0.2, 0.4], [0.6, np.nan]]))
    np.testing.assert_allclose(full[:, 2], [0.3, 0.6, 0.4])     # row means, overall mean
    np.testing.assert_allclose(full[2, :2], [0.4, 0.4])         # column means
    assert math.isnan(with_means(np.full((1, 1), np.nan))[1, 1])


def test_aggregate_and_cells_show_mean_std_or_why_empty() -> None:
    records = [_record("a", 0.5, {"m": "x"}), _record("b", 0.7, {"m": "x"}),
               _record("c", None, {"m": "y"}, status="failed"),
               _record("d", None, {"m": "y"}, status="pending")]
    cells = aggregate(records, ["m"])
    assert cells[("x",)]["mean"] == pytest.approx(0.6)
    assert cells[("x",)]["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert cell_text(cells[("x",)]) == "60.0 ± 14.1"
    assert cell_text(cells[("y",)]) == "failed/pending"
    assert cell_text(aggregate([_record("e", 0.25, {"m": "z"})], ["m"])[("z",)]) == "25.0"


def test_markdown_table_escapes_pipes() -> None:
    assert markdown_table(["a", "b"], [["x|y", "1"]]).splitlines() == [
        "| a | b |", "| --- | --- |", "| x\\|y | 1 |"]


# ------------------------------------------------------------------------ hand-made run dirs


def _run(root: Path, name: str, overrides: list[str], *, result: float | None = None,
         curve: Sequence[float] = (), error: str | None = None, config: bool = True) -> Path:
    run = root / name
    run.mkdir(parents=True)
    job = JobConfig().replace(["data.path=/data/sc10", *overrides])
    if config:
        (run / "config.yaml").write_text(yaml.safe_dump(job.to_dict()))
    lines = [{"epoch": e, "loss": 1.0, "linear_top1": acc, "knn_top1": acc}
             for e, acc in enumerate(curve)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if result is not None:
        (run / "result.json").write_text(json.dumps({"linear_top1": result,
                                                     "knn_top1": result - 0.1, "epoch": 3}))
    if error is not None:
        (run / "error.txt").write_text(error)
    return run


def _csv(path: Path) -> list[list[str]]:
    return list(csv.reader(path.read_text().splitlines()))


def test_methods_by_fractions_from_a_folder_of_runs_with_a_failed_one(tmp_path: Path) -> None:
    runs = tmp_path / "exp" / "runs"
    for i, (method, fraction, acc) in enumerate([("supervised", 1.0, 0.9), ("supervised", 0.1, 0.5),
                                                 ("clar", 1.0, 0.8), ("clar", 0.1, None)]):
        _run(runs, f"{i:03d}", [f"objective.name={method}", f"data.label_fraction={fraction}",
                                f"augment.actors={i + 1}"],
             result=acc, curve=[0.3, acc or 0.4],
             error=None if acc else "TrainingStopped: non-finite loss at epoch 1\ntraceback...")
    report = Path(analyze_experiment(str(tmp_path / "exp")))
    out = tmp_path / "exp" / "report"
    assert report == out / "report.md"
    table = _csv(out / "methods_fractions.csv")
    assert table == [["objective.name", "100 %", "10 %"], ["supervised", "0.9000", "0.5000"],
                     ["clar", "0.8000", ""]]
    markdown = (out / "methods_fractions.md").read_text()
    assert "| clar | 80.0 | failed |" in markdown
    text = report.read_text()
    assert "3 finished" in text and "1 failed" in text
    assert "TrainingStopped: non-finite loss at epoch 1" in text
    assert "(../runs/003/error.txt)" in text
    assert "`augment.actors`" not in text  # set by the study plan, not a study dimension
    assert (out / "curves.png").stat().st_size > 0
    per_fraction = sorted(p.name for p in out.glob("curves_*.png"))  # one figure per fraction
    assert len(per_fraction) == 2 and all(f"]({name})" in text for name in per_fraction)
    trials = _csv(out / "trials.csv")
    assert trials[0][:4] == ["trial", "status", "data.label_fraction", "objective.name"]
    assert trials[4][:2] == ["003", "failed"]
    assert not (out / "augmentation_pairs.png").exists()


def test_input_types_with_datasets_as_columns_and_a_pending_trial(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    trials = []
    for i, (frontend, data, acc) in enumerate([("raw", "/d/sc10", 0.6), ("raw", "/d/esc10", 0.3),
                                               ("tf3", "/d/sc10", 0.9), ("tf3", "/d/esc10", None)]):
        encoder = {"raw": "resnet18_1d", "tf3": "resnet18_2d"}[frontend]
        overrides = [f"model.frontend={frontend}", f"model.encoder={encoder}", f"data.path={data}"]
        params = {"model.frontend": frontend, "model.encoder": encoder, "data.path": data}
        name = f"{i:03d}_{frontend}"
        trials.append({"name": name, "params": params, "run_dir": f"runs/{name}",
                       "job": JobConfig().replace(overrides).to_dict()})
        if acc is not None:
            run = _run(exp / "runs", name, overrides, result=acc)
            (run / "config.yaml").write_text(
                yaml.safe_dump(JobConfig().replace(overrides).to_dict()))
    (exp / "trials.json").write_text(json.dumps({
        "study": "input-types", "study_params": {},
        "varied": ["model.frontend", "model.encoder", "data.path"], "trials": trials}))
    records, info = load_trials(str(exp))
    assert [r.status for r in records] == ["finished", "finished", "finished", "pending"]
    analyze_experiment(str(exp), str(tmp_path / "out"))
    assert _csv(tmp_path / "out" / "input_types.csv") == [
        ["model.frontend", "sc10", "esc10"], ["raw", "0.6000", "0.3000"],
        ["tf3", "0.9000", ""]]
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| tf3 | 90.0 | pending |" in text
    assert "| 003_tf3 | pending |" in text
    assert not (tmp_path / "out" / "curves.png").exists()  # no probe epochs


def test_augmentation_pair_heatmap_averages_repeats_in_the_studys_order(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    names = ["time_shift", "fade"]
    trials, index = [], 0
    for first in names:
        for second in names:
            sequence = [first] if first == second else [first, second]
            for seed, bump in ((0, 0.0), (1, 0.1)):
                name = f"{index:03d}"
                overrides = [f"augment.sequence=[{','.join(sequence)}]", f"train.seed={seed}"]
                acc = None if sequence == ["fade"] else 0.4 + 0.1 * len(sequence) + bump
                _run(exp / "runs", name, overrides, result=acc,
                     error=None if acc else "RuntimeError: worker died")
                trials.append({"name": name, "run_dir": f"runs/{name}", "job": {},
                               "params": {"augment.sequence": sequence, "train.seed": seed}})
                index += 1
    (exp / "trials.json").write_text(json.dumps({
        "study": "augmentation-pairs", "study_params": {"augmentations": names},
        "varied": ["augment.sequence", "train.seed"], "trials": trials}))
    analyze_experiment(str(exp))
    rows = _csv(exp / "report" / "augmentation_pairs.csv")
    assert rows[0] == ["first \\ second", "time_shift", "fade", "mean"]
    assert rows[1] == ["time_shift", "0.5500", "0.6500", "0.6000"]
    assert rows[2] == ["fade", "0.6500", "", "0.6500"]
    assert rows[3] == ["mean", "0.6000", "0.6500", "0.6167"]
    assert (exp / "report" / "augmentation_pairs.png").read_bytes()[:4] == b"\x89PNG"
    text = (exp / "report" / "report.md").read_text()
    assert "Best: time_shift → fade (65.0 %)" in text
    assert "RuntimeError: worker died" in text


def test_a_folder_of_runs_ignores_folders_that_are_not_runs(tmp_path: Path) -> None:
    _run(tmp_path, "a", ["objective.name=simclr"], result=0.5)
    _run(tmp_path, "b", ["objective.name=clar"], result=0.6)
    _run(tmp_path, "c", [], config=False, error="ValueError: data.path is empty")
    (tmp_path / "notes").mkdir()
    analyze_experiment(str(tmp_path))
    analyze_experiment(str(tmp_path))  # its own report/ folder is not a run either
    records, info = load_trials(str(tmp_path))
    assert [(r.name, r.status) for r in records] == [("a", "finished"), ("b", "finished"),
                                                     ("c", "failed")]
    assert info["varied"] == ["objective.name"]
    assert records[2].error == "ValueError: data.path is empty"


def test_no_trials_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no trials in"):
        analyze_experiment(str(tmp_path))
