"""``folder``: one subfolder per class, or SPLIT/CLASS/ folders; else a seeded split."""

from __future__ import annotations

from collections.abc import Mapping

from clar_ray.data.recipes.base import (
    Entry,
    Listing,
    Option,
    Recipe,
    Source,
    is_audio,
    not_audio,
    walk_files,
)
from clar_ray.data.recipes.splits import SPLIT_OPTIONS, seeded_split

#: Names of split folders (lower case) and the split each stands for.
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


def _folder(source: Source | None, options: Mapping[str, str]) -> Listing:
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
        elif not is_audio(rel):
            skipped.append(not_audio(rel))
        else:
            split = _SPLIT_FOLDERS[parts[0].lower()] if split_layout else ""
            items.append((rel, parts[depth - 1], split))
    if split_layout:
        entries = [Entry(p, label, s) for p, label, s in items]
        note = "split from the source's split folders: " + ", ".join(split_tops)
        if options["group_regex"]:
            note += " (group_regex unused)"
    else:
        entries, more, note = seeded_split(
            [(p, lab) for p, lab, _ in items], options, options["group_regex"]
        )
        skipped += more
    labels = tuple(sorted({e.label for e in entries}))
    return Listing(source.uri, tuple(entries), labels, tuple(skipped), notes={"split": note})


RECIPE = Recipe(
    "folder",
    "one subfolder per class (or SPLIT/CLASS/ with train/test/validation folders)",
    SPLIT_OPTIONS
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
)
