"""Shared fixtures and the opt-in markers: ``--runslow`` for long tests, ``--rungpu`` for CUDA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clar_ray.config import JobConfig

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Every Ray the suite starts runs without token auth, as the one-machine multi-node cluster's
# nodes do: a test process whose earlier local Ray had turned token auth on (Ray 2.60's default)
# refuses the calls of those nodes' workers to it (OwnerDiedError when they fetch its objects).
# tests/test_cluster.py turns token auth on for its own head; test_local_cluster runs in a
# fresh process with Ray's default.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# The tests' subprocesses (`python -m clar_ray.cli` run from a scratch folder, Ray's workers)
# import this checkout's clar_ray, not whichever copy `pip install -e` last pointed at.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)

#: The real datasets beside the project (absent on a user's machine: tests then skip).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")
    parser.addoption("--rungpu", action="store_true", help="run tests that need CUDA")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    skip_gpu = pytest.mark.skip(reason="needs a GPU: run with --rungpu")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not config.getoption("--rungpu"):
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared datasets folder, or a skip with the reason."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared datasets are not beside the project ({SHARED_DATA} is absent)")
    return SHARED_DATA


def tiny_job(data: str, *overrides: str) -> JobConfig:
    """A raw-audio job small enough for a few seconds per epoch on two cores (2 epochs)."""
    return JobConfig().replace([
        f"data.path={data}", "model.frontend=raw", "model.encoder=resnet18_1d", "model.width=4",
        "model.hidden_dim=16", "model.projection_dim=8", "augment.sequence=[time_shift]",
        "train.batch_size=8", "train.epochs=2", "optim.warmup_epochs=0", "optim.name=sgd",
        "optim.lr=0.05", "optim.reference_batch=8", "eval.probe_epochs=20", *overrides])
