"""Tests of clar_ray.runlog: one TensorBoard writer, one step convention, metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_evaluate import read_scalars

from clar_ray import runlog


def test_eval_scores_sit_at_the_last_epochs_index() -> None:
    assert [runlog.epoch_step(e) for e in (0, 1, 2)] == [0, 1, 2]
    # An encoder trained 3 epochs is the one of epoch index 2, where its epoch/* points are.
    assert runlog.eval_step(3) == runlog.epoch_step(2) == 2
    assert runlog.eval_step(0) == 0


def test_run_log_writes_epoch_and_step_scalars_and_metrics(tmp_path: Path) -> None:
    run_dir = str(tmp_path)
    log = runlog.RunLog(run_dir, start_epoch=0)
    log.step({"loss": 2.0, "lr": 0.1}, step=5)
    log.epoch({"epoch": 0, "step": 5, "loss": 1.5, "lr": 0.2, "note": "text"})
    log.epoch({"epoch": 1, "step": 10, "loss": 1.0, "lr": 0.1})
    log.close()
    with runlog.Board(run_dir) as board:  # evaluation's writer, beside training's
        board.scalars("eval", {"linear_top1": 0.5}, runlog.eval_step(2))
    scalars = read_scalars(tmp_path / "tensorboard")
    assert scalars["step/loss"] == [(5, 2.0)] and scalars["step/lr"] == [(5, pytest.approx(0.1))]
    assert scalars["epoch/loss"] == [(0, 1.5), (1, 1.0)]
    assert [step for step, _ in scalars["epoch/step"]] == [0, 1]  # numbers only, not "note"
    assert "epoch/note" not in scalars and "epoch/epoch" not in scalars
    assert scalars["eval/linear_top1"] == [(1, 0.5)]
    assert [r["epoch"] for r in runlog.read_metrics(run_dir)] == [0, 1]
    assert runlog.read_metrics(run_dir)[0]["note"] == "text"


def test_a_restart_drops_the_records_of_epochs_it_runs_again(tmp_path: Path) -> None:
    run_dir = str(tmp_path)
    assert runlog.read_metrics(run_dir) == []
    lines = [{"epoch": e, "step": 4 * (e + 1), "loss": 1.0 / (e + 1)} for e in range(3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    runlog.RunLog(run_dir, start_epoch=1).close()  # restored from the checkpoint of epoch 1
    assert runlog.read_metrics(run_dir) == lines[:1]
