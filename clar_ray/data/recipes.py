"""Dataset recipes: which files make a dataset, their labels and splits.

A recipe lists a source (a local folder or any URI ``pyarrow.fs`` understands) on the driver and
returns a ``Listing``: entries ``(relative path, label, split)``, the label order, and every file or
folder it could not use with the reason. Decoding happens later, in ``prepare.py``.

Recipes (``RECIPES``; each declares its options, with defaults and help text):
    folder          CLASS/... or SPLIT/CLASS/... folders; else a seeded class-stratified split
    fsdd            Free Spoken Digit Dataset, official split (takes 0-4 are test)
    philharmonia    Philharmonia orchestral notes: instrument, pitch or pitch class; seeded split
    speechcommands  Speech Commands v0.02 (sc10 digits or all 35 words), official lists
    esc50           ESC-50 / ESC-10, folds 1-4 train, fold 5 test
    nsynth          NSynth: instrument family or pitch, official train/valid/test folders
    synthetic       generated sounds (no source); see ``synthetic.py``

Options are strings (as they come from the command line) and every effective value, defaults
included, is recorded in the manifest. Files a recipe leaves out on purpose (e.g. words outside
``subset=sc10``) are counted in ``Listing.excluded``; files it wanted but cannot use are listed in
``Listing.skipped``.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import re
import shutil
import tarfile
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow.fs as pafs

from clar_ray.data.audio import AUDIO_EXTENSIONS
from clar_ray.data.synthetic import KINDS, SyntheticSpec, clip_path
from clar_ray.storage import resolve_filesystem

__all__ = [
    "RECIPES",
    "SPEECH_COMMANDS_URL",
    "Entry",
    "Listing",
    "Option",
    "Recipe",
    "download_speech_commands",
    "get_recipe",
    "grouped_split",
    "list_recipe",
    "resolve_options",
    "stratified_split",
    "walk_files",
]

SPEECH_COMMANDS_URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
_MAX_DEPTH = 32
_SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "test": "test",
    "testing": "test",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
}


@dataclass(frozen=True)
class Option:
    """One recipe option: name, default (a string, as on the command line), help, allowed values."""

    name: str
    default: str
    help: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Entry:
    """One file of a dataset: path relative to the listing root (POSIX), label name, split name."""

    path: str
    label: str
    split: str


@dataclass(frozen=True)
class Listing:
    """What a recipe found.

    Attributes:
        root: the folder entries are relative to (absolute local path or URI); "" if generated.
        entries: the files to decode, sorted by path.
        labels: label names in index order.
        skipped: ``{"path", "reason"}`` for files or folders the recipe could not use.
        excluded: files left out by design, counted by reason.
        notes: facts for the manifest, e.g. how the split was made.
        synthetic: set for generated data (then ``root`` is "" and paths are virtual).
    """

    root: str
    entries: tuple[Entry, ...]
    labels: tuple[str, ...]
    skipped: tuple[dict[str, str], ...] = ()
    excluded: Mapping[str, int] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)
    synthetic: SyntheticSpec | None = None


Lister = Callable[["_Source | None", Mapping[str, str]], Listing]


@dataclass(frozen=True)
class Recipe:
    """A dataset recipe.

    Attributes:
        name: registry key.
        help: one line for ``clar-ray prepare --help``.
        options: the options it accepts.
        source: whether a source folder is "required", "optional" (downloads) or "none".
        lister: builds the ``Listing``; called by ``list_recipe``.
    """

    name: str
    help: str
    options: tuple[Option, ...]
    source: Literal["required", "optional", "none"]
    lister: Lister


# ---------------------------------------------------------------- options and sources


def resolve_options(recipe: Recipe, options: Mapping[str, object] | None) -> dict[str, str]:
    """Every option of a recipe with its effective value (defaults filled in), as strings.

    Raises:
        ValueError: an unknown option (naming the allowed ones) or a value not among its choices.
    """
    allowed = {o.name: o for o in recipe.options}
    given = dict(options or {})
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        names = ", ".join(f"{o.name} (default {o.default!r})" for o in recipe.options) or "none"
        raise ValueError(
            f"unknown option(s) {unknown} for recipe {recipe.name!r}; allowed: {names}"
        )
    out: dict[str, str] = {}
    for name, opt in allowed.items():
        value = str(given.get(name, opt.default)).strip()
        if opt.choices and value not in opt.choices:
            raise ValueError(
                f"option {name}={value!r} for recipe {recipe.name!r}; allowed: {list(opt.choices)}"
            )
        out[name] = value
    return out


def _number(options: Mapping[str, str], name: str, kind: type, lo: float, hi: float) -> float:
    raw = options[name]
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"option {name} must be a {kind.__name__}, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ValueError(f"option {name} must be in [{lo}, {hi}], got {raw!r}")
    return value


@dataclass(frozen=True)
class _Source:
    """A folder on some filesystem and the URI that names it for workers."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @classmethod
    def open(cls, uri: str) -> _Source:
        fs, path = resolve_filesystem(uri)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"source {uri!r} does not exist")
        if info.type != pafs.FileType.Directory:
            raise NotADirectoryError(f"source {uri!r} is not a folder")
        return cls(fs, path, path if isinstance(fs, pafs.LocalFileSystem) else uri.rstrip("/"))

    def child(self, rel: str) -> _Source:
        base, query = (self.uri.split("?", 1) + [""])[:2]
        uri = f"{base.rstrip('/')}/{rel}" + (f"?{query}" if query else "")
        return _Source(self.fs, posixpath.join(self.path, rel), uri)

    def kind(self, rel: str) -> pafs.FileType:
        return self.fs.get_file_info(posixpath.join(self.path, rel)).type

    def read_text(self, rel: str) -> str:
        with self.fs.open_input_stream(posixpath.join(self.path, rel)) as f:
            return f.read().decode("utf-8")


def _list_dir(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    """One folder's entries (a seam for tests that simulate unreadable folders)."""
    return fs.get_file_info(pafs.FileSelector(path, recursive=False))


def walk_files(source: _Source) -> tuple[list[tuple[str, int]], list[dict[str, str]]]:
    """All files under a source folder, one folder at a time so one bad folder costs only itself.

    Returns:
        ``[(relative POSIX path, size in bytes)]`` sorted by path, and ``{"path", "reason"}`` for
        folders that could not be listed and entries that are neither file nor folder.
    """
    files: list[tuple[str, int]] = []
    skipped: list[dict[str, str]] = []
    stack: list[tuple[str, int]] = [("", 0)]
    while stack:
        rel, depth = stack.pop()
        try:
            infos = _list_dir(source.fs, posixpath.join(source.path, rel) if rel else source.path)
        except OSError as e:
            if not rel:
                raise
            skipped.append({"path": rel + "/", "reason": f"unreadable folder: {_oneline(e)}"})
            continue
        for info in infos:
            child = f"{rel}/{info.base_name}" if rel else info.base_name
            if info.type == pafs.FileType.Directory:
                if depth + 1 > _MAX_DEPTH:
                    skipped.append({"path": child + "/", "reason": "folder nested too deep"})
                else:
                    stack.append((child, depth + 1))
            elif info.type == pafs.FileType.File:
                files.append((child, int(info.size or 0)))
            else:
                skipped.append({"path": child, "reason": "not a regular file (broken link?)"})
    files.sort()
    return files, sorted(skipped, key=lambda s: s["path"])


def _is_audio(rel: str) -> bool:
    return posixpath.splitext(rel)[1].lower() in AUDIO_EXTENSIONS


def _not_audio(rel: str) -> dict[str, str]:
    ext = posixpath.splitext(rel)[1] or "(none)"
    return {"path": rel, "reason": f"not an audio file extension: {ext}"}


def _oneline(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# ---------------------------------------------------------------- splits (pure)


def stratified_split(
    labels: Sequence[str], test_fraction: float, rng: np.random.Generator
) -> list[str]:
    """A class-stratified train/test assignment.

    Each class puts ``round(test_fraction * n)`` of its items in test (at least one, and at least
    one left in train, for classes with two or more items).

    Args:
        labels: label of each item, in a canonical order (e.g. items sorted by path).
        test_fraction: in [0, 1).
        rng: the only source of randomness.

    Returns:
        ``"train"`` or ``"test"`` for each item, aligned with ``labels``.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    out = ["train"] * len(labels)
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    for label in sorted(by_class):
        idx = by_class[label]
        n = len(idx)
        n_test = round(test_fraction * n)
        if test_fraction > 0 and n >= 2:
            n_test = min(max(n_test, 1), n - 1)
        for j in rng.permutation(n)[:n_test]:
            out[idx[j]] = "test"
    return out


def grouped_split(
    groups: Sequence[str], test_fraction: float, rng: np.random.Generator
) -> list[str]:
    """A train/test assignment that keeps every group (e.g. a speaker) on one side.

    Whole groups, in a random order, go to test until it holds at least ``test_fraction`` of the
    items; at least one group stays in train. Classes are not stratified, only balanced on average.

    Returns:
        ``"train"`` or ``"test"`` for each item, aligned with ``groups``.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    sizes = Counter(groups)
    names = sorted(sizes)
    if test_fraction > 0 and len(names) < 2:
        raise ValueError(f"a grouped split needs at least 2 groups, found {names}")
    target = test_fraction * len(groups)
    test: set[str] = set()
    count = 0
    for k in rng.permutation(len(names)):
        if count >= target or len(test) == len(names) - 1:
            break
        test.add(names[k])
        count += sizes[names[k]]
    return ["test" if g in test else "train" for g in groups]


def _seeded_split(
    items: list[tuple[str, str]], options: Mapping[str, str], group_regex: str = ""
) -> tuple[list[Entry], list[dict[str, str]], str]:
    """Split ``(path, label)`` items (sorted) with the test_fraction/seed options."""
    fraction = _number(options, "test_fraction", float, 0.0, 0.99)
    seed = int(_number(options, "seed", int, 0, 2**63 - 1))
    rng = np.random.default_rng(seed)
    skipped: list[dict[str, str]] = []
    if group_regex:
        try:
            pattern = re.compile(group_regex)
        except re.error as e:
            raise ValueError(f"option group_regex={group_regex!r} is not a regex: {e}") from None
        kept: list[tuple[str, str]] = []
        groups: list[str] = []
        for path, label in items:
            m = pattern.search(path)
            if m is None:
                skipped.append(
                    {"path": path, "reason": f"does not match group_regex {group_regex!r}"}
                )
                continue
            kept.append((path, label))
            groups.append(m.group(1) if pattern.groups else m.group(0))
        splits = grouped_split(groups, fraction, rng)
        note = (
            f"seeded split keeping groups apart (group_regex={group_regex!r}, "
            f"{len(set(groups))} groups), test_fraction={fraction}, seed={seed}; "
            "classes are not stratified"
        )
        items = kept
    else:
        splits = stratified_split([label for _, label in items], fraction, rng)
        note = f"seeded class-stratified split, test_fraction={fraction}, seed={seed}"
    entries = [Entry(p, label, s) for (p, label), s in zip(items, splits)]
    return entries, skipped, note


# ---------------------------------------------------------------- recipes


def _folder(source: _Source | None, options: Mapping[str, str]) -> Listing:
    assert source is not None
    files, skipped = walk_files(source)
    tops = sorted({rel.split("/")[0] for rel, _ in files if "/" in rel})
    split_tops = [t for t in tops if t.lower() in _SPLIT_FOLDERS]
    split_layout = bool(split_tops) and len(split_tops) == len(tops)
    if split_tops and not split_layout:
        raise ValueError(
            f"source {source.uri!r} mixes split folders {split_tops} with other folders "
            f"{sorted(set(tops) - set(split_tops))}; use SPLIT/CLASS/ for all or CLASS/ only"
        )
    depth = 2 if split_layout else 1  # path components before the file name
    items: list[tuple[str, str, str]] = []  # (path, label, split)
    for rel, _ in files:
        parts = rel.split("/")
        if len(parts) <= depth:
            where = "a split/class folder" if split_layout else "a class folder"
            skipped.append({"path": rel, "reason": f"not inside {where}"})
        elif not _is_audio(rel):
            skipped.append(_not_audio(rel))
        else:
            split = _SPLIT_FOLDERS[parts[0].lower()] if split_layout else ""
            items.append((rel, parts[depth - 1], split))
    if split_layout:
        entries = [Entry(p, label, s) for p, label, s in items]
        note = "split from the source's split folders: " + ", ".join(split_tops)
        if options["group_regex"]:
            note += " (group_regex unused)"
    else:
        entries, more, note = _seeded_split(
            [(p, lab) for p, lab, _ in items], options, options["group_regex"]
        )
        skipped += more
    labels = tuple(sorted({e.label for e in entries}))
    return Listing(source.uri, tuple(entries), labels, tuple(skipped), notes={"split": note})


_FSDD_NAME = re.compile(r"^(?P<digit>\d)_(?P<speaker>[^_/]+)_(?P<take>\d+)\.wav$", re.IGNORECASE)


def _fsdd(source: _Source | None, options: Mapping[str, str]) -> Listing:
    assert source is not None
    if source.kind("recordings") == pafs.FileType.Directory:
        source = source.child("recordings")
    files, skipped = walk_files(source)
    entries: list[Entry] = []
    for rel, _ in files:
        m = _FSDD_NAME.match(rel)
        if m is None:
            reason = "name is not {digit}_{speaker}_{take}.wav"
            skipped.append(
                _not_audio(rel) if not _is_audio(rel) else {"path": rel, "reason": reason}
            )
            continue
        split = "test" if int(m.group("take")) <= 4 else "train"
        entries.append(Entry(rel, m.group("digit"), split))
    labels = tuple(sorted({e.label for e in entries}))
    note = "official FSDD split: takes 0-4 of every speaker and digit are test, the rest train"
    return Listing(source.uri, tuple(entries), labels, tuple(skipped), notes={"split": note})


_PITCH_CLASSES = ("C", "Cs", "D", "Ds", "E", "F", "Fs", "G", "Gs", "A", "As", "B")
_NOTE = re.compile(r"^(?P<pc>[A-G]s?)(?P<octave>-?\d)$")


def _midi(note: str) -> int | None:
    m = _NOTE.match(note)
    if m is None or m.group("pc") not in _PITCH_CLASSES:
        return None
    return 12 * (int(m.group("octave")) + 1) + _PITCH_CLASSES.index(m.group("pc"))


def _philharmonia(source: _Source | None, options: Mapping[str, str]) -> Listing:
    assert source is not None
    files, skipped = walk_files(source)
    mode = options["label"]
    items: list[tuple[str, str]] = []
    midi: dict[str, int] = {}
    for rel, _ in files:
        parts = rel.split("/")
        if len(parts) < 2:
            skipped.append({"path": rel, "reason": "not inside an instrument folder"})
            continue
        if not _is_audio(rel):
            skipped.append(_not_audio(rel))
            continue
        fields = posixpath.splitext(parts[-1])[0].split("_")
        note = fields[1] if len(fields) > 1 else ""
        number = _midi(note)
        if mode != "instrument" and number is None:
            reason = f"no note like 'As3' in the name's second field (got {note!r})"
            skipped.append({"path": rel, "reason": reason})
            continue
        if mode == "instrument":
            label = parts[0]
        elif mode == "pitch":
            label = note
            midi[note] = int(number or 0)
        else:
            label = _PITCH_CLASSES[int(number or 0) % 12]
        items.append((rel, label))
    entries, more, note_text = _seeded_split(items, options)
    if mode == "pitch":
        labels = tuple(sorted(midi, key=midi.__getitem__))
    elif mode == "pitch_class":
        labels = _PITCH_CLASSES
    else:
        labels = tuple(sorted({e.label for e in entries}))
    notes = {"split": note_text + " (Philharmonia has no official split)", "label": mode}
    return Listing(source.uri, tuple(entries), labels, tuple(skipped + more), notes=notes)


_SC_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_SC_WORDS = tuple(
    sorted(
        _SC_DIGITS
        + (
            "backward",
            "bed",
            "bird",
            "cat",
            "dog",
            "down",
            "follow",
            "forward",
            "go",
            "happy",
            "house",
            "learn",
            "left",
            "marvin",
            "no",
            "off",
            "on",
            "right",
            "sheila",
            "stop",
            "tree",
            "up",
            "visual",
            "wow",
            "yes",
        )
    )
)


def _fetch_url(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` (a seam that tests replace)."""
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as f:
        shutil.copyfileobj(response, f, length=1 << 20)


def download_speech_commands(download_dir: str, *, url: str = SPEECH_COMMANDS_URL) -> str:
    """Download and extract Speech Commands v0.02 once; returns the extracted folder.

    A finished extraction is marked with a ``.complete`` file and reused. On a multi-node cluster,
    put the extracted folder on shared storage (or a bucket) and pass it as the source instead.
    """
    dest = Path(download_dir).expanduser().resolve() / "speech_commands_v0.02"
    if (dest / ".complete").exists():
        return str(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    archive = dest.parent / "speech_commands_v0.02.tar.gz"
    if not archive.exists():
        part = archive.with_name(archive.name + ".part")
        print(f"downloading {url} to {archive} (2.3 GB) ...", flush=True)
        try:
            _fetch_url(url, part)
        except OSError as e:
            raise RuntimeError(
                f"could not download {url}: {_oneline(e)}; download and extract it yourself "
                "and pass the folder as the source"
            ) from e
        part.replace(archive)
    tmp = dest.with_name(dest.name + ".extracting")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:  # Python < 3.11.4: check member names ourselves
                for member in tar.getmembers():
                    if member.name.startswith("/") or ".." in member.name.split("/"):
                        raise ValueError(f"unsafe path in archive: {member.name!r}")
                tar.extractall(tmp)  # noqa: S202
    except (tarfile.TarError, EOFError, OSError) as e:
        raise RuntimeError(
            f"archive {archive} is damaged ({_oneline(e)}); delete it and retry"
        ) from e
    shutil.rmtree(dest, ignore_errors=True)
    tmp.replace(dest)
    (dest / ".complete").touch()
    return str(dest)


def _speechcommands(source: _Source | None, options: Mapping[str, str]) -> Listing:
    if source is None:
        source = _Source.open(download_speech_commands(options["download_dir"]))
    lists: dict[str, set[str]] = {}
    for name, split in (("validation_list.txt", "validation"), ("testing_list.txt", "test")):
        if source.kind(name) != pafs.FileType.File:
            raise FileNotFoundError(
                f"{name} not found in {source.uri!r}: not the official Speech Commands layout"
            )
        lists[split] = {
            line.strip() for line in source.read_text(name).splitlines() if line.strip()
        }
    words = _SC_DIGITS if options["subset"] == "sc10" else _SC_WORDS
    files, skipped = walk_files(source)
    excluded: Counter[str] = Counter()
    entries: list[Entry] = []
    for rel, _ in files:
        parts = rel.split("/")
        if len(parts) == 1:
            continue  # LICENSE, README.md, the split lists
        if parts[0] == "_background_noise_":
            excluded["background noise (not a labelled command)"] += 1
        elif parts[0] not in words:
            excluded[f"word {parts[0]!r} not in subset {options['subset']}"] += 1
        elif not _is_audio(rel):
            skipped.append(_not_audio(rel))
        else:
            split = next((s for s, listed in lists.items() if rel in listed), "train")
            entries.append(Entry(rel, parts[0], split))
    present = {e.path for e in entries}
    for split, listed in lists.items():
        for rel in sorted(listed):
            if rel.split("/")[0] in words and rel not in present:
                reason = f"listed in the {split} list but missing"
                skipped.append({"path": rel, "reason": reason})
    note = "official split: validation_list.txt and testing_list.txt, the rest train"
    return Listing(
        source.uri,
        tuple(entries),
        words,
        tuple(skipped),
        dict(excluded),
        {"split": note, "subset": options["subset"]},
    )


def _esc50(source: _Source | None, options: Mapping[str, str]) -> Listing:
    assert source is not None
    if source.kind("meta/esc50.csv") != pafs.FileType.File:
        raise FileNotFoundError(f"meta/esc50.csv not found in {source.uri!r}: not ESC-50's layout")
    test_fold = int(_number(options, "test_fold", int, 1, 5))
    rows = list(csv.DictReader(io.StringIO(source.read_text("meta/esc50.csv"))))
    need = {"filename", "fold", "target", "category", "esc10"}
    if not rows or not need <= set(rows[0]):
        raise ValueError(f"meta/esc50.csv needs columns {sorted(need)}")
    files, skipped = walk_files(source.child("audio"))
    on_disk = {rel for rel, _ in files}
    listed = {r["filename"] for r in rows}
    skipped = [{"path": f"audio/{s['path']}", "reason": s["reason"]} for s in skipped]
    skipped += [
        {"path": f"audio/{rel}", "reason": "not listed in meta/esc50.csv"}
        for rel in sorted(on_disk - listed)
    ]
    esc10 = options["subset"] == "esc10"
    excluded: Counter[str] = Counter()
    entries: list[Entry] = []
    targets: dict[str, int] = {}
    for r in rows:
        if esc10 and r["esc10"].strip().lower() != "true":
            excluded["not in subset esc10"] += 1
            continue
        targets[r["category"]] = int(r["target"])
        if r["filename"] not in on_disk:
            skipped.append(
                {"path": f"audio/{r['filename']}", "reason": "listed in meta/esc50.csv but missing"}
            )
            continue
        split = "test" if int(r["fold"]) == test_fold else "train"
        entries.append(Entry(f"audio/{r['filename']}", r["category"], split))
    entries.sort(key=lambda e: e.path)
    labels = tuple(sorted(targets, key=targets.__getitem__))
    note = f"official folds: fold {test_fold} is test, the other folds train"
    return Listing(
        source.uri,
        tuple(entries),
        labels,
        tuple(skipped),
        dict(excluded),
        {"split": note, "subset": options["subset"]},
    )


_NSYNTH_SPLITS = {"nsynth-train": "train", "nsynth-valid": "validation", "nsynth-test": "test"}


def _nsynth(source: _Source | None, options: Mapping[str, str]) -> Listing:
    assert source is not None
    folders = [f for f in _NSYNTH_SPLITS if source.kind(f"{f}/examples.json") == pafs.FileType.File]
    if not folders:
        raise FileNotFoundError(
            f"no {sorted(_NSYNTH_SPLITS)}/examples.json under {source.uri!r}: not NSynth's layout"
        )
    by_label = options["label"]
    order: dict[str, int] = {}
    entries: list[Entry] = []
    skipped: list[dict[str, str]] = []
    for folder in folders:
        examples = json.loads(source.read_text(f"{folder}/examples.json"))
        files, bad = walk_files(source.child(f"{folder}/audio"))
        skipped += [{"path": f"{folder}/audio/{s['path']}", "reason": s["reason"]} for s in bad]
        on_disk = {rel for rel, _ in files}
        for rel in sorted(on_disk - {f"{k}.wav" for k in examples}):
            skipped.append({"path": f"{folder}/audio/{rel}", "reason": "not in examples.json"})
        for key, meta in examples.items():
            path = f"{folder}/audio/{key}.wav"
            if f"{key}.wav" not in on_disk:
                skipped.append({"path": path, "reason": "listed in examples.json but missing"})
                continue
            if by_label == "instrument_family":
                label = str(meta["instrument_family_str"])
                order[label] = int(meta["instrument_family"])
            else:
                label = str(int(meta["pitch"]))
                order[label] = int(meta["pitch"])
            entries.append(Entry(path, label, _NSYNTH_SPLITS[folder]))
    entries.sort(key=lambda e: e.path)
    labels = tuple(sorted(order, key=order.__getitem__))
    note = "official NSynth split folders: " + ", ".join(folders)
    return Listing(
        source.uri, tuple(entries), labels, tuple(skipped), notes={"split": note, "label": by_label}
    )


def _synthetic(source: _Source | None, options: Mapping[str, str]) -> Listing:
    num_classes = int(_number(options, "num_classes", int, 2, len(KINDS)))
    per_class = int(_number(options, "clips_per_class", int, 1, 1_000_000))
    seed = int(_number(options, "seed", int, 0, 2**63 - 1))
    kinds = KINDS[:num_classes]
    items = sorted((clip_path(kind, i), kind) for kind in kinds for i in range(per_class))
    entries, _, note = _seeded_split(items, options)
    notes = {"split": note, "generator": "clar_ray.data.synthetic: " + ", ".join(kinds)}
    return Listing("", tuple(entries), kinds, notes=notes, synthetic=SyntheticSpec(seed, kinds))


_SPLIT_OPTIONS = (
    Option("test_fraction", "0.2", "fraction of each class put in the test split"),
    Option("seed", "0", "seed of the split"),
)

RECIPES: dict[str, Recipe] = {
    "folder": Recipe(
        "folder",
        "one subfolder per class (or SPLIT/CLASS/ with train/test/validation folders)",
        _SPLIT_OPTIONS
        + (
            Option(
                "group_regex",
                "",
                "regex on the relative path whose match (first group if any) "
                "names a group kept on one side of the split, e.g. a speaker",
            ),
        ),
        "required",
        _folder,
    ),
    "fsdd": Recipe(
        "fsdd",
        "Free Spoken Digit Dataset (folder or its recordings/), official split",
        (),
        "required",
        _fsdd,
    ),
    "philharmonia": Recipe(
        "philharmonia",
        "Philharmonia orchestral notes, INSTRUMENT/*.mp3; seeded stratified split",
        (Option("label", "instrument", "what to predict", ("instrument", "pitch", "pitch_class")),)
        + _SPLIT_OPTIONS,
        "required",
        _philharmonia,
    ),
    "speechcommands": Recipe(
        "speechcommands",
        "Speech Commands v0.02, official lists; downloads the archive when given no source",
        (
            Option(
                "subset",
                "sc10",
                "sc10: the digits zero-nine; all35: all 35 words",
                ("sc10", "all35"),
            ),
            Option("download_dir", "~/.cache/clar-ray", "where to download when no source"),
        ),
        "optional",
        _speechcommands,
    ),
    "esc50": Recipe(
        "esc50",
        "ESC-50 (meta/esc50.csv, audio/); one fold is test, the others train",
        (
            Option(
                "subset", "esc50", "esc50: 50 classes; esc10: the ESC-10 subset", ("esc50", "esc10")
            ),
            Option("test_fold", "5", "the fold used as test (1-5)"),
        ),
        "required",
        _esc50,
    ),
    "nsynth": Recipe(
        "nsynth",
        "NSynth (nsynth-train/valid/test with examples.json and audio/)",
        (Option("label", "instrument_family", "what to predict", ("instrument_family", "pitch")),),
        "required",
        _nsynth,
    ),
    "synthetic": Recipe(
        "synthetic",
        "generated sounds whose class survives the paper's augmentations (no source)",
        (
            Option("num_classes", "6", f"number of classes, 2-{len(KINDS)}: {', '.join(KINDS)}"),
            Option("clips_per_class", "100", "clips generated per class"),
        )
        + _SPLIT_OPTIONS,
        "none",
        _synthetic,
    ),
}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; ``ValueError`` naming the available ones."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; available: {sorted(RECIPES)}")
    return RECIPES[name]


def list_recipe(name: str, source: str | None, options: Mapping[str, object] | None) -> Listing:
    """Run a recipe's listing on the driver.

    Args:
        name: a key of ``RECIPES``.
        source: the dataset folder (local path or URI); None for recipes that need none.
        options: recipe options (unknown keys are an error).

    Raises:
        ValueError: unknown recipe/option, bad option value, or a source where none is allowed.
        FileNotFoundError: a required source is missing or lacks the recipe's layout.
    """
    recipe = get_recipe(name)
    effective = resolve_options(recipe, options)
    if recipe.source == "none" and source:
        raise ValueError(f"recipe {name!r} generates its data and takes no source, got {source!r}")
    if recipe.source == "required" and not source:
        raise ValueError(f"recipe {name!r} needs a source folder (path or URI)")
    return recipe.lister(_Source.open(source) if source else None, effective)
