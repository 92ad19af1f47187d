"""A study's trials as tables: grouping, means over repeats, the pair matrix, Markdown and CSV.

Pure functions of :class:`~clar_ray.analyze.trials.TrialRecord` s; nothing here reads files.
"""

from __future__ import annotations

import csv
import io
import math
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from clar_ray.analyze.trials import Key, TrialRecord

__all__ = ["aggregate", "axis_order", "cell_text", "csv_text", "format_value", "group_label",
           "group_records", "markdown_table", "pair_matrix", "pivot", "with_means"]


def format_value(leaf: str, value: Any) -> str:
    """A value as a table shows it: sequences joined with ``+``, dataset paths by name."""
    if isinstance(value, tuple):
        return "+".join(str(v) for v in value) or "none"
    if leaf == "data.path" and isinstance(value, str):
        return posixpath.basename(value.rstrip("/")) or value
    if leaf == "data.label_fraction" and isinstance(value, (int, float)):
        return f"{100 * value:g} %"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def aggregate(records: Sequence[TrialRecord], by: Sequence[str]) -> dict[Key, dict[str, Any]]:
    """Group trials by the values of ``by``; mean and std of :data:`METRIC` per group.

    Returns:
        key → ``{"mean", "std", "n" (trials with a result), "statuses" (all trials)}``;
        ``mean`` is NaN for a group without any result.
    """
    groups: dict[Key, list[TrialRecord]] = {}
    for record in records:
        groups.setdefault(tuple(record.params.get(leaf) for leaf in by), []).append(record)
    out = {}
    for key, members in groups.items():
        values = [m.metric for m in members if m.metric is not None]
        out[key] = {
            "mean": float(np.mean(values)) if values else math.nan,
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "n": len(values),
            "statuses": sorted({m.status for m in members}),
        }
    return out


def cell_text(cell: Mapping[str, Any] | None) -> str:
    """A table cell: ``83.4`` (percent), ``83.4 ± 1.2`` with repeats, or why it is empty."""
    if cell is None:
        return "—"
    if cell["n"] == 0:
        return "/".join(s for s in cell["statuses"] if s != "finished") or "—"
    text = f"{100 * cell['mean']:.1f}"
    if cell["n"] > 1:
        text += f" ± {100 * cell['std']:.1f}"
    return text


def pair_matrix(records: Sequence[TrialRecord], augmentations: Sequence[str]) -> np.ndarray:
    """The augmentation-pair matrix of :data:`METRIC` (mean over repeats).

    Args:
        records: Trials whose ``augment.sequence`` holds one or two augmentations.
        augmentations: The axis order.

    Returns:
        float ``(n, n)``: ``[i, j]`` for the sequence (augmentations[i], augmentations[j]);
        ``[i, i]`` for augmentations[i] alone; NaN where no trial has a result.
    """
    index = {name: i for i, name in enumerate(augmentations)}
    sums = np.zeros((len(index), len(index)))
    counts = np.zeros((len(index), len(index)))
    for record in records:
        sequence: tuple[str, ...] = tuple(record.params.get("augment.sequence") or ())
        if record.metric is None or not 1 <= len(sequence) <= 2:
            continue
        first, second = sequence[0], sequence[-1]
        if first in index and second in index:
            sums[index[first], index[second]] += record.metric
            counts[index[first], index[second]] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def with_means(matrix: np.ndarray) -> np.ndarray:
    """Append row means (last column), column means (last row) and the overall mean (corner).

    Means skip NaN cells; a row or column with no value has a NaN mean.
    """
    n_rows, n_cols = matrix.shape
    out = np.full((n_rows + 1, n_cols + 1), np.nan)
    out[:n_rows, :n_cols] = matrix
    finite = ~np.isnan(matrix)
    for i in range(n_rows):
        if finite[i].any():
            out[i, n_cols] = matrix[i, finite[i]].mean()
    for j in range(n_cols):
        if finite[:, j].any():
            out[n_rows, j] = matrix[finite[:, j], j].mean()
    if finite.any():
        out[n_rows, n_cols] = matrix[finite].mean()
    return out


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped)."""
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])


def csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV with a header row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def pivot(records: Sequence[TrialRecord], rows: Sequence[str],
          column: str | None) -> tuple[list[Key], list[Any], dict[Key, dict[str, Any]]]:
    """Row keys, column values and cells (:func:`aggregate` over rows + column)."""
    by = [*rows, column] if column else list(rows)
    cells = aggregate([r for r in records if r.params], by)
    row_keys = _unique([k[:len(rows)] for k in cells])
    columns: list[Any] = _unique([k[len(rows)] for k in cells]) if column else [None]
    if column == "data.label_fraction":
        columns = sorted(columns, key=lambda v: -v if isinstance(v, (int, float)) else 0)
    return row_keys, columns, cells


def _unique(items: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def axis_order(records: Sequence[TrialRecord], given: Sequence[str] | None) -> list[str]:
    """Heatmap axis: the study's augmentations, else first-seen order in the sequences."""
    names = list(given or [])
    for record in records:
        for name in record.params.get("augment.sequence") or ():
            if name not in names:
                names.append(name)
    return names


def group_records(records: Sequence[TrialRecord],
                  leaves: Sequence[str]) -> list[tuple[Key, list[TrialRecord]]]:
    """Trials grouped by the values of ``leaves`` (first-seen order)."""
    groups: dict[Key, list[TrialRecord]] = {}
    for record in records:
        groups.setdefault(tuple(record.params.get(leaf) for leaf in leaves), []).append(record)
    return list(groups.items())


def group_label(leaves: Sequence[str], key: Key) -> str:
    """``objective.name=clar, data.label_fraction=0.1`` (empty for no leaves)."""
    return ", ".join(f"{leaf}={format_value(leaf, v)}" for leaf, v in zip(leaves, key))
