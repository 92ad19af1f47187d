"""The local plan's memory estimate holds: a real training worker's peak stays under it.

``clar-ray train`` runs one epoch in a subprocess while this test polls its process tree; the
peak resident set (``VmHWM``) of the Ray Train worker must stay under
:func:`clar_ray.preflight.worker_bytes` of the same job, and the augmentation actor's under
:data:`clar_ray.preflight.ACTOR_BYTES`. Two cases bound the calibration: tf3 + ResNet18-2D with
the probe in training, and raw audio + ResNet18-1D (the tightest, ~10 % under). About a minute
each on two cores: ``--runslow``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray  # noqa: F401  (before psutil)

from clar_ray.config import load_job
from clar_ray.data.manifest import Manifest
from clar_ray.preflight import ACTOR_BYTES, worker_bytes

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "jobs" / "quickstart.yaml"

pytestmark = pytest.mark.slow


def _peak_bytes(pid: int) -> int:
    """The peak resident set of a process (``VmHWM``), 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _watch(command: list[str]) -> tuple[subprocess.CompletedProcess[str], dict[str, int]]:
    """Run ``command``; the highest peak resident set of its processes, by role."""
    import psutil  # after ray, which puts its own on the path where psutil is not installed

    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    peaks = {"worker": 0, "actor": 0}
    root = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            children = root.children(recursive=True)
        except psutil.NoSuchProcess:
            break
        for child in children:
            try:
                title = " ".join(child.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            role = ("worker" if "RayTrainWorker" in title
                    else "actor" if "AugmentViews" in title else None)
            if role:
                peaks[role] = max(peaks[role], _peak_bytes(child.pid))
        time.sleep(0.2)
    out = process.stdout.read() if process.stdout else ""
    return subprocess.CompletedProcess(command, process.returncode, out), peaks


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> str:
    from clar_ray.data.prepare import prepare_dataset

    path = str(tmp_path_factory.mktemp("memory") / "data")
    prepare_dataset("synthetic", path, options={"clips_per_class": "40"}, progress=False)
    return path


@pytest.mark.parametrize("overrides", [
    ("train.batch_size=64", "eval.every_epochs=1"),
    ("train.batch_size=64", "model.frontend=raw", "model.encoder=resnet18_1d"),
], ids=["tf3-probe", "raw"])
def test_a_real_workers_peak_stays_under_the_estimate(data: str, tmp_path: Path,
                                                      overrides: tuple[str, ...]) -> None:
    sets = [f"data.path={data}", "train.epochs=1", *overrides]
    command = [sys.executable, "-m", "clar_ray.cli", "train", str(QUICKSTART), "--out",
               str(tmp_path / "run"), "--no-eval", "--set", *sets]
    started = time.monotonic()
    done, peaks = _watch(command)
    assert done.returncode == 0, done.stdout[-3000:]
    assert peaks["worker"] and peaks["actor"], peaks
    estimate = worker_bytes(load_job(QUICKSTART, sets), Manifest.read(data))
    mib = 2**20
    print(f"{'+'.join(overrides)}: worker peak {peaks['worker'] / mib:.0f} MiB, estimate "
          f"{estimate / mib:.0f} MiB; actor peak {peaks['actor'] / mib:.0f} MiB, estimate "
          f"{ACTOR_BYTES / mib:.0f} MiB ({time.monotonic() - started:.0f} s)", file=sys.stderr)
    assert peaks["worker"] < estimate, (peaks, estimate)
    assert peaks["actor"] < ACTOR_BYTES, (peaks, ACTOR_BYTES)
