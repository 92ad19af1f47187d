"""Tests for clar_ray.data.manifest: schema, validation, read/write, load_split (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clar_ray.data.manifest import (
    FORMAT_VERSION,
    ROW_COLUMNS,
    Manifest,
    ManifestError,
    SplitInfo,
    load_split,
    pcm_from_arrow,
    pcm_from_values,
    pcm_to_arrow,
    row_schema,
    sample_id_for,
)

T = 8


def _manifest(**changes) -> Manifest:
    fields = dict(
        recipe="folder",
        source="/data/x",
        options={"seed": "0"},
        sample_rate=16000,
        clip_samples=T,
        labels=("cat", "dog", "eel"),
        splits={
            "train": SplitInfo(3, ("train/a.parquet",), {"cat": 2, "dog": 1, "eel": 0}),
            "test": SplitInfo(1, ("test/b.parquet",), {"cat": 0, "dog": 0, "eel": 1}),
        },
        skipped=({"path": "x.wav", "reason": "empty file (0 bytes)"},),
        created="2026-01-01T00:00:00+00:00",
    )
    fields.update(changes)
    return Manifest(**fields)


def _write_shard(path: Path, rows: list[tuple[str, int, str]]) -> None:
    """Write rows (path, label, split) with pcm = the row index repeated."""
    pcm = np.stack([np.full(T, i, dtype=np.int16) for i in range(len(rows))])
    table = pa.Table.from_arrays(
        [
            pa.array([sample_id_for(p) for p, _, _ in rows], pa.int64()),
            pcm_to_arrow(pcm),
            pa.array([lab for _, lab, _ in rows], pa.int64()),
            pa.array([s for _, _, s in rows], pa.string()),
            pa.array([p for p, _, _ in rows], pa.string()),
        ],
        schema=row_schema(T),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _dataset(tmp_path: Path) -> Path:
    _write_shard(
        tmp_path / "train/a.parquet",
        [("c1.wav", 0, "train"), ("c2.wav", 0, "train"), ("d1.wav", 1, "train")],
    )
    _write_shard(tmp_path / "test/b.parquet", [("e1.wav", 2, "test")])
    _manifest().write(str(tmp_path))
    return tmp_path


def test_sample_id_is_stable_non_negative_below_2_62_and_path_sensitive():
    ids = [sample_id_for(p) for p in ["a.wav", "b.wav", "dir/a.wav", "with space.wav", "é.wav"]]
    assert all(0 <= i < 2**62 for i in ids)
    assert len(set(ids)) == len(ids)
    assert sample_id_for("a.wav") == sample_id_for("a.wav")
    assert sample_id_for("a.wav") == 2043775626307561553  # pinned: ids must never drift


def test_row_schema_columns_and_types():
    schema = row_schema(T)
    assert tuple(schema.names) == ROW_COLUMNS
    assert schema.field("pcm").type == pa.binary(2 * T)
    assert schema.field("sample_id").type == pa.int64()
    with pytest.raises(ValueError, match="clip_samples"):
        row_schema(0)


def test_write_read_round_trip(tmp_path: Path):
    m = _manifest(silent=("q.wav",), excluded={"word not in subset": 3}, notes={"split": "x"})
    written = m.write(str(tmp_path))
    assert written.endswith("manifest.json")
    again = Manifest.read(str(tmp_path))
    assert again == m
    assert Manifest.read(written) == m
    raw = json.loads(Path(written).read_text())
    for key in [
        "format_version",
        "sample_rate",
        "clip_samples",
        "labels",
        "splits",
        "recipe",
        "options",
        "skipped",
        "created",
        "schema",
    ]:
        assert key in raw
    assert raw["splits"]["train"]["class_counts"] == {"cat": 2, "dog": 1, "eel": 0}
    assert m.clip_seconds == T / 16000 and m.num_rows == 4


def test_read_refuses_wrong_version_and_missing_keys(tmp_path: Path):
    path = Path(_manifest().write(str(tmp_path)))
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ManifestError, match="format_version"):
        Manifest.read(str(tmp_path))
    del raw["labels"]
    path.write_text(json.dumps(raw))
    with pytest.raises(ManifestError, match="missing keys \\['labels'\\]"):
        Manifest.read(str(tmp_path))
    path.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.read(str(tmp_path))
    with pytest.raises(ManifestError, match="no manifest.json"):
        Manifest.read(str(tmp_path / "elsewhere"))


def test_read_refuses_wrong_types(tmp_path: Path):
    path = Path(_manifest().write(str(tmp_path)))
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "sample_rate": "16000"}))
    with pytest.raises(ManifestError, match="sample_rate"):
        Manifest.read(str(tmp_path))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"sample_rate": 0}, "sample_rate"),
        ({"labels": ()}, "labels"),
        ({"labels": ("a", "a", "b")}, "unique"),
        ({"splits": {}}, "no splits"),
        ({"splits": {"train": SplitInfo(2, (), {"cat": 1})}}, "sum to 1"),
        ({"splits": {"train": SplitInfo(1, (), {"cow": 1})}}, "unknown labels"),
        ({"splits": {"train": SplitInfo(0, ("/abs.parquet",), {})}}, "relative"),
        ({"skipped": ({"path": "x"},)}, "reason"),
    ],
)
def test_validation_names_the_problem(changes, match):
    with pytest.raises(ManifestError, match=match):
        _manifest(**changes)


def test_split_lookup_and_shard_paths():
    m = _manifest()
    assert m.shard_paths("s3://bucket/ds/", "train") == ["s3://bucket/ds/train/a.parquet"]
    with pytest.raises(KeyError, match="available"):
        m.split("validation")


def test_load_split_reads_pcm_as_int16_matrix(tmp_path: Path):
    root = _dataset(tmp_path)
    d = load_split(str(root), "train")
    assert set(d) == set(ROW_COLUMNS)
    assert d["pcm"].dtype == np.int16 and d["pcm"].shape == (3, T)
    np.testing.assert_array_equal(d["pcm"][:, 0], [0, 1, 2])
    np.testing.assert_array_equal(d["label"], [0, 0, 1])
    assert d["label"].dtype == np.int64 and d["sample_id"].dtype == np.int64
    assert list(d["path"]) == ["c1.wav", "c2.wav", "d1.wav"]
    only = load_split(str(root), "test", columns=["label"])
    assert list(only) == ["label"] and only["label"].tolist() == [2]


def test_load_split_errors(tmp_path: Path):
    root = _dataset(tmp_path)
    with pytest.raises(KeyError, match="available"):
        load_split(str(root), "validation")
    with pytest.raises(KeyError, match="unknown columns"):
        load_split(str(root), "train", columns=["wave"])
    _write_shard(root / "train/a.parquet", [("c1.wav", 0, "train")])  # now disagrees
    with pytest.raises(ManifestError, match="manifest says 3"):
        load_split(str(root), "train")


def test_load_split_accepts_list_storage_of_other_writers(tmp_path: Path):
    """A pcm column stored as a plain list<int16> (e.g. Ray's own tensor type) reads the same."""
    pcm = pa.array([[1, 2, 3, 4, 5, 6, 7, 8]], pa.list_(pa.int16()))
    table = pa.table({"pcm": pcm, "label": pa.array([0], pa.int64())})
    (tmp_path / "train").mkdir()
    pq.write_table(table, tmp_path / "train/a.parquet")
    _manifest(splits={"train": SplitInfo(1, ("train/a.parquet",), {"cat": 1})}).write(str(tmp_path))
    d = load_split(str(tmp_path), "train", columns=["pcm"])
    np.testing.assert_array_equal(d["pcm"], [[1, 2, 3, 4, 5, 6, 7, 8]])


def test_pcm_column_round_trips_through_parquet_slices_and_chunks(tmp_path: Path):
    pcm = np.random.default_rng(0).integers(-2**15, 2**15, (7, T)).astype(np.int16)
    pcm[0, :2] = [-32768, 32767]
    column = pcm_to_arrow(pcm)
    assert column.type == pa.binary(2 * T)
    np.testing.assert_array_equal(pcm_from_arrow(column, T), pcm)
    np.testing.assert_array_equal(pcm_from_arrow(column.slice(2, 3)), pcm[2:5])
    chunked = pa.chunked_array([column.slice(0, 4), column.slice(4)])
    np.testing.assert_array_equal(pcm_from_arrow(chunked), pcm)
    pq.write_table(pa.table({"pcm": column}), tmp_path / "x.parquet")
    back = pq.read_table(tmp_path / "x.parquet")["pcm"]
    np.testing.assert_array_equal(pcm_from_arrow(back, T), pcm)
    # Ray Data's numpy batches hold the bytes as an object array.
    values = np.asarray(back.to_pylist(), dtype=object)
    np.testing.assert_array_equal(pcm_from_values(values, T), pcm)
    assert pcm_from_values(values[:0], T).shape == (0, T)
    with pytest.raises(ManifestError, match=f"{T} samples per clip; expected clip_samples=9"):
        pcm_from_arrow(column, 9)
    with pytest.raises(ManifestError, match="clips of"):
        pcm_from_values(np.asarray([b"\x00\x00", b"\x00"], dtype=object))


def test_version_1_shards_with_tensor_pcm_still_read(tmp_path: Path):
    pcm = np.arange(3 * T, dtype=np.int16).reshape(3, T)
    rows = [("c1.wav", 0, "train"), ("c2.wav", 0, "train"), ("d1.wav", 1, "train")]
    table = pa.table({
        "sample_id": pa.array([sample_id_for(p) for p, _, _ in rows], pa.int64()),
        "pcm": pa.FixedShapeTensorArray.from_numpy_ndarray(pcm),
        "label": pa.array([lab for _, lab, _ in rows], pa.int64()),
        "split": pa.array(["train"] * 3), "path": pa.array([p for p, _, _ in rows])})
    (tmp_path / "train").mkdir()
    pq.write_table(table, tmp_path / "train/a.parquet")
    _write_shard(tmp_path / "test/b.parquet", [("e1.wav", 2, "test")])
    _manifest(format_version=1).write(str(tmp_path))
    manifest = Manifest.read(str(tmp_path))
    assert manifest.format_version == 1
    assert manifest.to_dict()["schema"]["pcm"] == f"int16[{T}]"
    np.testing.assert_array_equal(load_split(str(tmp_path), "train")["pcm"], pcm)
