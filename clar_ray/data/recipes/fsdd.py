"""``fsdd``: the Free Spoken Digit Dataset with its official split (takes 0-4 are test)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import pyarrow.fs as pafs

from clar_ray.data.recipes.base import (
    Entry,
    Listing,
    Recipe,
    Source,
    is_audio,
    not_audio,
    walk_files,
)

_FSDD_NAME = re.compile(r"^(?P<digit>\d)_(?P<speaker>[^_/]+)_(?P<take>\d+)\.wav$", re.IGNORECASE)


def _fsdd(source: Source | None, options: Mapping[str, str]) -> Listing:
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
                not_audio(rel) if not is_audio(rel) else {"path": rel, "reason": reason}
            )
            continue
        split = "test" if int(m.group("take")) <= 4 else "train"
        entries.append(Entry(rel, m.group("digit"), split))
    labels = tuple(sorted({e.label for e in entries}))
    note = "official FSDD split: takes 0-4 of every speaker and digit are test, the rest train"
    return Listing(source.uri, tuple(entries), labels, tuple(skipped), notes={"split": note})


RECIPE = Recipe(
    "fsdd",
    "Free Spoken Digit Dataset (folder or its recordings/), official split",
    (),
    "required",
    _fsdd,
)
