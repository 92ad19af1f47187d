"""Cloud URIs end to end on a real S3 server: storage, prepare, train, evaluate, embed, tune.

The module starts one moto S3 server on loopback and points the AWS variables at it
(``AWS_ENDPOINT_URL``, which pyarrow >= 15 reads) before it starts its one local Ray, so Ray's
workers, which inherit the driver's environment, reach the same server. Every check reads the
bucket back through a filesystem of its own, not through ``clar_ray.storage``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import ray
import torch
import yaml
from conftest import tiny_job
from moto.server import ThreadedMotoServer

from clar_ray import artifacts, storage, tune
from clar_ray.analyze import analyze_experiment
from clar_ray.data.manifest import Manifest, load_split
from clar_ray.data.prepare import prepare_dataset
from clar_ray.embed import embed_run
from clar_ray.evaluate import evaluate_run, load_run_job
from clar_ray.local_cluster import free_ports
from clar_ray.train import run_training

BUCKET = "clar-ray-test"
ROOT = f"s3://{BUCKET}"


class Bucket:
    """The test bucket, read through its own pyarrow filesystem."""

    def __init__(self, endpoint: str) -> None:
        self.fs = pafs.S3FileSystem(endpoint_override=endpoint, allow_bucket_creation=True)

    def keys(self, prefix: str) -> set[str]:
        """Every object under ``prefix``, relative to it."""
        selector = pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True)
        return {info.path[len(BUCKET) + len(prefix) + 2:]
                for info in self.fs.get_file_info(selector) if info.type == pafs.FileType.File}

    def read(self, key: str) -> bytes:
        with self.fs.open_input_stream(f"{BUCKET}/{key}") as stream:
            return bytes(stream.read())


@pytest.fixture(scope="module")
def bucket() -> Iterator[Bucket]:
    """A moto S3 server on loopback with one empty bucket; the AWS variables point at it."""
    port = free_ports(1)[0]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "RAY_ADDRESS"):
            env.delenv(name, raising=False)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_ENDPOINT_URL", endpoint)
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        env.setenv("AWS_CONFIG_FILE", "/nonexistent")
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        store = Bucket(endpoint)
        store.fs.create_dir(BUCKET)
        try:
            yield store
        finally:
            server.stop()


@pytest.fixture(scope="module")
def data(bucket: Bucket) -> Iterator[str]:
    """One local Ray for the module (started after the AWS variables), and a dataset on S3."""
    if ray.is_initialized():  # a Ray started before the S3 variables cannot reach moto
        ray.shutdown()
    ray.init(address="local", num_cpus=6, include_dashboard=False, log_to_driver=False)
    path = f"{ROOT}/data"
    try:
        prepare_dataset("synthetic", path, options={"clips_per_class": "8", "num_classes": "3"},
                        rows_per_shard=5, progress=False)
        yield path
    finally:
        ray.shutdown()


def _jsonl(bucket: Bucket, key: str) -> list[dict]:
    return [json.loads(line) for line in bucket.read(key).decode().splitlines()]


def test_storage_helpers_round_trip_on_s3(bucket: Bucket, tmp_path: Path) -> None:
    text = f"{ROOT}/store/a/notes.txt"
    storage.write_text(text, "héllo\n")
    assert storage.read_text(text) == "héllo\n"
    storage.append_text(text, "second\n")
    storage.append_text(f"{ROOT}/store/a/new.txt", "first\n")  # append creates the file
    assert storage.exists(text) and storage.exists(f"{ROOT}/store/a")
    assert not storage.exists(f"{ROOT}/store/missing.txt")
    value = {"b": [1, 2.5, None], "a": "ü"}
    storage.write_json(f"{ROOT}/store/v.json", value)
    assert storage.read_json(f"{ROOT}/store/v.json") == value
    storage.write_bytes(f"{ROOT}/store/raw.bin", bytes(range(256)))
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "top.txt").write_text("top")
    (tree / "sub" / "deep.txt").write_text("deep")
    storage.upload_dir(str(tree), f"{ROOT}/store/up")
    assert bucket.keys("store") == {"a/notes.txt", "a/new.txt", "v.json", "raw.bin",
                                    "up/top.txt", "up/sub/deep.txt"}
    assert bucket.read("store/a/notes.txt") == "héllo\nsecond\n".encode()
    assert bucket.read("store/a/new.txt") == b"first\n"
    assert json.loads(bucket.read("store/v.json")) == value
    assert storage.read_bytes(f"{ROOT}/store/raw.bin") == bytes(range(256))
    assert bucket.read("store/up/sub/deep.txt") == b"deep"
    assert not Path("s3:").exists()  # nothing went to a local folder named after the scheme


def test_prepare_writes_shards_and_manifest_to_the_bucket(bucket: Bucket, data: str) -> None:
    manifest = Manifest.read(data)
    assert json.loads(bucket.read("data/manifest.json")) == manifest.to_dict()
    shards = {f for split in manifest.splits.values() for f in split.files}
    assert len(manifest.splits["train"].files) >= 3  # rows_per_shard=5: several shards
    assert bucket.keys("data") == {"manifest.json", *shards}
    assert all(f.endswith(".parquet") for f in shards)
    rows = {name: split.rows for name, split in manifest.splits.items()}
    assert sum(rows.values()) == 24
    train = load_split(data, "train", columns=["pcm", "label"])
    assert train["pcm"].shape == (rows["train"], manifest.clip_samples)
    assert set(train["label"]) == {0, 1, 2}
    with pytest.raises(FileExistsError, match="not empty"):
        prepare_dataset("synthetic", data, progress=False)


def test_training_resuming_evaluation_and_embedding_on_the_bucket(
        bucket: Bucket, data: str) -> None:
    run_dir = f"{ROOT}/runs/x"
    run_training(tiny_job(data, "train.epochs=1"), run_dir, evaluate=False)
    keys = bucket.keys("runs/x")
    for name in ("config.yaml", "plan.json", "metrics.jsonl", "encoder.pt"):
        assert name in keys, (name, sorted(keys))
    assert any(k.startswith("checkpoint_") and k.endswith("/state.pt") for k in keys), keys
    assert any(k.startswith("tensorboard/events.out.tfevents.") for k in keys), keys
    assert "result.json" not in keys
    with pytest.raises(FileExistsError, match="--resume"):
        run_training(tiny_job(data, "train.epochs=1"), run_dir, evaluate=False)
    # Resuming restores the checkpoint from the bucket and appends to metrics.jsonl there.
    job = tiny_job(data, "train.epochs=2")
    summary = run_training(job, run_dir, resume=True)
    assert load_run_job(run_dir) == job
    records = _jsonl(bucket, "runs/x/metrics.jsonl")
    assert [r["epoch"] for r in records] == [0, 1]
    assert 0 < records[0]["step"] < records[1]["step"], records
    assert json.loads(bucket.read("runs/x/result.json")) == summary["result"]
    extractor, info = artifacts.load_encoder(run_dir)
    assert info["epoch"] == 2
    with torch.no_grad():
        assert extractor(torch.zeros(2, info["clip_samples"])).shape == (2, 8 * job.model.width)
    # Evaluating the run again reads config.yaml, encoder.pt and the data from the bucket.
    result = evaluate_run(run_dir)
    assert result["data"] == data and result["epoch"] == 2
    assert result["train_rows"] + result["test_rows"] == 24
    assert json.loads(bucket.read("runs/x/result.json")) == result
    # Embeddings of every clip, streamed by Ray Data into one Parquet file on the bucket.
    assert embed_run(run_dir, data, f"{ROOT}/emb/x.parquet", actors=1) == 24
    table = pq.read_table(f"{BUCKET}/emb/x.parquet", filesystem=bucket.fs)
    assert table.num_rows == 24 and len(set(table["sample_id"].to_pylist())) == 24
    assert table.schema.field("embedding").type.list_size == 8 * job.model.width


def test_a_tune_grid_writes_its_experiment_to_the_bucket(bucket: Bucket, data: str,
                                                         tmp_path: Path) -> None:
    base = tiny_job(data, "train.epochs=1").to_dict()
    tune_file = tmp_path / "grid.yaml"
    tune_file.write_text(yaml.safe_dump({
        "base": base, "grid": {"augment.sequence": [["time_shift"], ["fade"]]}}))
    experiment = f"{ROOT}/study"
    assert tune.run_study(tune_file, experiment) == experiment
    trials = json.loads(bucket.read("study/trials.json"))["trials"]
    names = [t["name"] for t in trials]
    assert len(names) == 2
    status = json.loads(bucket.read("study/tune_status.json"))
    assert status == {name: {"status": "finished"} for name in names}
    keys = bucket.keys("study")
    assert "tuner.pkl" in keys and any(k.startswith("experiment_state-") for k in keys), keys
    for name in names:
        for file in ("config.yaml", "metrics.jsonl", "encoder.pt", "result.json"):
            assert f"runs/{name}/{file}" in keys, (name, file, sorted(keys))
        assert [r["epoch"] for r in _jsonl(bucket, f"study/runs/{name}/metrics.jsonl")] == [0]
        events = [e["event"] for e in tune.read_events(experiment, name)]
        assert events == ["start", "finished"], (name, events)
    with pytest.raises(FileExistsError, match="--resume"):
        tune.run_study(tune_file, experiment)
    report = analyze_experiment(experiment)
    assert report == f"{experiment}/report/report.md"
    assert "2 finished" in bucket.read("study/report/report.md").decode()
    assert {"trials.csv", "report.md"} <= bucket.keys("study/report")
