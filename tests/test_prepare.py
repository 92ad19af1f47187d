"""Tests for clar_ray.data.prepare: end to end on Ray with small generated folders.

One local Ray session for the module. Every test checks what was written (shards, manifest),
and the broken-files test accounts for every file: rows + skipped == files.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import ray
import soundfile as sf

from clar_ray.data import recipes
from clar_ray.data.manifest import Manifest, load_split, pcm_from_values, sample_id_for
from clar_ray.data.prepare import PrepareError, format_summary, prepare_dataset

SR = 16000


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    os.environ["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _sine(sample_rate: int, seconds: float, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x] * channels, 1) if channels > 1 else x


def _write(path: Path, x: np.ndarray, sample_rate: int, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sample_rate, **kw)
    return path


def _files_on_disk(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _broken_folder(root: Path) -> dict[str, str | None]:
    """Class folders with every kind of awkward input; value: start of the reason (None: kept)."""
    good, bad = root / "good", root / "bad"
    _write(good / "rate 8k.wav", _sine(8000, 0.5), 8000)
    _write(good / "rate 22k.wav", _sine(22050, 0.5), 22050)
    _write(good / "rate 44k.flac", _sine(44100, 0.5), 44100)
    _write(good / "stereo 48k.wav", _sine(48000, 0.5, channels=2), 48000)
    _write(good / "short.ogg", _sine(16000, 0.2), 16000, subtype="VORBIS")
    _write(good / "long.wav", _sine(8000, 120.0), 8000)  # two minutes: only 1 s is decoded
    _write(good / "silence.wav", np.zeros(8000, np.float32), 8000)
    full = (good / "rate 8k.wav").read_bytes()
    (good / "truncated data.wav").write_bytes(full[: len(full) // 2])
    bad.mkdir()
    (bad / "empty.wav").write_bytes(b"")
    (bad / "not audio.wav").write_bytes(b"definitely not audio\n" * 50)
    (bad / "cut header.wav").write_bytes(full[:20])
    nan = _sine(8000, 0.3)
    nan[5] = np.nan
    _write(bad / "nan.wav", nan, 8000, subtype="FLOAT")
    inf = _sine(8000, 0.3)
    inf[7] = np.inf
    _write(bad / "inf.wav", inf, 8000, subtype="FLOAT")
    (bad / "notes.txt").write_text("not a sound")
    _write(root / "locked" / "hidden.wav", _sine(8000, 0.1), 8000)
    return {
        "good/rate 8k.wav": None,
        "good/rate 22k.wav": None,
        "good/rate 44k.flac": None,
        "good/stereo 48k.wav": None,
        "good/short.ogg": None,
        "good/long.wav": None,
        "good/silence.wav": None,
        "good/truncated data.wav": None,
        "bad/empty.wav": "empty file",
        "bad/not audio.wav": "cannot decode",
        "bad/cut header.wav": "cannot decode",
        "bad/nan.wav": "non-finite",
        "bad/inf.wav": "non-finite",
        "bad/notes.txt": "not an audio file extension",
        "locked/": "unreadable folder",
    }


@pytest.fixture
def locked_folder(monkeypatch):
    """Make folders named 'locked' unreadable: chmod when we are not root, else refuse listing."""
    real = recipes.base._list_dir

    def refuse(fs, path):
        if path.rstrip("/").endswith("/locked"):
            raise PermissionError(13, "Permission denied", path)
        return real(fs, path)

    monkeypatch.setattr(recipes.base, "_list_dir", refuse)


def test_broken_files_are_all_accounted_for(tmp_path: Path, locked_folder):
    source = tmp_path / "src"
    expected = _broken_folder(source)
    if os.geteuid() != 0:
        (source / "locked").chmod(0)
    out = tmp_path / "out"
    m = prepare_dataset(
        "folder", str(out), source=str(source), options={"test_fraction": "0"}, progress=False
    )
    skipped = {s["path"]: s["reason"] for s in m.skipped}
    kept = {p for p, r in expected.items() if r is None}
    for path, reason in expected.items():
        if reason is None:
            assert path not in skipped, (path, skipped.get(path))
        else:
            assert skipped[path].startswith(reason), (path, skipped[path])
    # Every file on disk is a row or a skip record (the locked folder is one record for its file).
    data = load_split(str(out), "train")
    on_disk = [p for p in _files_on_disk(source) if "locked" not in p.parts]
    assert len(data["path"]) + len(skipped) - 1 == len(on_disk)
    assert set(data["path"]) == kept
    assert m.silent == ("good/silence.wav",)
    assert data["pcm"].shape == (len(kept), SR) and data["pcm"].dtype == np.int16
    by_path = dict(zip(data["path"], data["pcm"]))
    assert np.all(by_path["good/short.ogg"][int(0.2 * SR) + 200 :] == 0)  # right-padded
    assert np.count_nonzero(by_path["good/long.wav"][-100:]) > 50  # cropped, audio to the end
    assert np.abs(by_path["good/stereo 48k.wav"]).max() > 10000  # mixed to mono, not cancelled
    assert m.labels == ("bad", "good")
    assert m.splits["train"].class_counts == {"bad": 0, "good": len(kept)}
    assert Manifest.read(str(out)) == m
    summary = format_summary(m, str(out))
    assert f"skipped: {len(skipped)}" in summary and str(out) in summary
    if os.geteuid() != 0:
        (source / "locked").chmod(0o755)


def test_strict_mode_fails_and_leaves_no_dataset(tmp_path: Path, locked_folder):
    source = tmp_path / "src"
    _broken_folder(source)
    with pytest.raises(PrepareError, match=r"strict mode: \d+ file\(s\) skipped") as info:
        prepare_dataset(
            "folder", str(tmp_path / "out1"), source=str(source), strict=True, progress=False
        )
    assert any(s["path"] == "locked/" for s in info.value.skipped)
    # Only decode failures: listing is clean, the error comes after decoding and cleans up.
    shutil.rmtree(source / "locked")
    shutil.rmtree(source / "bad")
    (source / "good" / "zero.wav").write_bytes(b"")
    out = tmp_path / "out2"
    with pytest.raises(PrepareError, match="good/zero.wav: empty file"):
        prepare_dataset(
            "folder",
            str(out),
            source=str(source),
            strict=True,
            options={"test_fraction": "0"},
            progress=False,
        )
    assert not (out / "manifest.json").exists() and not (out / "train").exists()


def test_nothing_decodable_is_an_error(tmp_path: Path):
    source = tmp_path / "src"
    (source / "a").mkdir(parents=True)
    (source / "a" / "x.wav").write_bytes(b"junk" * 100)
    (source / "a" / "y.wav").write_bytes(b"")
    (source / "a" / "empty").mkdir()
    out = tmp_path / "out"
    with pytest.raises(
        PrepareError, match=r"(?s)no decodable audio: all 2 files.*a/x.wav: cannot decode"
    ):
        prepare_dataset("folder", str(out), source=str(source), progress=False)
    assert not (out / "manifest.json").exists()
    with pytest.raises(PrepareError, match="found no audio files"):
        prepare_dataset(
            "folder", str(tmp_path / "o2"), source=str(source / "a" / "empty"), progress=False
        )


def test_synthetic_end_to_end_stable_ids_and_ray_reads_int16(tmp_path: Path):
    out = str(tmp_path / "syn")
    opts = {"num_classes": "3", "clips_per_class": "6", "seed": "1"}
    m = prepare_dataset("synthetic", out, options=opts, rows_per_shard=5, progress=False)
    assert m.labels == ("harmonic", "noise_bursts", "chirp_up")
    assert m.options == {
        "num_classes": "3",
        "clips_per_class": "6",
        "test_fraction": "0.2",
        "seed": "1",
    }
    assert {k: v.rows for k, v in m.splits.items()} == {"train": 15, "test": 3}
    assert list(m.splits) == ["train", "test"]
    assert len(m.splits["train"].files) >= 3  # rows_per_shard=5 gives several shards
    first = load_split(out, "train")
    assert first["sample_id"].tolist() == [sample_id_for(p) for p in first["path"]]
    assert set(first["split"]) == {"train"}
    # Ray Data reads the pcm column back as bytes per clip, which pcm_from_values decodes.
    batch = next(
        iter(
            ray.data.read_parquet(m.shard_paths(out, "train")).iter_batches(
                batch_format="numpy", batch_size=8
            )
        )
    )
    pcm = pcm_from_values(batch["pcm"], SR)
    assert pcm.dtype == np.int16 and pcm.shape == (8, SR)
    by_id = dict(zip(first["sample_id"], first["pcm"]))
    for sample_id, clip in zip(batch["sample_id"], pcm):
        np.testing.assert_array_equal(clip, by_id[sample_id])
    # Re-running refuses, then with overwrite=True gives identical rows (stable ids, same audio).
    with pytest.raises(FileExistsError, match="overwrite=True"):
        prepare_dataset("synthetic", out, options=opts, progress=False)
    prepare_dataset("synthetic", out, options=opts, overwrite=True, progress=False)
    second = load_split(out, "train")
    order1, order2 = np.argsort(first["sample_id"]), np.argsort(second["sample_id"])
    np.testing.assert_array_equal(first["sample_id"][order1], second["sample_id"][order2])
    np.testing.assert_array_equal(first["pcm"][order1], second["pcm"][order2])


def test_overwrite_replaces_a_previous_dataset_and_refuses_foreign_folders(tmp_path: Path):
    source = tmp_path / "src"
    for split in ("train", "validation", "test"):
        _write(source / split / "a" / "1.wav", _sine(8000, 0.1), 8000)
    out = tmp_path / "out"
    first = prepare_dataset(
        "folder", str(out), source=str(source), sample_rate=8000, clip_seconds=0.25, progress=False
    )
    assert list(first.splits) == ["train", "validation", "test"]
    assert first.clip_samples == 2000
    prepare_dataset(
        "synthetic",
        str(out),
        overwrite=True,
        progress=False,
        options={"num_classes": "2", "clips_per_class": "3"},
    )
    assert not (out / "validation").exists()  # the old dataset's split is gone
    assert Manifest.read(str(out)).recipe == "synthetic"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match="not empty .*thesis.tex"):
        prepare_dataset("synthetic", str(foreign), progress=False)


def test_bad_arguments_fail_before_any_work(tmp_path: Path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="sample_rate"):
        prepare_dataset("synthetic", str(out), sample_rate=0)
    with pytest.raises(ValueError, match="clip_seconds"):
        prepare_dataset("synthetic", str(out), clip_seconds=-1.0)
    with pytest.raises(ValueError, match="rows_per_shard"):
        prepare_dataset("synthetic", str(out), rows_per_shard=0)
    with pytest.raises(ValueError, match="unknown option"):
        prepare_dataset("synthetic", str(out), options={"clips": "3"})
    assert not out.exists()


def test_philharmonia_subset_mp3_and_spaces(tmp_path: Path, shared_data: Path):
    full = shared_data / "philharmonia"
    if not full.is_dir():
        pytest.skip(f"{full} is absent")
    source = tmp_path / "phil"
    for folder in sorted(p for p in full.iterdir() if p.is_dir()):
        for f in sorted(folder.glob("*.mp3"))[:2]:
            (source / folder.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, source / folder.name / f.name)
    m = prepare_dataset(
        "philharmonia",
        str(tmp_path / "out"),
        source=str(source),
        options={"test_fraction": "0.5"},
        progress=False,
    )
    assert len(m.labels) == 12 and "cor anglais" in m.labels
    assert {k: v.rows for k, v in m.splits.items()} == {"train": 12, "test": 12}
    assert not m.skipped


def test_fsdd_real_dataset(tmp_path: Path, shared_data: Path):
    source = shared_data / "fsdd"
    if not source.is_dir():
        pytest.skip(f"{source} is absent")
    m = prepare_dataset("fsdd", str(tmp_path / "fsdd"), source=str(source), progress=False)
    assert {k: v.rows for k, v in m.splits.items()} == {"train": 2700, "test": 300}
    assert m.sample_rate == 16000 and m.clip_samples == 16000 and not m.skipped
    assert set(m.splits["test"].class_counts.values()) == {30}
    test = load_split(str(tmp_path / "fsdd"), "test", columns=["label", "path"])
    assert Counter(p.split("_")[2].split(".")[0] for p in test["path"]) == {
        str(t): 60 for t in range(5)
    }


@pytest.mark.slow
def test_philharmonia_real_dataset(tmp_path: Path, shared_data: Path):
    source = shared_data / "philharmonia"
    if not source.is_dir():
        pytest.skip(f"{source} is absent")
    m = prepare_dataset("philharmonia", str(tmp_path / "phil"), source=str(source), progress=False)
    assert m.num_rows + len(m.skipped) == 8190 and len(m.labels) == 12
    assert m.num_rows == 8190


def test_file_loader_streams_big_files_like_small_ones(tmp_path: Path, monkeypatch):
    from clar_ray.data import decode_task

    _write(tmp_path / "a b" / "x.wav", _sine(44100, 5.0, channels=2), 44100)
    loader = decode_task.FileLoader(str(tmp_path))
    in_memory = loader.load("a b/x.wav", SR, SR)
    monkeypatch.setattr(decode_task, "IN_MEMORY_BYTES", 1000)  # now streamed from the open file
    streamed = loader.load("a b/x.wav", SR, SR)
    np.testing.assert_array_equal(in_memory, streamed)
    assert in_memory.shape == (SR,) and in_memory.dtype == np.int16
    with pytest.raises(decode_task.AudioError, match="cannot open"):
        loader.load("a b/missing.wav", SR, SR)


def test_failed_strict_rerun_keeps_the_previous_dataset(tmp_path: Path):
    out = tmp_path / "out"
    prepare_dataset(
        "synthetic", str(out), progress=False, options={"num_classes": "2", "clips_per_class": "2"}
    )
    source = tmp_path / "src"
    _write(source / "a" / "1.wav", _sine(8000, 0.1), 8000)
    (source / "a" / "notes.txt").write_text("x")
    with pytest.raises(PrepareError, match="not an audio file extension"):
        prepare_dataset(
            "folder", str(out), source=str(source), strict=True, overwrite=True, progress=False
        )
    assert Manifest.read(str(out)).recipe == "synthetic"
    assert load_split(str(out), "train")["pcm"].shape[0] == 2
