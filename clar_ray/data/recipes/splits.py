"""Train/test splits for recipes without an official one: pure, seeded by the generator given."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from clar_ray.data.recipes.base import Entry, Option, option_number

__all__ = ["SPLIT_OPTIONS", "grouped_split", "seeded_split", "stratified_split"]

#: The options of a recipe whose split is seeded.
SPLIT_OPTIONS = (
    Option("test_fraction", "0.2", "fraction of each class put in the test split"),
    Option("seed", "0", "seed of the split"),
)


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


def seeded_split(
    items: list[tuple[str, str]], options: Mapping[str, str], group_regex: str = ""
) -> tuple[list[Entry], list[dict[str, str]], str]:
    """Split ``(path, label)`` items (sorted) with the test_fraction/seed options."""
    fraction = option_number(options, "test_fraction", float, 0.0, 0.99)
    seed = int(option_number(options, "seed", int, 0, 2**63 - 1))
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
