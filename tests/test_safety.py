"""clar-ray never removes or changes a file it did not write, and bad input fails in one line.

The command-line tests run the real ``clar-ray`` in a subprocess and check its standard error:
one line naming the cause, within seconds (before Ray starts), the user's files unchanged and
nothing left behind that blocks a re-run. No test here starts Ray.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_evaluate import make_run, tiny_job, write_dataset

from clar_ray import artifacts, rundir
from clar_ray.config import ConfigError, dump_job
from clar_ray.embed import check_output, embedding_schema
from clar_ray.local_cluster import free_ports

#: Seconds a refusal may take: Python + torch start-up (~3 s of CPU; far longer in wall time
#: on a shared, loaded machine), never Ray's start (15-80 s) or a worker.
FAST_S = 60


def user_files(folder: Path) -> dict[str, bytes]:
    """A user's notes and a sub-folder, as found in the wild; returns their contents."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "data.bin").write_bytes(b"\x00\x01")
    return snapshot(folder)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def fake_run(run_dir: Path, job, *, trained: bool = True) -> None:
    """A run directory as `clar-ray train` leaves it (marker, config, checkpoint, events)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.mark_run(str(run_dir))
    dump_job(job, str(run_dir / artifacts.CONFIG_FILE))
    (run_dir / artifacts.PLAN_FILE).write_text("{}\n")
    (run_dir / artifacts.METRICS_FILE).write_text('{"epoch": 0, "loss": 1.0}\n')
    (run_dir / artifacts.TENSORBOARD_DIR).mkdir()
    (run_dir / artifacts.TENSORBOARD_DIR / "events.out.tfevents.1").write_bytes(b"x")
    if trained:
        (run_dir / "checkpoint_2026-01-01_00-00-00.000000").mkdir()
        (run_dir / "checkpoint_2026-01-01_00-00-00.000000" / "state.pt").write_bytes(b"x")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_dataset(tmp_path_factory.mktemp("safety") / "data", {"train": 16, "test": 6},
                         shards=2)


# ------------------------------------------------------------------ run directories


def test_overwrite_refuses_a_folder_that_is_not_a_run(data: str, tmp_path: Path) -> None:
    before = user_files(tmp_path / "mine")
    with pytest.raises(FileExistsError, match="not a clar-ray run .*notes.txt"):
        rundir.prepare_run_dir(str(tmp_path / "mine"), tiny_job(data), resume=False,
                               overwrite=True)
    assert snapshot(tmp_path / "mine") == before


def test_overwrite_removes_only_the_runs_own_files(data: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    fake_run(run_dir, tiny_job(data))
    before = user_files(run_dir)  # the user put notes beside the run
    (run_dir / "sub" / "config.yaml").write_text("mine\n")  # owned names only at the top
    before = snapshot(run_dir / "sub") | {"notes.txt": before["notes.txt"]}
    rundir.prepare_run_dir(str(run_dir), tiny_job(data), resume=False, overwrite=True)
    left = sorted(p.name for p in run_dir.iterdir())
    assert left == ["notes.txt", "sub"]
    assert snapshot(run_dir / "sub") | {"notes.txt": (run_dir / "notes.txt").read_bytes()} \
        == before


def test_a_trained_run_needs_resume_or_overwrite_but_a_failed_start_does_not(
        data: str, tmp_path: Path) -> None:
    job = tiny_job(data)
    fake_run(tmp_path / "trained", job)
    with pytest.raises(FileExistsError, match="--resume .* --overwrite"):
        rundir.check_run_dir(str(tmp_path / "trained"), job, resume=False, overwrite=False)
    fake_run(tmp_path / "failed", job, trained=False)  # stopped before its first checkpoint
    assert rundir.check_run_dir(str(tmp_path / "failed"), job, resume=False, overwrite=False)
    with pytest.raises(FileNotFoundError, match="no run to continue"):
        rundir.check_run_dir(str(tmp_path / "new"), job, resume=True, overwrite=False)


def test_resume_refuses_a_changed_model_before_touching_anything(data: str,
                                                                 tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    fake_run(run_dir, tiny_job(data))
    before = snapshot(run_dir)
    changed = tiny_job(data, model={"frontend": "raw", "encoder": "resnet18_1d", "width": 8})
    with pytest.raises(ConfigError, match=r"model.width=2, this job has model.width=8"):
        rundir.check_run_dir(str(run_dir), changed, resume=True, overwrite=False)
    assert snapshot(run_dir) == before
    longer = tiny_job(data, train={"batch_size": 8, "seed": 3, "epochs": 9},
                      eval={"probe_epochs": 50})
    assert not rundir.check_run_dir(str(run_dir), longer, resume=True, overwrite=False)


# ------------------------------------------------------------------ preflight


def test_local_plan_counts_physical_cores_and_memory(data: str) -> None:
    from clar_ray.data.manifest import Manifest
    from clar_ray.preflight import PreflightError, check_local_fit, worker_bytes

    manifest = Manifest.read(data)
    job = tiny_job(data, train={"batch_size": 64, "workers": 64})
    with pytest.raises(PreflightError, match="needs 64 CPU cores; .* 2 physical core"):
        check_local_fit(job, manifest, cores=2, free_bytes=2**40, parameters=1000)
    two = tiny_job(data, train={"batch_size": 8, "workers": 2})
    per_worker = worker_bytes(two, manifest, parameters=1000)
    check_local_fit(two, manifest, cores=2, free_bytes=4 * per_worker, parameters=1000)
    with pytest.raises(PreflightError, match="of memory; this machine has"):
        check_local_fit(two, manifest, cores=2, free_bytes=2 * per_worker, parameters=1000)
    gpu = tiny_job(data, train={"batch_size": 8, "use_gpu": True})
    with pytest.raises(PreflightError, match="train.use_gpu=false"):
        from clar_ray.preflight import check_local_gpus

        check_local_gpus(gpu, gpus=0)


def test_worker_memory_counts_the_width_the_batch_and_a_probe_in_training(data: str) -> None:
    from clar_ray.data.manifest import Manifest
    from clar_ray.preflight import (
        ACTIVATION_BYTES,
        PROBE_BYTES,
        WORKER_BASE_BYTES,
        worker_bytes,
    )

    manifest = Manifest.read(data)
    samples = manifest.clip_samples

    def need(**sections: dict) -> int:
        return worker_bytes(tiny_job(data, **sections), manifest, parameters=1000)

    base = WORKER_BASE_BYTES + 16 * 1000
    step = 8 * 2 * samples * ACTIVATION_BYTES  # batch 8, both views, per unit of width
    assert need() == base + 2 * step  # width 2
    assert need(model={"width": 8}) == base + 8 * step
    assert need(train={"batch_size": 16, "workers": 2}) == base + 2 * step  # the local batch
    probe = 16 * samples * PROBE_BYTES  # eval.batch_size 16
    assert need(eval={"every_epochs": 1}) == base + max(2 * step, probe)
    assert need(eval={"every_epochs": 1, "batch_size": 4096}) == base + 4096 * samples * PROBE_BYTES


# ------------------------------------------------------------------ embeddings


def test_embed_output_never_replaces_a_users_file_or_folder(data: str, tmp_path: Path) -> None:
    before = user_files(tmp_path / "mine")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="other files"):
            check_output(str(tmp_path / "mine"), overwrite=overwrite)
    theirs = tmp_path / "theirs.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), theirs)
    with pytest.raises(FileExistsError, match="not written by clar-ray"):
        check_output(str(theirs), overwrite=True)
    ours = tmp_path / "ours.parquet"
    pq.write_table(embedding_schema(4).empty_table(), ours)
    with pytest.raises(FileExistsError, match="--overwrite"):
        check_output(str(ours))
    check_output(str(ours), overwrite=True)
    check_output(str(tmp_path / "new-folder"))
    assert snapshot(tmp_path / "mine") == before


# ------------------------------------------------------------------ the command line


def clar_ray(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "RAY_ADDRESS": ""}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "clar_ray.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    return done, time.monotonic() - started


def one_line(done: subprocess.CompletedProcess, *needles: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert done.returncode in (1, 2), (done.returncode, done.stderr)
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    return lines[0]


def job_file(folder: Path, data: str, *lines: str) -> Path:
    path = folder / "job.yaml"
    dump_job(tiny_job(data), str(path))
    if lines:
        path.write_text(path.read_text() + "".join(line + "\n" for line in lines))
    return path


def test_cli_overwrite_of_a_users_folder_fails_in_one_line(data: str, tmp_path: Path) -> None:
    before = user_files(tmp_path / "mine")
    done, seconds = clar_ray("train", str(job_file(tmp_path, data)), "--out",
                             str(tmp_path / "mine"), "--overwrite", cwd=tmp_path)
    one_line(done, "not a clar-ray run", "notes.txt")
    assert seconds < FAST_S
    assert snapshot(tmp_path / "mine") == before


def test_cli_resume_with_a_changed_model_fails_in_one_line(data: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    fake_run(run_dir, tiny_job(data))
    before = snapshot(run_dir)
    done, seconds = clar_ray("train", str(job_file(tmp_path, data)), "--out", str(run_dir),
                             "--resume", "--set", "model.width=8", cwd=tmp_path)
    one_line(done, "--resume", "model.width=2", "model.width=8")
    assert seconds < FAST_S
    assert snapshot(run_dir) == before  # config.yaml still matches the weights


def test_cli_truncated_shard_fails_in_one_line_naming_it(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", {"train": 16, "test": 6}, shards=2)
    shard = tmp_path / "data" / "train" / "part-1.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    done, seconds = clar_ray("train", str(job_file(tmp_path, data)), "--out",
                             str(tmp_path / "run"), cwd=tmp_path)
    one_line(done, str(shard), "not a whole Parquet file", "--overwrite")
    assert seconds < FAST_S
    assert not (tmp_path / "run").exists()  # nothing that blocks the re-run


def test_cli_tune_with_a_truncated_shard_fails_in_one_line_before_ray(tmp_path: Path) -> None:
    import yaml

    data = write_dataset(tmp_path / "data", {"train": 16, "test": 6}, shards=2)
    shard = tmp_path / "data" / "test" / "part-0.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    tune_file = tmp_path / "grid.yaml"
    tune_file.write_text(yaml.safe_dump({"base": tiny_job(data).to_dict(),
                                         "grid": {"train.seed": [1, 2]}}))
    done, seconds = clar_ray("tune", str(tune_file), "--out", str(tmp_path / "exp"),
                             cwd=tmp_path)
    one_line(done, "trial ", str(shard), "not a whole Parquet file", "--overwrite")
    assert done.returncode == 2 and seconds < FAST_S
    assert not (tmp_path / "exp").exists()


def test_cli_tune_whose_trial_cannot_fit_this_machine_fails_before_ray(data: str,
                                                                       tmp_path: Path) -> None:
    import yaml

    tune_file = tmp_path / "grid.yaml"
    tune_file.write_text(yaml.safe_dump({"base": tiny_job(data).to_dict(),
                                         "grid": {"train.seed": [1, 2]}}))
    done, seconds = clar_ray("tune", str(tune_file), "--out", str(tmp_path / "exp"), "--set",
                             "train.cpus_per_worker=64", cwd=tmp_path)
    one_line(done, "trial ", "needs 64 CPU cores", "physical core")
    assert seconds < FAST_S
    assert not (tmp_path / "exp").exists()


def test_cli_plan_that_cannot_fit_this_machine_fails_before_ray(data: str,
                                                                tmp_path: Path) -> None:
    done, seconds = clar_ray("train", str(job_file(tmp_path, data)), "--out",
                             str(tmp_path / "run"), "--set", "train.workers=64",
                             "train.batch_size=64", cwd=tmp_path)
    one_line(done, "train.workers=64", "physical core", "lower train.workers")
    assert seconds < FAST_S
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("setup", "needles"), [
    ("bad-yaml", ("job.yaml: not valid YAML", "line")),
    ("bad-set", ("--set", "not valid YAML")),
    ("bad-path", ("data.path=", "no manifest.json")),
    ("set-before-job", ("data.path=",)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_cli_bad_input_fails_in_one_line(data: str, tmp_path: Path, setup: str,
                                         needles: tuple[str, ...]) -> None:
    job = job_file(tmp_path, data, *(["  oops: [unclosed"] if setup == "bad-yaml" else []))
    args = {"bad-yaml": [str(job)],
            "bad-set": [str(job), "--set", "augment.sequence=[fade"],
            "bad-path": [str(job), "--set", f"data.path={tmp_path / 'nowhere'}"],
            # --set before the job: the job is still the job (and its missing data is named)
            "set-before-job": ["--set", f"data.path={tmp_path / 'nowhere'}", str(job)]}[setup]
    done, seconds = clar_ray("train", *args, "--out", str(tmp_path / "run"), cwd=tmp_path)
    one_line(done, *needles)
    assert done.returncode == 2
    assert seconds < FAST_S
    assert not (tmp_path / "run").exists()


def test_verbose_shows_the_traceback(data: str, tmp_path: Path) -> None:
    done, _ = clar_ray("train", str(job_file(tmp_path, data)), "--out", str(tmp_path / "r"),
                       "--set", f"data.path={tmp_path / 'nowhere'}", "--verbose", cwd=tmp_path)
    assert "Traceback" in done.stderr and done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("clar-ray train: error:")


def test_cli_embed_into_a_users_folder_fails_in_one_line(data: str, tmp_path: Path) -> None:
    run_dir, _ = make_run(tmp_path / "run", tiny_job(data))
    before = user_files(tmp_path / "mine")
    done, seconds = clar_ray("embed", run_dir, "--data", data, "--out", str(tmp_path / "mine"),
                             "--overwrite", cwd=tmp_path)
    one_line(done, "other files")
    assert seconds < FAST_S
    assert snapshot(tmp_path / "mine") == before


# ------------------------------------------------------------------ reaching Ray

#: What ``ray.init`` raises (Ray 2.60, ``ray/_private/node.py``) when the raylet of a new local
#: Ray has not registered within 30 s, as on a loaded machine.
RAY_START_TIMEOUT = ("The current node timed out during startup. This could happen because some "
                     "of the raylet failed to startup or the GCS has become overloaded.")


def test_a_ray_start_time_out_ends_in_one_line_and_leaves_no_run(
        data: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import ray

    from clar_ray.cli import main

    def timed_out(*args: object, **kwargs: object) -> None:
        raise Exception(RAY_START_TIMEOUT)

    shutdowns: list[bool] = []
    monkeypatch.setattr(ray, "init", timed_out)
    monkeypatch.setattr(ray, "shutdown", lambda: shutdowns.append(True))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert not ray.is_initialized()
    job, run_dir = str(job_file(tmp_path, data)), str(tmp_path / "run")

    assert main(["train", job, "--out", run_dir, "--verbose"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and RAY_START_TIMEOUT in err
    assert err.strip().splitlines()[-1].startswith("clar-ray train: error: could not start")

    assert main(["train", job, "--out", run_dir]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    for needle in ("could not start or reach a local Ray", "timed out during startup",
                   "ray stop", "(--verbose shows the traceback)"):
        assert needle in lines[0], lines[0]
    assert shutdowns == [True, True]  # what Ray started is stopped
    assert not (tmp_path / "run").exists()  # nothing that blocks the re-run


def test_an_address_where_no_ray_answers_fails_in_one_line_within_seconds(
        data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import ray

    from clar_ray.cli import main

    assert not ray.is_initialized()
    address = f"127.0.0.1:{free_ports(1)[0]}"  # Ray itself retries it for minutes
    started = time.monotonic()
    code = main(["train", str(job_file(tmp_path, data)), "--out", str(tmp_path / "run"),
                 "--address", address])
    seconds = time.monotonic() - started
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1, lines
    assert f"could not reach the Ray cluster at {address}" in lines[0], lines[0]
    assert "ray status" in lines[0] and "--address" in lines[0], lines[0]
    assert seconds < 30, seconds
    assert not ray.is_initialized() and not (tmp_path / "run").exists()


# ------------------------------------------------------------------ --resume without a job


def test_resume_without_a_job_reads_the_runs_config_and_keeps_its_checks(
        data: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from clar_ray.cli import main

    assert main(["train", "--out", str(tmp_path / "none"), "--resume"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--resume: no run to continue" in line and "clar-ray train JOB.yaml" in line
    run_dir = tmp_path / "run"
    fake_run(run_dir, tiny_job(data))
    before = snapshot(run_dir)
    assert main(["train", "--out", str(run_dir), "--resume", "--set", "model.width=8"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "model.width=2, this job has model.width=8" in line, line
    assert snapshot(run_dir) == before


def test_the_job_api_as_ray_address_says_to_submit_the_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """README's old step 3: RAY_ADDRESS=http://localhost:8265, then clar-ray prepare."""
    import ray

    from clar_ray.cli import main

    monkeypatch.setenv("RAY_ADDRESS", "http://localhost:8265")
    assert main(["prepare", "synthetic", "--out", str(tmp_path / "data")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "http://localhost:8265 is the job API" in line and "ray job submit" in line, line
    assert not ray.is_initialized() and not (tmp_path / "data").exists()
