"""``synthetic``: generated sounds whose class survives the paper's augmentations (no source)."""

from __future__ import annotations

from collections.abc import Mapping

from clar_ray.data.recipes.base import Listing, Option, Recipe, Source, option_number
from clar_ray.data.recipes.splits import SPLIT_OPTIONS, seeded_split
from clar_ray.data.synthetic import KINDS, SyntheticSpec, clip_path


def _synthetic(source: Source | None, options: Mapping[str, str]) -> Listing:
    num_classes = int(option_number(options, "num_classes", int, 2, len(KINDS)))
    per_class = int(option_number(options, "clips_per_class", int, 1, 1_000_000))
    seed = int(option_number(options, "seed", int, 0, 2**63 - 1))
    kinds = KINDS[:num_classes]
    items = sorted((clip_path(kind, i), kind) for kind in kinds for i in range(per_class))
    entries, _, note = seeded_split(items, options)
    notes = {"split": note, "generator": "clar_ray.data.synthetic: " + ", ".join(kinds)}
    return Listing("", tuple(entries), kinds, notes=notes, synthetic=SyntheticSpec(seed, kinds))


RECIPE = Recipe(
    "synthetic",
    "generated sounds whose class survives the paper's augmentations (no source)",
    (
        Option("num_classes", "6", f"number of classes, 2-{len(KINDS)}: {', '.join(KINDS)}"),
        Option("clips_per_class", "100", "clips generated per class"),
    )
    + SPLIT_OPTIONS,
    "none",
    _synthetic,
)
