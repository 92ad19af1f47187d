"""Tests for clar_ray.data.recipes: listings of small generated layouts (no Ray, no decoding)."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
import soundfile as sf

from clar_ray.data import recipes
from clar_ray.data.recipes import RECIPES, get_recipe, list_recipe, resolve_options


def _wav(path: Path, seconds: float = 0.05, sample_rate: int = 8000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(seconds * sample_rate), np.float32), sample_rate)
    return path


def _tree(root: Path, rels: list[str]) -> Path:
    for rel in rels:
        _wav(root / rel) if rel.endswith((".wav", ".mp3")) else _text(root / rel)
    return root


def _text(path: Path, text: str = "hello") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---- registry and options ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_documents_itself(name):
    recipe = RECIPES[name]
    assert recipe.name == name and recipe.help
    assert recipe.source in ("required", "optional", "none")
    for option in recipe.options:
        assert option.help and isinstance(option.default, str)
        assert not option.choices or option.default in option.choices
    assert set(resolve_options(recipe, None)) == {o.name for o in recipe.options}


def test_expected_recipes_exist():
    assert set(RECIPES) == {
        "folder",
        "fsdd",
        "philharmonia",
        "speechcommands",
        "esc50",
        "nsynth",
        "synthetic",
    }


def test_unknown_option_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown option.*'colour'.*test_fraction.*seed"):
        resolve_options(get_recipe("folder"), {"colour": "red"})
    with pytest.raises(ValueError, match="allowed: none"):
        resolve_options(get_recipe("fsdd"), {"x": "1"})
    with pytest.raises(ValueError, match=r"label='loudness'.*instrument"):
        resolve_options(get_recipe("philharmonia"), {"label": "loudness"})
    with pytest.raises(ValueError, match="unknown recipe 'mnist'"):
        get_recipe("mnist")


def test_effective_options_fill_defaults_and_stringify():
    opts = resolve_options(get_recipe("synthetic"), {"clips_per_class": 3})
    assert opts == {"num_classes": "6", "clips_per_class": "3", "test_fraction": "0.2", "seed": "0"}


def test_bad_option_values_are_errors(tmp_path: Path):
    _tree(tmp_path, ["a/1.wav", "a/2.wav", "b/1.wav"])
    with pytest.raises(ValueError, match="test_fraction must be a float"):
        list_recipe("folder", str(tmp_path), {"test_fraction": "lots"})
    with pytest.raises(ValueError, match=r"test_fraction must be in \[0.0, 0.99\]"):
        list_recipe("folder", str(tmp_path), {"test_fraction": "1.5"})
    with pytest.raises(ValueError, match="not a regex"):
        list_recipe("folder", str(tmp_path), {"group_regex": "("})


def test_source_rules(tmp_path: Path):
    with pytest.raises(ValueError, match="takes no source"):
        list_recipe("synthetic", str(tmp_path), None)
    with pytest.raises(ValueError, match="needs a source"):
        list_recipe("folder", None, None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_recipe("folder", str(tmp_path / "nope"), None)
    with pytest.raises(NotADirectoryError):
        list_recipe("folder", str(_text(tmp_path / "f.txt")), None)


# ---- pure split helpers ------------------------------------------------------------------------


def test_stratified_split_counts_per_class_and_determinism():
    labels = ["a"] * 10 + ["b"] * 5 + ["c"] * 2 + ["d"]
    s1 = recipes.stratified_split(labels, 0.2, np.random.default_rng(0))
    s2 = recipes.stratified_split(labels, 0.2, np.random.default_rng(0))
    s3 = recipes.stratified_split(labels, 0.2, np.random.default_rng(1))
    assert s1 == s2 and s1 != s3
    tests = Counter(lab for lab, s in zip(labels, s1) if s == "test")
    assert tests == {"a": 2, "b": 1, "c": 1}  # "d" has one item: it stays in train
    assert recipes.stratified_split(labels, 0.0, np.random.default_rng(0)) == ["train"] * 18
    with pytest.raises(ValueError, match="test_fraction"):
        recipes.stratified_split(labels, 1.0, np.random.default_rng(0))


def test_grouped_split_keeps_groups_together():
    groups = [f"g{i % 7}" for i in range(70)]
    splits = recipes.grouped_split(groups, 0.3, np.random.default_rng(0))
    sides = {g: {s for gg, s in zip(groups, splits) if gg == g} for g in set(groups)}
    assert all(len(v) == 1 for v in sides.values())
    n_test = splits.count("test")
    assert 21 <= n_test < 70
    with pytest.raises(ValueError, match="at least 2 groups"):
        recipes.grouped_split(["x", "x"], 0.5, np.random.default_rng(0))


# ---- walking -----------------------------------------------------------------------------------


def test_walk_records_unreadable_folders(tmp_path: Path, monkeypatch):
    _tree(tmp_path, ["a/1.wav", "locked/2.wav", "b/c/3.wav"])
    real = recipes.base._list_dir

    def fake(fs, path):
        if path.endswith("/locked"):
            raise PermissionError(13, "Permission denied", path)
        return real(fs, path)

    monkeypatch.setattr(recipes.base, "_list_dir", fake)
    source = recipes.Source.open(str(tmp_path))
    files, skipped = recipes.walk_files(source)
    assert [f for f, _ in files] == ["a/1.wav", "b/c/3.wav"]
    assert skipped == [{"path": "locked/", "reason": skipped[0]["reason"]}]
    assert skipped[0]["reason"].startswith("unreadable folder") and "denied" in skipped[0]["reason"]


# ---- folder ------------------------------------------------------------------------------------


def test_folder_flat_layout_stratified_and_accounted(tmp_path: Path):
    rels = [f"cat/{i}.wav" for i in range(10)] + [f"dog/sub/{i}.wav" for i in range(5)]
    _tree(tmp_path, rels + ["README.txt", "dog/notes.txt", "with space/x y.wav"])
    listing = list_recipe("folder", str(tmp_path), {"test_fraction": "0.2", "seed": "3"})
    assert listing.labels == ("cat", "dog", "with space")
    assert listing.root == str(tmp_path)
    by_split = Counter((e.label, e.split) for e in listing.entries)
    assert by_split == {
        ("cat", "train"): 8,
        ("cat", "test"): 2,
        ("dog", "train"): 4,
        ("dog", "test"): 1,
        ("with space", "train"): 1,
    }
    reasons = {s["path"]: s["reason"] for s in listing.skipped}
    assert reasons == {
        "README.txt": "not inside a class folder",
        "dog/notes.txt": "not an audio file extension: .txt",
    }
    assert len(listing.entries) + len(listing.skipped) == 18
    assert "stratified" in listing.notes["split"]
    again = list_recipe("folder", str(tmp_path), {"test_fraction": "0.2", "seed": "3"})
    assert again == listing


def test_folder_split_layout(tmp_path: Path):
    _tree(
        tmp_path,
        ["train/a/1.wav", "train/b/2.wav", "Valid/a/3.wav", "test/b/4.wav", "test/loose.wav"],
    )
    listing = list_recipe("folder", str(tmp_path), None)
    assert {(e.path, e.label, e.split) for e in listing.entries} == {
        ("train/a/1.wav", "a", "train"),
        ("train/b/2.wav", "b", "train"),
        ("Valid/a/3.wav", "a", "validation"),
        ("test/b/4.wav", "b", "test"),
    }
    assert listing.skipped == (
        {"path": "test/loose.wav", "reason": "not inside a split/class folder"},
    )


def test_folder_mixed_layout_is_an_error(tmp_path: Path):
    _tree(tmp_path, ["train/a/1.wav", "dog/2.wav"])
    with pytest.raises(ValueError, match=r"mixes split folders \['train'\].*\['dog'\]"):
        list_recipe("folder", str(tmp_path), None)


def test_folder_group_regex_keeps_speakers_apart(tmp_path: Path):
    rels = [
        f"{d}/{d}_{spk}_{i}.wav"
        for d in "abc"
        for spk in ["ann", "bob", "cid", "dan"]
        for i in range(3)
    ]
    _tree(tmp_path, rels + ["a/nospeaker.wav"])
    listing = list_recipe(
        "folder", str(tmp_path), {"group_regex": r"_([a-z]+)_\d+\.wav$", "test_fraction": "0.25"}
    )
    side = {}
    for e in listing.entries:
        speaker = e.path.split("_")[1]
        assert side.setdefault(speaker, e.split) == e.split
    assert set(side.values()) == {"train", "test"}
    assert listing.skipped[0]["path"] == "a/nospeaker.wav"
    assert "group_regex" in listing.skipped[0]["reason"]


# ---- fsdd --------------------------------------------------------------------------------------


def test_fsdd_official_split_from_folder_or_recordings(tmp_path: Path):
    rels = [
        f"recordings/{d}_{spk}_{t}.wav"
        for d in (0, 7)
        for spk in ("jackson", "theo")
        for t in (0, 4, 5, 49)
    ]
    _tree(tmp_path, rels + ["recordings/bad name.wav", "README.md"])
    a = list_recipe("fsdd", str(tmp_path), None)
    b = list_recipe("fsdd", str(tmp_path / "recordings"), None)
    assert a == b  # same paths relative to recordings/: same sample ids either way
    assert a.labels == ("0", "7")
    split_of = {e.path: e.split for e in a.entries}
    assert split_of["0_jackson_0.wav"] == "test" and split_of["0_jackson_4.wav"] == "test"
    assert split_of["7_theo_5.wav"] == "train" and split_of["7_theo_49.wav"] == "train"
    assert Counter(split_of.values()) == {"test": 8, "train": 8}
    assert [s["path"] for s in a.skipped] == ["bad name.wav"]


def test_fsdd_real_dataset_counts(shared_data: Path):
    source = shared_data / "fsdd"
    if not source.is_dir():
        pytest.skip(f"{source} is absent")
    listing = list_recipe("fsdd", str(source), None)
    counts = Counter(e.split for e in listing.entries)
    assert counts == {"train": 2700, "test": 300}
    assert listing.labels == tuple(str(d) for d in range(10))
    assert not listing.skipped


# ---- philharmonia ------------------------------------------------------------------------------


def _philharmonia(root: Path) -> Path:
    rels = []
    for folder, stem in (("cor anglais", "english-horn"), ("flute", "flute")):
        for note in ("C4", "Cs4", "A3", "As5", "B2"):
            for dyn in ("forte", "piano"):
                rels.append(f"{folder}/{stem}_{note}_05_{dyn}_normal.mp3")
    rels.append("flute/flute_phrase_05_forte_normal.mp3")
    return _tree(root, rels)


def test_philharmonia_labels(tmp_path: Path):
    root = _philharmonia(tmp_path)
    inst = list_recipe("philharmonia", str(root), None)
    assert inst.labels == ("cor anglais", "flute")
    assert len(inst.entries) == 21 and not inst.skipped
    assert "no official split" in inst.notes["split"]
    pitch = list_recipe("philharmonia", str(root), {"label": "pitch"})
    assert pitch.labels == ("B2", "A3", "C4", "Cs4", "As5")  # in pitch order
    assert [s["path"] for s in pitch.skipped] == ["flute/flute_phrase_05_forte_normal.mp3"]
    pc = list_recipe("philharmonia", str(root), {"label": "pitch_class"})
    assert pc.labels == ("C", "Cs", "D", "Ds", "E", "F", "Fs", "G", "Gs", "A", "As", "B")
    assert {e.label for e in pc.entries} == {"C", "Cs", "A", "As", "B"}
    # 4 clips per pitch class (2 instruments x 2 dynamics): one of each goes to test
    assert Counter(e.split for e in pc.entries) == {"train": 15, "test": 5}


def test_philharmonia_real_dataset_listing(shared_data: Path):
    source = shared_data / "philharmonia"
    if not source.is_dir():
        pytest.skip(f"{source} is absent")
    listing = list_recipe("philharmonia", str(source), None)
    assert len(listing.entries) == 8190 and len(listing.labels) == 12
    assert "bass clarinet" in listing.labels and not listing.skipped


# ---- speech commands ---------------------------------------------------------------------------


def _speech_commands(root: Path) -> Path:
    rels = [
        f"{w}/{h}_nohash_{i}.wav"
        for w in ("zero", "nine", "marvin", "yes")
        for h in ("aa11", "bb22")
        for i in (0, 1)
    ]
    _tree(root, rels + ["_background_noise_/white_noise.wav", "LICENSE", "README.md"])
    _text(root / "validation_list.txt", "zero/aa11_nohash_0.wav\nmarvin/aa11_nohash_0.wav\n")
    _text(root / "testing_list.txt", "nine/bb22_nohash_1.wav\nzero/gone_nohash_0.wav\n")
    return root


def test_speechcommands_sc10_and_all35(tmp_path: Path):
    root = _speech_commands(tmp_path / "sc")
    sc10 = list_recipe("speechcommands", str(root), None)
    assert sc10.labels[:3] == ("zero", "one", "two") and len(sc10.labels) == 10
    split_of = {e.path: e.split for e in sc10.entries}
    assert len(split_of) == 8
    assert split_of["zero/aa11_nohash_0.wav"] == "validation"
    assert split_of["nine/bb22_nohash_1.wav"] == "test"
    assert Counter(split_of.values()) == {"train": 6, "validation": 1, "test": 1}
    assert sc10.skipped == (
        {"path": "zero/gone_nohash_0.wav", "reason": "listed in the test list but missing"},
    )
    assert sc10.excluded == {
        "background noise (not a labelled command)": 1,
        "word 'marvin' not in subset sc10": 4,
        "word 'yes' not in subset sc10": 4,
    }
    all35 = list_recipe("speechcommands", str(root), {"subset": "all35"})
    assert len(all35.labels) == 35 and list(all35.labels) == sorted(all35.labels)
    assert len(all35.entries) == 16


def test_speechcommands_needs_the_official_lists(tmp_path: Path):
    _tree(tmp_path, ["zero/a_nohash_0.wav"])
    with pytest.raises(FileNotFoundError, match="validation_list.txt"):
        list_recipe("speechcommands", str(tmp_path), None)


def test_speechcommands_downloads_once_with_a_mocked_fetch(tmp_path: Path, monkeypatch):
    mimic = _speech_commands(tmp_path / "mimic")
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for path in sorted(mimic.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(mimic)), recursive=False)
    calls = []

    def fake_fetch(url, dest):
        calls.append(url)
        Path(dest).write_bytes(archive.getvalue())

    monkeypatch.setattr(recipes.speechcommands, "_fetch_url", fake_fetch)
    cache = tmp_path / "cache"
    listing = list_recipe("speechcommands", None, {"download_dir": str(cache)})
    assert calls == [recipes.SPEECH_COMMANDS_URL]
    assert listing.root == str(cache / "speech_commands_v0.02")
    assert len(listing.entries) == 8
    again = list_recipe("speechcommands", None, {"download_dir": str(cache)})
    assert calls == [recipes.SPEECH_COMMANDS_URL] and again == listing  # reused, not refetched


def test_speechcommands_download_failure_is_explained(tmp_path: Path, monkeypatch):
    def offline(url, dest):
        raise OSError("network is unreachable")

    monkeypatch.setattr(recipes.speechcommands, "_fetch_url", offline)
    with pytest.raises(RuntimeError, match="could not download .*unreachable.*pass the folder"):
        list_recipe("speechcommands", None, {"download_dir": str(tmp_path)})


# ---- esc50 -------------------------------------------------------------------------------------


def _esc50(root: Path) -> Path:
    rows = ["filename,fold,target,category,esc10,src_file,take"]
    for fold in range(1, 6):
        for target, category, esc10 in (
            (0, "dog", "True"),
            (1, "rooster", "False"),
            (10, "rain", "True"),
        ):
            name = f"{fold}-{target}-A-{target}.wav"
            rows.append(f"{name},{fold},{target},{category},{esc10},{target},A")
            if name != "3-10-A-10.wav":
                _wav(root / "audio" / name)
    _wav(root / "audio" / "stray.wav")
    _text(root / "meta" / "esc50.csv", "\n".join(rows) + "\n")
    return root


def test_esc50_folds_subsets_and_missing_files(tmp_path: Path):
    root = _esc50(tmp_path)
    esc50 = list_recipe("esc50", str(root), None)
    assert esc50.labels == ("dog", "rooster", "rain")  # in target order
    assert Counter(e.split for e in esc50.entries) == {"train": 11, "test": 3}
    assert {s["path"]: s["reason"] for s in esc50.skipped} == {
        "audio/3-10-A-10.wav": "listed in meta/esc50.csv but missing",
        "audio/stray.wav": "not listed in meta/esc50.csv",
    }
    esc10 = list_recipe("esc50", str(root), {"subset": "esc10", "test_fold": "1"})
    assert esc10.labels == ("dog", "rain")
    assert {e.path for e in esc10.entries if e.split == "test"} == {
        "audio/1-0-A-0.wav",
        "audio/1-10-A-10.wav",
    }
    assert esc10.excluded == {"not in subset esc10": 5}
    with pytest.raises(ValueError, match="test_fold"):
        list_recipe("esc50", str(root), {"test_fold": "6"})


# ---- nsynth ------------------------------------------------------------------------------------


def test_nsynth_splits_and_labels(tmp_path: Path):
    families = {"bass": 0, "guitar": 3, "vocal": 10}
    for folder in ("nsynth-train", "nsynth-valid", "nsynth-test"):
        examples = {}
        for fam, idx in families.items():
            for pitch in (40, 60):
                key = f"{fam}_acoustic_000-{pitch:03d}-100"
                examples[key] = {
                    "instrument_family": idx,
                    "instrument_family_str": fam,
                    "pitch": pitch,
                }
                if not (folder == "nsynth-test" and fam == "vocal" and pitch == 60):
                    _wav(tmp_path / folder / "audio" / f"{key}.wav")
        _text(tmp_path / folder / "examples.json", json.dumps(examples))
    fam = list_recipe("nsynth", str(tmp_path), None)
    assert fam.labels == ("bass", "guitar", "vocal")
    assert Counter(e.split for e in fam.entries) == {"train": 6, "validation": 6, "test": 5}
    assert fam.skipped == (
        {
            "path": "nsynth-test/audio/vocal_acoustic_000-060-100.wav",
            "reason": "listed in examples.json but missing",
        },
    )
    pitch = list_recipe("nsynth", str(tmp_path), {"label": "pitch"})
    assert pitch.labels == ("40", "60")
    with pytest.raises(FileNotFoundError, match="NSynth"):
        list_recipe("nsynth", str(tmp_path / "nsynth-train" / "audio"), None)


# ---- synthetic ---------------------------------------------------------------------------------


def test_synthetic_listing():
    listing = list_recipe("synthetic", None, {"num_classes": "4", "clips_per_class": "10"})
    assert listing.labels == ("harmonic", "noise_bursts", "chirp_up", "chirp_down")
    assert listing.root == "" and listing.synthetic is not None
    assert Counter(e.split for e in listing.entries) == {"train": 32, "test": 8}
    with pytest.raises(ValueError, match="num_classes"):
        list_recipe("synthetic", None, {"num_classes": "9"})


def test_remote_filesystems_are_listed_through_pyarrow(tmp_path: Path, monkeypatch):
    """A URI source is listed through pyarrow.fs, and entries keep the URI as their root."""
    _tree(tmp_path, ["a/1.wav", "b/2.wav"])
    listing = list_recipe("folder", f"file://{tmp_path}", {"test_fraction": "0"})
    assert [e.path for e in listing.entries] == ["a/1.wav", "b/2.wav"]
    assert isinstance(recipes.Source.open(f"file://{tmp_path}").fs, pafs.LocalFileSystem)
