"""``philharmonia``: orchestral notes by instrument, pitch or pitch class; a seeded split."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping

from clar_ray.data.recipes.base import (
    Listing,
    Option,
    Recipe,
    Source,
    is_audio,
    not_audio,
    walk_files,
)
from clar_ray.data.recipes.splits import SPLIT_OPTIONS, seeded_split

_PITCH_CLASSES = ("C", "Cs", "D", "Ds", "E", "F", "Fs", "G", "Gs", "A", "As", "B")
_NOTE = re.compile(r"^(?P<pc>[A-G]s?)(?P<octave>-?\d)$")


def _midi(note: str) -> int | None:
    m = _NOTE.match(note)
    if m is None or m.group("pc") not in _PITCH_CLASSES:
        return None
    return 12 * (int(m.group("octave")) + 1) + _PITCH_CLASSES.index(m.group("pc"))


def _philharmonia(source: Source | None, options: Mapping[str, str]) -> Listing:
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
        if not is_audio(rel):
            skipped.append(not_audio(rel))
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
    entries, more, note_text = seeded_split(items, options)
    if mode == "pitch":
        labels = tuple(sorted(midi, key=midi.__getitem__))
    elif mode == "pitch_class":
        labels = _PITCH_CLASSES
    else:
        labels = tuple(sorted({e.label for e in entries}))
    notes = {"split": note_text + " (Philharmonia has no official split)", "label": mode}
    return Listing(source.uri, tuple(entries), labels, tuple(skipped + more), notes=notes)


RECIPE = Recipe(
    "philharmonia",
    "Philharmonia orchestral notes, INSTRUMENT/*.mp3; seeded stratified split",
    (Option("label", "instrument", "what to predict", ("instrument", "pitch", "pitch_class")),)
    + SPLIT_OPTIONS,
    "required",
    _philharmonia,
)
