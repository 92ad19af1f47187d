"""``esc50``: ESC-50 and its ESC-10 subset; one official fold is test, the others train."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Mapping

import pyarrow.fs as pafs

from clar_ray.data.recipes.base import (
    Entry,
    Listing,
    Option,
    Recipe,
    Source,
    option_number,
    walk_files,
)


def _esc50(source: Source | None, options: Mapping[str, str]) -> Listing:
    assert source is not None
    if source.kind("meta/esc50.csv") != pafs.FileType.File:
        raise FileNotFoundError(f"meta/esc50.csv not found in {source.uri!r}: not ESC-50's layout")
    test_fold = int(option_number(options, "test_fold", int, 1, 5))
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


RECIPE = Recipe(
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
)
