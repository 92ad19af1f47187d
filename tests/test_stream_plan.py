from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from clar_ray.config import JobConfig
from clar_ray.data.stream import labelled_ids
from clar_ray.resources import ResourcePlanError, plan_resources


def _job(**overrides: object) -> JobConfig:
    return JobConfig().replace([f"{key}={value}" for key, value in overrides.items()])


@pytest.mark.parametrize("fraction", [1.0, 0.2, 0.1, 0.01])
def test_label_fraction_is_exact_per_class(fraction: float) -> None:
    rng = np.random.default_rng(0)
    counts = {0: 270, 1: 300, 2: 7}
    labels = np.concatenate([np.full(n, c) for c, n in counts.items()])
    ids = rng.permutation(10_000)[: len(labels)].astype(np.int64)
    chosen = labelled_ids(ids, labels, fraction, seed=3)
    by_id = dict(zip(ids.tolist(), labels.tolist()))
    for cls, n in counts.items():
        got = sum(by_id[i] == cls for i in chosen.tolist())
        assert got == max(1, round(fraction * n)), (cls, got)


def test_label_choice_is_seeded_and_order_free() -> None:
    ids = np.arange(1000, dtype=np.int64) * 7
    labels = ids % 5
    first = labelled_ids(ids, labels, 0.1, seed=1)
    order = np.random.default_rng(2).permutation(len(ids))
    assert np.array_equal(first, labelled_ids(ids[order], labels[order], 0.1, seed=1))
    assert not np.array_equal(first, labelled_ids(ids, labels, 0.1, seed=2))


def test_label_fraction_out_of_range_fails() -> None:
    with pytest.raises(ValueError, match="fraction must be in"):
        labelled_ids(np.arange(3), np.zeros(3, np.int64), 0.0, seed=0)


def test_auto_plan_gives_the_rest_to_actors() -> None:
    plan = plan_resources(_job(**{"train.workers": 2}), cluster_cpus=8, cluster_gpus=0)
    assert plan.workers == 2 and plan.actors == 5 and plan.cpus == 8


def test_explicit_plan_that_does_not_fit_says_what_is_missing() -> None:
    job = _job(**{"train.workers": 2, "augment.actors": 4})
    with pytest.raises(ResourcePlanError, match=r"needs 7 CPUs .* the cluster has 4"):
        plan_resources(job, cluster_cpus=4, cluster_gpus=0)


def test_gpu_plan_without_gpus_fails() -> None:
    job = _job(**{"train.workers": 2, "train.use_gpu": True})
    with pytest.raises(ResourcePlanError, match="needs 2 GPU"):
        plan_resources(job, cluster_cpus=64, cluster_gpus=1)


def test_worker_that_fits_no_single_node_fails() -> None:
    job = _job(**{"train.workers": 2, "train.cpus_per_worker": 4, "augment.actors": 1})
    nodes = [{"CPU": 3.0}, {"CPU": 3.0}, {"CPU": 6.0}]
    with pytest.raises(ResourcePlanError, match="worker 2 of 2 needs 4 CPU"):
        plan_resources(job, cluster_cpus=12, cluster_gpus=0, node_resources=nodes)


def test_plan_waits_for_the_autoscaler_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray
    import ray.autoscaler.sdk

    from clar_ray import resources

    sizes = iter([0.0, 0.0, 8.0])
    requested: list[list[dict]] = []
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": next(sizes)})
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 8.0}}])
    monkeypatch.setattr(ray.autoscaler.sdk, "request_resources",
                        lambda bundles, **_: requested.append(bundles))
    plan = resources.cluster_plan(_job(**{"train.wait_for_resources_s": 60}), poll_s=0.0)
    assert plan.actors >= 1 and len(requested) == 1 and requested[0][0] == {"CPU": 1.0}
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 0.0})
    with pytest.raises(ResourcePlanError, match="the cluster has 0"):
        resources.cluster_plan(_job(), poll_s=0.0)


def test_prepared_shards_are_not_sorted_by_class(tmp_path) -> None:
    """Class-sorted shards would give one-class batches (the stream shuffles only locally)."""
    from clar_ray.data.manifest import load_split
    from clar_ray.data.prepare import prepare_dataset

    out = str(tmp_path / "synthetic")
    prepare_dataset("synthetic", out, options={"clips_per_class": "20", "num_classes": "4"},
                    progress=False)
    labels = load_split(out, "train", columns=["label"])["label"]
    changes = int((labels[1:] != labels[:-1]).sum())
    assert changes > len(labels) // 2, labels  # sorted by class would change 3 times


def test_an_augmentation_process_keeps_to_one_thread() -> None:
    # In a fresh interpreter: limit_threads changes process-wide pools (Arrow's, BLAS's).
    code = ("import pyarrow\n"
            "from clar_ray.data.stream import limit_threads\n"
            "before = pyarrow.cpu_count()\n"
            "limit_threads()\n"
            "import os\n"
            "print(before, pyarrow.cpu_count(), os.environ['OMP_NUM_THREADS'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[1:] == ["1", "1"], out
