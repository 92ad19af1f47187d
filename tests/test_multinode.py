"""clar-ray on a real multi-node Ray cluster on one machine, with nodes taken away mid-run.

The cluster (:class:`clar_ray.local_cluster.LocalCluster`) is cluster.yaml's shape in small: a
head with no CPUs, a ``train`` node and two ``augment`` nodes, each a separate ``ray start``
raylet with its own CPUs, custom resources and ``clar-ray-role`` label. Jobs select their
nodes with ``train.node_labels`` / ``augment.node_labels`` as the cluster jobs in ``jobs/`` do,
and where things ran is read from Ray's state API.

What holds when an augment node dies (Ray 2.60, measured by these tests): the pool's actors are
restarted (``max_restarts=-1``) on a node that still matches the label, their unfinished calls
are retried (``max_task_retries=-1``), and blocks lost with the node's object store are rebuilt
from lineage. A view is a pure function of (seed, epoch, sample id, view), so a retried call
yields the same rows, and an ordered stream (``data.ordered``, the default) hands them on in
the planned order: with no local shuffle buffer the trainer sees exactly the planned rows,
which the test checks row by row (a local shuffle buffer mixes rows across the epoch boundary
by design, so the test turns it off). The stream's epoch clock lives on the head, which a
cluster never loses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import ray
import yaml
from conftest import tiny_job
from test_train import assert_continued
from test_tune import TINY

from clar_ray import artifacts, tune
from clar_ray.checkpoint import read_trace
from clar_ray.data.manifest import load_split
from clar_ray.data.prepare import prepare_dataset
from clar_ray.data.stream import dropped_ids
from clar_ray.local_cluster import ROLE_LABEL, LocalCluster, actor_roles
from clar_ray.train import TRACE_STEPS, run_training

# The paper's two costly augmentations in small batches keep the stream busy past a kill (with
# the cheap ones the whole run is augmented, or even trained, before the fault lands).
BUSY_STREAM = ("augment.actor_batch_size=4", "augment.sequence=[time_stretch, pitch_shift]")
ROLES = ("train.node_labels={clar-ray-role: train}", "augment.node_labels={clar-ray-role: augment}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """Head (0 CPU) + train node (2 CPU) + two augment nodes (1 CPU each), and a dataset."""
    local = LocalCluster()
    try:
        local.start_head()
        local.add_node("train-1", "train", cpus=2, resources={"clar_ray_train": 1})
        local.add_node("augment-1", "augment", cpus=1, resources={"clar_ray_augment": 1})
        local.add_node("augment-2", "augment", cpus=1, resources={"clar_ray_augment": 1})
        for attempt in (1, 2):  # a loaded 2-core machine can time out Ray's fetches between
            data = str(tmp_path_factory.mktemp("multinode") / "small")  # nodes while the data
            try:                                          # is written; the data is not under test
                prepare_dataset("synthetic", data, progress=False,
                                options={"clips_per_class": "12", "num_classes": "3"})
                break
            except ray.exceptions.RayError:
                if attempt == 2:
                    raise
        local.data = data  # type: ignore[attr-defined]
        yield local
    finally:
        local.stop()


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _wait_for_step(trace: Path, step: int, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if trace.exists() and any(r["event"] == "step" and r["step"] >= step
                                  for r in read_trace(str(trace))):
            return
        time.sleep(0.2)
    raise TimeoutError(f"step {step} never came")


def assert_every_epoch_as_planned(trace: list[dict], ids: set[int], epochs: int,
                                  seed: int, keep: int) -> None:
    """Each trainer epoch took exactly its planned rows: every clip the epoch keeps, once.

    With an ordered stream and no local shuffle buffer the plan is exact: epoch e holds the
    ``keep`` rows that :func:`dropped_ids` leaves it, and the trainer's epoch e reads them all
    and nothing else. A missing row is a view lost to the fault, a repeated one a view served
    twice, a row of another epoch an epoch that ran short or long.
    """
    steps = [r for r in trace if r["event"] == "step"]
    for epoch in range(epochs):
        rows = [(e, i) for r in steps if r["epoch"] == epoch
                for e, i in zip(r["row_epochs"], r["ids"])]
        assert {e for e, _ in rows} == {epoch}, (epoch, Counter(e for e, _ in rows))
        counts = Counter(i for _, i in rows)
        assert max(counts.values()) == 1, (epoch, [i for i, n in counts.items() if n > 1])
        planned = ids - set(dropped_ids(sorted(ids), keep, seed, epoch).tolist())
        assert len(planned) == keep and set(counts) == planned, (
            epoch, sorted(planned - set(counts)), sorted(set(counts) - planned))


def test_augment_node_killed_mid_epoch_loses_no_views(cluster: LocalCluster,
                                                      tmp_path: Path) -> None:
    epochs, steps = 5, 27 // 8
    job = tiny_job(cluster.data, f"train.epochs={epochs}", "train.max_failures=3",  # type: ignore[attr-defined]
                   "augment.actors=1", "data.shuffle_buffer=0", *BUSY_STREAM, *ROLES)
    run_dir, trace = tmp_path / "run", tmp_path / "trace.jsonl"
    seen: dict[str, list] = {}

    def kill_the_augment_node() -> None:
        _wait_for_step(trace, steps + 1)  # inside epoch 1
        seen["actors"] = actor_roles(cluster.address, "AugmentViews")
        seen["trainers"] = actor_roles(cluster.address, "RayTrainWorker")
        seen["clock"] = actor_roles(cluster.address, "EpochClock")
        augment_nodes = [n for n in cluster.alive_nodes() if n.role == "augment"]
        victim = cluster.node_of_actor("AugmentViews") or augment_nodes[0]
        seen["killed"] = [victim.name]
        seen["killed_at"] = [len(read_trace(str(trace)))]
        victim.kill()

    killer = threading.Thread(target=kill_the_augment_node, daemon=True)
    killer.start()
    run_training(job, str(run_dir), evaluate=False, extra_loop_config={TRACE_STEPS: str(trace)})
    killer.join(timeout=5)
    assert seen.get("killed"), "the augment node was never killed: the run ended first"
    # Placement as cluster.yaml intends, from the state API.
    assert seen["trainers"] and {role for state, role in seen["trainers"]
                                 if state == "ALIVE"} == {"train"}, seen
    assert seen["actors"] and {role for _, role in seen["actors"]} == {"augment"}, seen
    # The stream's epoch clock stays with the head: the restarted actors read it.
    assert {role for _, role in seen["clock"]} == {"head"}, seen
    assert {role for _, role in actor_roles(cluster.address, "AugmentViews")} == {"augment"}
    # The run finished every epoch, once, without a restart of training.
    assert [r["epoch"] for r in _metrics(run_dir)] == list(range(epochs))
    records = read_trace(str(trace))
    assert len([r for r in records if r["event"] == "start"]) == 1
    ids = set(load_split(cluster.data, "train", columns=["sample_id"])["sample_id"].tolist())  # type: ignore[attr-defined]
    assert_every_epoch_as_planned(records, ids, epochs, job.train.seed, keep=steps * 8)
    assert artifacts.load_encoder(str(run_dir))[1]["epoch"] == epochs
    cluster.add_node("augment-3", "augment", cpus=1,  # back to two augment nodes
                     resources={"clar_ray_augment": 1})


@pytest.mark.slow
def test_train_node_killed_mid_epoch_resumes_on_a_new_node(cluster: LocalCluster,
                                                           tmp_path: Path) -> None:
    epochs, steps = 4, 27 // 8
    job = tiny_job(cluster.data, f"train.epochs={epochs}", "train.max_failures=3",  # type: ignore[attr-defined]
                   "augment.actors=1", *BUSY_STREAM, *ROLES)
    run_dir, trace = tmp_path / "run", tmp_path / "trace.jsonl"

    nodes: dict[str, str] = {}

    def kill_the_train_node() -> None:
        _wait_for_step(trace, steps + 1)  # inside epoch 1, after epoch 0's checkpoint
        victim = cluster.node_of_actor("RayTrainWorker")
        assert victim is not None and victim.role == "train"
        nodes["victim"] = cluster.node_id(victim)
        victim.kill()
        nodes["new"] = cluster.node_id(cluster.add_node("train-2", "train", cpus=2,
                                                 resources={"clar_ray_train": 1}))

    killer = threading.Thread(target=kill_the_train_node, daemon=True)
    killer.start()
    run_training(job, str(run_dir), evaluate=False, extra_loop_config={TRACE_STEPS: str(trace)})
    killer.join(timeout=5)
    assert [r["epoch"] for r in _metrics(run_dir)] == list(range(epochs))
    records = read_trace(str(trace))
    starts = [r for r in records if r["event"] == "start"]
    assert len(starts) == 2 and 1 <= starts[1]["epoch"] < epochs, starts  # resumed mid-run
    # ... exactly where its last checkpoint left off, on the node that joined.
    assert_continued(records, resumed_epoch=starts[1]["epoch"], steps_per_epoch=steps,
                     epochs=epochs, lr=job.optim.lr)
    assert (starts[0]["node"], starts[1]["node"]) == (nodes["victim"], nodes["new"]), nodes


@pytest.mark.slow
def test_interrupted_study_resumes_on_the_cluster_and_runs_each_training_once(
        cluster: LocalCluster, tmp_path: Path) -> None:
    """`clar-ray tune` against the cluster, its driver killed after the first finished trial:
    `--resume` runs only the trials that had not finished, their workers on train nodes."""
    tune_file = tmp_path / "pairs.yaml"
    base = {**TINY, "data": {"path": cluster.data},  # type: ignore[attr-defined]
            "train": {**TINY["train"], "node_labels": {ROLE_LABEL: "train"}},
            "augment": {"node_labels": {ROLE_LABEL: "augment"}}}
    tune_file.write_text(yaml.safe_dump({
        "base": base, "study": {"name": "augmentation-pairs",
                                "augmentations": ["fade", "time_shift"]}}))
    out = tmp_path / "experiment"
    command = [sys.executable, "-m", "clar_ray.cli", "tune", str(tune_file), "--out", str(out),
               "--address", cluster.address]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while not _finished_trials(out) and time.monotonic() < deadline:
            assert process.poll() is None, "clar-ray tune ended before any trial finished"
            time.sleep(0.5)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    before = _finished_trials(out)
    assert before and len(before) < 4, before
    trainers_before = len(actor_roles(cluster.address, "RayTrainWorker"))
    resumed = subprocess.run([*command, "--resume"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=1200, check=False)
    assert resumed.returncode == 0, resumed.stdout[-4000:]
    after = _finished_trials(out)
    assert len(after) == 4, after
    for name, mtime in before.items():
        assert after[name] == mtime, f"{name} finished before the interruption but ran again"
    for name in after:
        events = [e["event"] for e in tune.read_events(str(out), name)]
        assert events.count("finished") == 1, (name, events)
    trainers = actor_roles(cluster.address, "RayTrainWorker")
    assert len(trainers) > trainers_before  # the resumed trials trained ...
    assert {role for _, role in trainers} == {"train"}, trainers  # ... on train nodes only


def _finished_trials(experiment: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime for p in experiment.glob("runs/*/result.json")}
