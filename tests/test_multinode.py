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
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import tiny_job

from clar_ray import artifacts
from clar_ray.checkpoint import read_trace
from clar_ray.data.manifest import load_split
from clar_ray.data.prepare import prepare_dataset
from clar_ray.local_cluster import LocalCluster, actor_roles
from clar_ray.train import TRACE_STEPS, run_training

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
        data = str(tmp_path_factory.mktemp("multinode") / "small")
        prepare_dataset("synthetic", data, options={"clips_per_class": "12", "num_classes": "3"},
                        progress=False)
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


def assert_every_clip_once_per_epoch(trace: list[dict], ids: set[int], epochs: int,
                                     consumed: int) -> None:
    """The rows the trainer took, against the plan of an ordered stream without a shuffle buffer.

    The plan: epoch after epoch, each clip once; the trainer takes ``consumed`` rows of it (a
    whole number of batches an epoch), so only the tail of the last epoch is left unread. Any
    other missing row is a view lost to the fault, any repeated row one served twice.
    """
    steps = [r for r in trace if r["event"] == "step"]
    rows = [(e, i) for r in steps for e, i in zip(r["row_epochs"], r["ids"])]
    counts = Counter(rows)
    assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1]
    assert len(rows) == consumed and {i for _, i in rows} <= ids
    assert [e for e, _ in rows] == sorted(e for e, _ in rows), "epochs out of order"
    missing = {epoch: sorted(ids - {i for e, i in rows if e == epoch}) for epoch in range(epochs)}
    assert not any(missing[epoch] for epoch in range(epochs - 1)), missing
    assert len(missing[epochs - 1]) == epochs * len(ids) - consumed, missing


def test_augment_node_killed_mid_epoch_loses_no_views(cluster: LocalCluster,
                                                      tmp_path: Path) -> None:
    epochs, steps = 5, 27 // 8
    job = tiny_job(cluster.data, f"train.epochs={epochs}", "train.max_failures=3",  # type: ignore[attr-defined]
                   "augment.actors=1", "data.shuffle_buffer=0", "augment.actor_batch_size=4",
                   # the paper's two costly augmentations keep the actor busy past the kill
                   "augment.sequence=[time_stretch, pitch_shift]", *ROLES)
    run_dir, trace = tmp_path / "run", tmp_path / "trace.jsonl"
    seen: dict[str, list] = {}

    def kill_the_augment_node() -> None:
        _wait_for_step(trace, steps + 1)  # inside epoch 1
        seen["actors"] = actor_roles(cluster.address, "AugmentViews")
        seen["trainers"] = actor_roles(cluster.address, "RayTrainWorker")
        seen["clock"] = actor_roles(cluster.address, "EpochClock")
        augment_nodes = [n for n in cluster.alive_nodes() if n.role == "augment"]
        victim = _node_of_alive_actor(cluster, "AugmentViews") or augment_nodes[0]
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
    assert_every_clip_once_per_epoch(records, ids, epochs, consumed=epochs * steps * 8)
    assert artifacts.load_encoder(str(run_dir))[1]["epoch"] == epochs


def _node_of_alive_actor(cluster: LocalCluster, class_part: str):  # noqa: ANN202
    """The cluster node (of ours) where an alive actor of the class runs, from the state API."""
    import ray
    from ray.util.state import list_actors

    by_id = {n["NodeID"]: n for n in ray.nodes()}
    for actor in list_actors(address=cluster.address, limit=10_000, detail=True,
                             raise_on_missing_output=False):
        if class_part in actor.class_name and actor.state == "ALIVE":
            node = by_id.get(actor.node_id or "")
            if node is None:
                continue
            temp = node.get("ObjectStoreSocketName", "")
            for ours in cluster.alive_nodes():
                if temp.startswith(ours.temp_dir):
                    return ours
    return None


@pytest.mark.slow
def test_train_node_killed_mid_epoch_resumes_on_a_new_node(cluster: LocalCluster,
                                                           tmp_path: Path) -> None:
    epochs, steps = 4, 27 // 8
    job = tiny_job(cluster.data, f"train.epochs={epochs}", "train.max_failures=3",  # type: ignore[attr-defined]
                   "augment.actors=1", *ROLES)
    run_dir, trace = tmp_path / "run", tmp_path / "trace.jsonl"

    def kill_the_train_node() -> None:
        _wait_for_step(trace, steps + 1)  # inside epoch 1, after epoch 0's checkpoint
        victim = _node_of_alive_actor(cluster, "RayTrainWorker")
        assert victim is not None and victim.role == "train"
        victim.kill()
        cluster.add_node("train-2", "train", cpus=2, resources={"clar_ray_train": 1})

    killer = threading.Thread(target=kill_the_train_node, daemon=True)
    killer.start()
    run_training(job, str(run_dir), evaluate=False, extra_loop_config={TRACE_STEPS: str(trace)})
    killer.join(timeout=5)
    assert [r["epoch"] for r in _metrics(run_dir)] == list(range(epochs))
    starts = [r for r in read_trace(str(trace)) if r["event"] == "start"]
    assert len(starts) == 2 and starts[1]["epoch"] >= 1, starts  # resumed, not started over
