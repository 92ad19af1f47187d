"""The command line and its console: help, --version, the epoch line, the Tune table, and the
quickstart run as a user runs it (from another directory, its lines counted).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_evaluate import read_scalars

from clar_ray import __version__, console
from clar_ray.cli import COMMANDS, _parser, main
from clar_ray.tune_table import format_table

# ------------------------------------------------------------------ help and version


def test_version_and_defaults_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"clar-ray {__version__}"
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "target rate in Hz (default: 16000)" in text
    assert "(default: None)" not in text and "(default: False)" not in text


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_with_a_default_shows_it_in_help(
        command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    subparsers = next(a for a in _parser()._actions if a.choices and command in a.choices)
    shown = 0
    for action in subparsers.choices[command]._actions:
        if action.default in (None, False, [], argparse.SUPPRESS) or not action.help:
            continue
        assert f"(default: {action.default})" in text, (command, action.dest)
        shown += 1
    assert "(default: None)" not in text and "(default: False)" not in text
    assert shown or command not in ("prepare", "quickstart")  # those have defaults


def test_set_before_the_job_leaves_the_job_alone() -> None:
    from clar_ray.cli import _claim_job

    args = _parser().parse_args(["train", "--set", "train.epochs=3", "a=1", "job.yaml",
                                 "--out", "x"])
    _claim_job(args)
    assert args.job == "job.yaml" and args.overrides == ["train.epochs=3", "a=1"]


def test_an_installed_package_finds_its_quickstart_job_from_any_folder(tmp_path: Path) -> None:
    """setuptools copies jobs/*.yaml into the package (what a wheel holds), and it is found."""
    repo = Path(__file__).resolve().parents[1]
    source, built = tmp_path / "source", tmp_path / "site"  # a clean copy: no old egg-info
    shutil.copytree(repo / "clar_ray", source / "clar_ray", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(repo / "jobs", source / "jobs")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, source / name)
    subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q",
                    "build_py", "--build-lib", str(built)], cwd=source, check=True,
                   capture_output=True, timeout=120)
    assert not (built / "clar_ray" / "jobs").is_symlink()
    assert sorted(p.name for p in (built / "clar_ray" / "jobs").glob("*.yaml")) == sorted(
        p.name for p in (repo / "jobs").glob("*.yaml"))
    done = subprocess.run([sys.executable, "-c", "from clar_ray.cli import quickstart_job; "
                           "print(quickstart_job())"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(built)}, timeout=120)
    assert done.stdout.strip() == str(built / "clar_ray" / "jobs" / "quickstart.yaml"), done


# ------------------------------------------------------------------ the epoch line


def test_epoch_line_has_loss_parts_accuracy_rate_and_eta() -> None:
    record = {"epoch": 1, "step": 14, "loss": 7.25, "nt_xent": 3.954, "cross_entropy": 3.296,
              "acc": 0.391, "lr": 0.2333, "views_per_s": 46.2, "epoch_seconds": 14.0,
              "linear_top1": 0.758, "knn_top1": 0.7}
    line = console.format_epoch(record, total=4, elapsed=65.0, seconds_per_epoch=14.0)
    assert line == ("epoch 2/4  loss 7.250 (cross_entropy 3.296 nt_xent 3.954)  labelled acc "
                    "0.391  lr 0.233  46 views/s  1:05 ETA 0:28  probe linear 0.758 kNN 0.700")


def test_follower_prints_each_epoch_once_and_skips_resumed_ones() -> None:
    lines: list[str] = []
    records = [{"epoch": e, "loss": 1.0, "lr": 0.1, "views_per_s": 10.0, "epoch_seconds": 2.0}
               for e in range(4)]
    text = {"value": "".join(json.dumps(r) + "\n" for r in records[:2])}
    out = io.StringIO()
    follower = console.EpochFollower("m.jsonl", 4, done_before=1, out=out,
                                     read=lambda _path: text["value"])
    follower.poll()
    follower.poll()
    text["value"] += json.dumps(records[2]) + "\n" + '{"epoch": 3, "lo'  # being written
    follower.poll()
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["2/4", "3/4"]
    assert lines[-1].endswith("ETA 0:02")


# ------------------------------------------------------------------ errors


def test_root_cause_sees_through_rays_wrappers() -> None:
    class WorkerGroupError(RuntimeError):
        def __init__(self, failures: dict) -> None:
            super().__init__("Training failed due to worker errors:\n[Rank 0]\nTraceback ...")
            self.worker_failures = failures

    inner = OSError("Parquet magic bytes not found in footer of /d/train/part-1.parquet")
    line, user = console.error_line(WorkerGroupError({0: inner}))
    assert line == "OSError: Parquet magic bytes not found in footer of /d/train/part-1.parquet"
    assert not user


def test_raylet_warnings_stay_off_the_console_unless_verbose(
        capsys: pytest.CaptureFixture[str]) -> None:
    from ray._private import worker as ray_worker

    warning = ("WARNING: 8 PYTHON worker processes have been started on node: 1cc6 with "
               "address: 10.0.0.1, which is 4x the maximum expected startup concurrency (2).")
    error = "The node with node id: 1cc6 has been marked dead because the detector has missed"

    def publish(*lines: str) -> str:  # as Ray's listen_error_messages thread does
        ray_worker.print_to_stdstream({"lines": list(lines), "pid": "raylet", "is_err": False},
                                      ignore_prefix=False)
        return capsys.readouterr().out

    try:
        console.quiet_ray(False)
        console._drop_raylet_warnings()
        assert publish(warning) == ""
        out = publish(warning, error)
        assert error in out and warning not in out
        console.quiet_ray(True)
        assert warning in publish(warning)
    finally:
        console.quiet_ray(False)


# ------------------------------------------------------------------ the tune table


def test_tune_table_shows_varied_values_state_and_linear_top1() -> None:
    rows = [{"trial": "001_fade+time_shift", "params": {"augment.sequence": ["fade",
                                                                             "time_shift"]},
             "state": "RUNNING", "epoch": None, "linear_top1": None},
            {"trial": "000_fade", "params": {"augment.sequence": ["fade"]},
             "state": "TERMINATED", "epoch": 2, "linear_top1": 0.41234}]
    table = format_table(rows, ["augment.sequence"]).splitlines()
    assert table[0].split() == ["trial", "augment.sequence", "state", "epoch", "linear_top1"]
    assert table[1].split() == ["001_fade+time_shift", "fade+time_shift", "RUNNING", "-", "-"]
    assert table[2].split() == ["000_fade", "fade", "TERMINATED", "2", "0.412"]


def test_tune_table_is_printed_only_when_something_changed() -> None:
    from types import SimpleNamespace

    from clar_ray.tune_table import TrialTable

    def trial(status: str, result: dict | None = None) -> SimpleNamespace:
        return SimpleNamespace(config={"trial": {"name": "000_fade",
                                                 "params": {"augment.sequence": ["fade"]}}},
                               status=status, last_result=result)

    out = io.StringIO()
    table = TrialTable(["augment.sequence"], out=out)
    shown = []
    for step, done in [(trial("RUNNING"), False), (trial("RUNNING"), False),
                       (trial("RUNNING", {"epoch": 0, "linear_top1": 0.5}), False),
                       (trial("TERMINATED", {"epoch": 1, "linear_top1": 0.5,
                                             "trial_status": "finished"}), True),
                       (trial("TERMINATED", {"epoch": 1, "linear_top1": 0.5,
                                             "trial_status": "finished"}), True)]:
        if table.should_report([step], done):
            table.report([step], done)
            shown.append(out.getvalue().splitlines()[-1].split())
    assert shown == [["000_fade", "fade", "RUNNING", "-", "-"],
                     ["000_fade", "fade", "RUNNING", "1", "0.500"],
                     ["000_fade", "fade", "TERMINATED", "1", "0.500"]]


# ------------------------------------------------------------------ the quickstart


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """`clar-ray quickstart` (2 epochs, narrower) run from a folder that is not the checkout."""
    cwd = tmp_path_factory.mktemp("elsewhere")
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONWARNINGS": ""}
    command = [sys.executable, "-m", "clar_ray.cli", "quickstart", "--out", "qs",
               "--set", "train.epochs=2 model.width=8"]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return cwd / "qs", (done.stdout + done.stderr).splitlines()


def test_quickstart_prints_under_30_lines_one_per_epoch(quickstart: tuple[Path, list[str]]
                                                         ) -> None:
    _, lines = quickstart
    assert len(lines) < 30, "\n".join(lines)
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"], "\n".join(lines)
    assert "probe linear" in epochs[-1]
    noise = re.compile(r"Traceback|\bINFO\b|\bWARN(ING)?\b|Warning|\(raylet\)")
    assert not any(noise.search(line) for line in lines), "\n".join(lines)


def test_quickstart_probes_once_and_tensorboard_steps_agree(
        quickstart: tuple[Path, list[str]]) -> None:
    run = quickstart[0] / "run"
    result = json.loads((run / "result.json").read_text())
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert result["source"] == "training"  # not probed a second time by evaluate_run
    assert result["linear_top1"] == last["linear_top1"] and result["epoch"] == 2
    scalars = read_scalars(run / "tensorboard")
    assert [step for step, _ in scalars["epoch/loss"]] == [0, 1]
    assert [step for step, _ in scalars["eval/linear_top1"]] == [1]  # the last epoch's index
    assert all(lr > 0 for _, lr in scalars["epoch/lr"]), scalars["epoch/lr"]


@pytest.mark.skipif(shutil.which("tensorboard") is None,
                    reason="tensorboard is not installed (pip install 'clar-ray[tensorboard]')")
def test_the_printed_tensorboard_command_reads_the_run(quickstart: tuple[Path, list[str]]
                                                       ) -> None:
    out, lines = quickstart
    (printed,) = [line for line in lines if "tensorboard --logdir" in line]
    command = printed.split("tensorboard: ", 1)[1].split()
    done = subprocess.run([*command, "--inspect"], capture_output=True, text=True, timeout=120)
    assert "epoch/loss" in done.stdout + done.stderr, done.stdout + done.stderr
