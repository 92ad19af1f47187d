"""``nsynth``: NSynth by instrument family or pitch, official train/valid/test folders."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pyarrow.fs as pafs

from clar_ray.data.recipes.base import Entry, Listing, Option, Recipe, Source, walk_files

_NSYNTH_SPLITS = {"nsynth-train": "train", "nsynth-valid": "validation", "nsynth-test": "test"}


def _nsynth(source: Source | None, options: Mapping[str, str]) -> Listing:
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


RECIPE = Recipe(
    "nsynth",
    "NSynth (nsynth-train/valid/test with examples.json and audio/)",
    (Option("label", "instrument_family", "what to predict", ("instrument_family", "pitch")),),
    "required",
    _nsynth,
)
