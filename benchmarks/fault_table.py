"""Fault table: a clar-ray run on a multi-node cluster on one machine, with a node taken away.

The cluster is cluster.yaml's shape in small (:class:`clar_ray.local_cluster.LocalCluster`): a
head with no CPUs, a ``train`` node and two ``augment`` nodes, each a separate ``ray start``.
Each scenario trains the same small job (the paper's costly augmentations, so the stream is
still busy when the fault lands) and injects one fault inside epoch 1, after epoch 0's
checkpoint:

- none: the reference run;
- augment node: the node running the augmentation actor is killed (its raylet, like a
  reclaimed spot VM);
- train node: the node running the training worker is killed, and a new train node joins;
- train worker process: the training worker's process is killed (SIGKILL), the node stays.

From rank 0's step trace it reports, per scenario: where the fault was injected, the seconds
from the fault to the next optimiser step, the run's wall time, the restarts, the epochs
trained twice, and the views lost and duplicated against the plan (every epoch holds exactly
its planned rows; must be 0 and 0).

Usage:
    python benchmarks/fault_table.py [--epochs 4] [--json benchmarks/results/fault_table.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from clar_ray.checkpoint import read_trace  # noqa: E402
from clar_ray.config import JobConfig  # noqa: E402
from clar_ray.data.manifest import load_split  # noqa: E402
from clar_ray.data.prepare import prepare_dataset  # noqa: E402
from clar_ray.data.stream import dropped_ids  # noqa: E402
from clar_ray.local_cluster import LocalCluster, actors  # noqa: E402
from clar_ray.resources import epoch_rows  # noqa: E402
from clar_ray.train import TRACE_STEPS, run_training  # noqa: E402

SCENARIOS = ("none", "augment node", "train node", "train worker process")
BATCH = 8


def job_for(data: str, epochs: int) -> JobConfig:
    """The small job of every scenario: raw-audio ResNet, CLAR, costly augmentations."""
    return JobConfig().replace([
        f"data.path={data}", "model.frontend=raw", "model.encoder=resnet18_1d", "model.width=4",
        "model.hidden_dim=16", "model.projection_dim=8", f"train.batch_size={BATCH}",
        f"train.epochs={epochs}", "optim.warmup_epochs=0", "optim.name=sgd", "optim.lr=0.05",
        f"optim.reference_batch={BATCH}", "train.max_failures=3", "data.shuffle_buffer=0",
        "augment.actors=1", "augment.actor_batch_size=4",
        "augment.sequence=[time_stretch, pitch_shift]",
        "train.node_labels={clar-ray-role: train}", "augment.node_labels={clar-ray-role: augment}",
    ])


def start_cluster() -> LocalCluster:
    cluster = LocalCluster()
    cluster.start_head()
    cluster.add_node("train-1", "train", cpus=2, resources={"clar_ray_train": 1})
    for name in ("augment-1", "augment-2"):
        cluster.add_node(name, "augment", cpus=1, resources={"clar_ray_augment": 1})
    return cluster


def inject(cluster: LocalCluster, scenario: str) -> None:
    """Take away what the scenario names (and bring back a node where one is lost)."""
    if scenario == "augment node":
        victim = cluster.node_of_actor("AugmentViews")
        assert victim is not None, "no augmentation actor is alive"
        victim.kill()
    elif scenario == "train node":
        victim = cluster.node_of_actor("RayTrainWorker")
        assert victim is not None, "no training worker is alive"
        victim.kill()
        cluster.add_node(f"train-{len(cluster.nodes)}", "train", cpus=2,
                         resources={"clar_ray_train": 1})
    elif scenario == "train worker process":
        pids = [a.pid for a in actors(cluster.address, "RayTrainWorker")
                if a.state == "ALIVE" and a.pid]
        assert pids, "no training worker is alive"
        os.kill(int(pids[0]), signal.SIGKILL)


def summarize(trace: list[dict[str, Any]], *, fault_at: float | None, ids: list[int],
              steps: int, epochs: int, seed: int) -> dict[str, Any]:
    """The fault table's row from rank 0's step trace."""
    step_records = sorted((r for r in trace if r["event"] == "step"), key=lambda r: r["time"])
    counted: dict[int, dict[str, Any]] = {}
    for record in step_records:  # a step redone by a later attempt counts once, the last time
        counted[record["step"]] = record
    rows = Counter((e, i) for r in counted.values() for e, i in zip(r["row_epochs"], r["ids"]))
    keep = steps * BATCH
    lost = sum(len(set(ids) - set(dropped_ids(ids, keep, seed, epoch).tolist())
                   - {i for e, i in rows if e == epoch}) for epoch in range(epochs))
    row = {"restarts": sum(r["event"] == "start" for r in trace) - 1,
           "epochs_redone": round((len(step_records) - len(counted)) / steps, 2),
           "views_lost": 2 * lost, "views_duplicated": 2 * sum(n - 1 for n in rows.values()),
           "steps": len(counted)}
    if fault_at is not None:
        before = [r for r in step_records if r["time"] <= fault_at]
        after = [r for r in step_records if r["time"] > fault_at]
        row["injected"] = (f"epoch {before[-1]['epoch']}, after step {before[-1]['step'] + 1}"
                           if before else "before the first step")
        row["recovery_s"] = round(after[0]["time"] - fault_at, 1) if after else None
    return row


def run_scenario(cluster: LocalCluster, data: str, scenario: str, epochs: int,
                 work: Path) -> dict[str, Any]:
    job = job_for(data, epochs)
    ids = sorted(load_split(data, "train", columns=["sample_id"])["sample_id"].tolist())
    steps = epoch_rows(len(ids), BATCH, 1) // BATCH
    run_dir, trace = work / scenario.replace(" ", "-"), work / f"{scenario}.jsonl".replace(" ", "-")
    fault: dict[str, float] = {}

    def wait_and_inject() -> None:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if trace.exists() and any(r["event"] == "step" and r["step"] >= steps + 1
                                      for r in read_trace(str(trace))):
                fault["at"] = time.time()
                inject(cluster, scenario)
                return
            time.sleep(0.2)

    injector = threading.Thread(target=wait_and_inject, daemon=True)
    if scenario != "none":
        injector.start()
    started = time.monotonic()
    run_training(job, str(run_dir), evaluate=False, extra_loop_config={TRACE_STEPS: str(trace)})
    seconds = time.monotonic() - started
    if scenario != "none":
        injector.join(timeout=5)
    if scenario != "none" and "at" not in fault:
        raise RuntimeError(f"{scenario}: the run ended before the fault was injected")
    row = summarize(read_trace(str(trace)), fault_at=fault.get("at"), ids=ids, steps=steps,
                    epochs=epochs, seed=job.train.seed)
    if scenario == "augment node":  # back to the cluster's shape for the next scenario
        cluster.add_node(f"augment-{len(cluster.nodes)}", "augment", cpus=1,
                         resources={"clar_ray_augment": 1})
    return {"fault": scenario, "run_s": round(seconds, 1), **row}


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| fault | injected | recovery (s) | run (s) | restarts | epochs redone | "
             "views lost | views duplicated |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['fault']} | {r.get('injected', '—')} | {r.get('recovery_s', '—')} | "
                     f"{r['run_s']} | {r['restarts']} | {r['epochs_redone']:g} | "
                     f"{r['views_lost']} | {r['views_duplicated']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/fault_table.json"))
    args = parser.parse_args()
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    with tempfile.TemporaryDirectory(prefix="clar-ray-faults-") as tmp:
        work = Path(tmp)
        data = str(work / "data")
        cluster = start_cluster()
        try:
            prepare_dataset("synthetic", data, options={"clips_per_class": "12",
                                                        "num_classes": "3"}, progress=False)
            rows = [run_scenario(cluster, data, s, args.epochs, work) for s in SCENARIOS]
        finally:
            cluster.stop()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"epochs": args.epochs, "rows": rows}, indent=2) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
