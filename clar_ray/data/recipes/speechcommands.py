"""``speechcommands``: Speech Commands v0.02 (sc10 digits or all 35 words), official lists.

With no source it downloads and extracts the archive once (:func:`download_speech_commands`).
"""

from __future__ import annotations

import shutil
import tarfile
import urllib.request
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pyarrow.fs as pafs

from clar_ray.data.recipes.base import (
    Entry,
    Listing,
    Option,
    Recipe,
    Source,
    is_audio,
    not_audio,
    oneline,
    walk_files,
)

SPEECH_COMMANDS_URL = "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"

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
                f"could not download {url}: {oneline(e)}; download and extract it yourself "
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
            f"archive {archive} is damaged ({oneline(e)}); delete it and retry"
        ) from e
    shutil.rmtree(dest, ignore_errors=True)
    tmp.replace(dest)
    (dest / ".complete").touch()
    return str(dest)


def _speechcommands(source: Source | None, options: Mapping[str, str]) -> Listing:
    if source is None:
        source = Source.open(download_speech_commands(options["download_dir"]))
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
        elif not is_audio(rel):
            skipped.append(not_audio(rel))
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


RECIPE = Recipe(
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
)
