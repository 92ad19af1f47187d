"""Tests of clar_ray.embed: one embedding row per clip, by Ray Data batch inference."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_evaluate import make_run, tiny_job, write_dataset

from clar_ray.data.manifest import load_split
from clar_ray.embed import embed_run, embedding_schema
from clar_ray.evaluate import extract_features


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    import ray

    os.environ["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, np.ndarray]:
    """A dataset of 23 + 7 clips (train in 3 shards) and a run whose encoder embeds them."""
    root = tmp_path_factory.mktemp("embed")
    data = write_dataset(root / "data", {"train": 23, "test": 7}, shards=3)
    run_dir, extractor = make_run(root / "run", tiny_job(data))
    pcm = np.concatenate([load_split(data, s)["pcm"] for s in ("train", "test")])
    ids = np.concatenate([load_split(data, s)["sample_id"] for s in ("train", "test")])
    expected = extract_features(extractor, pcm)[np.argsort(ids)]  # rows in sample_id order
    return data, run_dir, expected


def check_rows(table, data: str, splits: tuple[str, ...], expected: np.ndarray) -> None:
    columns = {s: load_split(data, s, columns=["sample_id", "label"]) for s in splits}
    ids = np.concatenate([columns[s]["sample_id"] for s in splits])
    labels = np.concatenate([columns[s]["label"] for s in splits])
    order = np.argsort(table["sample_id"].to_numpy())
    got_ids = table["sample_id"].to_numpy()[order]
    np.testing.assert_array_equal(got_ids, np.sort(ids))  # every clip once, and only those
    np.testing.assert_array_equal(table["label"].to_numpy()[order], labels[np.argsort(ids)])
    want_split = np.concatenate([[s] * len(columns[s]["label"]) for s in splits])
    np.testing.assert_array_equal(np.asarray(table["split"].to_pylist())[order],
                                  want_split[np.argsort(ids)])
    embedding = np.stack(table["embedding"].to_numpy(zero_copy_only=False))[order]
    assert embedding.dtype == np.float32
    all_ids = np.sort(np.concatenate([load_split(data, s)["sample_id"]
                                      for s in ("train", "test")]))
    np.testing.assert_allclose(embedding, expected[np.searchsorted(all_ids, got_ids)],
                               rtol=1e-4, atol=1e-5)


def test_embed_writes_one_row_per_clip_to_a_file(ray_session: None, prepared: tuple,
                                                 tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    data, run_dir, expected = prepared
    out = tmp_path / "sub" / "embeddings.parquet"
    assert embed_run(run_dir, data, str(out), batch_size=4) == 30
    table = pq.read_table(out)
    assert table.schema == embedding_schema(expected.shape[1])
    check_rows(table, data, ("train", "test"), expected)
    # Without a terminal: a plain line as each quarter of the rows is written (how many rows a
    # batch brings depends on Ray Data's blocks), the last at the total.
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("embed ")]
    done = [int(line.split()[1].split("/")[0]) for line in lines]
    assert 1 <= len(lines) <= 4 and lines[-1] == "embed 30/30 clips"
    assert done == sorted(set(done)), lines


def test_embed_writes_one_split_to_a_folder(ray_session: None, prepared: tuple,
                                            tmp_path: Path) -> None:
    data, run_dir, expected = prepared
    out = tmp_path / "embeddings"
    assert embed_run(run_dir, data, str(out), split="test", batch_size=3, actors=1) == 7
    check_rows(pq.read_table(out), data, ("test",), expected)


def test_embed_rejects_an_unknown_split_or_other_audio(prepared: tuple, tmp_path: Path) -> None:
    data, run_dir, _ = prepared
    with pytest.raises(KeyError, match="validation"):
        embed_run(run_dir, data, str(tmp_path / "x.parquet"), split="validation")
    wrong = write_dataset(tmp_path / "wrong", {"train": 3}, sample_rate=8000)
    with pytest.raises(ValueError, match="8000 Hz"):
        embed_run(run_dir, wrong, str(tmp_path / "y.parquet"))
