"""The table ``clar-ray tune`` prints: each trial, the values it varies, its state, linear_top1.

    trial                 augment.sequence   state       epoch  linear_top1
    000_fade              fade               TERMINATED      1        0.412
    001_fade+time_shift   fade+time_shift    RUNNING         0            -

It is printed when a trial changes state or gets a new probe result, never on a timer and
never twice the same. Tune's own tables list neither the varied values (clar-ray's trials carry
them under ``trial.params``) nor the probe's accuracy.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from ray.tune import ProgressReporter

__all__ = ["TrialTable", "format_table", "format_value"]


def format_value(value: Any) -> str:
    """A trial parameter for a table cell: lists joined with ``+``, floats short."""
    if isinstance(value, (list, tuple)):
        return "+".join(format_value(v) for v in value) or "[]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], leaves: Sequence[str]) -> str:
    """Rows of ``{"trial", "params": {leaf: value}, "state", "epoch", "linear_top1"}``."""
    header = ["trial", *leaves, "state", "epoch", "linear_top1"]
    body = []
    for row in rows:
        top1 = row.get("linear_top1")
        epoch = row.get("epoch")
        body.append([str(row["trial"]),
                     *(format_value(row["params"].get(leaf, "")) for leaf in leaves),
                     str(row["state"]), "-" if epoch is None else str(epoch),
                     "-" if top1 is None else f"{float(top1):.3f}"])
    widths = [max(len(cells[i]) for cells in [header, *body]) for i in range(len(header))]
    numeric = {len(header) - 2, len(header) - 1}
    lines = ["  ".join(cell.rjust(w) if i in numeric else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(cells, widths))).rstrip()
             for cells in [header, *body]]
    return "\n".join(lines)


class TrialTable(ProgressReporter):
    """Tune progress reporter printing :func:`format_table` when something changed.

    Args:
        leaves: The config leaves the study varies (columns, in this order).
        out: Where the table goes (default: standard output).
    """

    def __init__(self, leaves: Sequence[str], out: TextIO | None = None) -> None:
        self.leaves = list(leaves)
        self.out = out
        self._last: tuple[Any, ...] | None = None

    @staticmethod
    def _row(trial: Any) -> dict[str, Any]:
        spec = trial.config.get("trial", {})
        result = trial.last_result or {}
        top1 = result.get("linear_top1")
        epochs = result.get("epoch")
        if epochs is not None and "trial_status" not in result:
            epochs = int(epochs) + 1  # Ray Train reports the epoch index; the end, the count
        return {"trial": spec.get("name", str(trial)), "params": spec.get("params", {}),
                "state": trial.status, "epoch": epochs, "linear_top1": top1}

    def should_report(self, trials: list[Any], done: bool = False) -> bool:
        """True when a trial changed state or got a new probe result (the end included)."""
        state = tuple((r["trial"], r["state"], r["linear_top1"])
                      for r in map(self._row, trials))
        changed = state != self._last
        self._last = state
        return changed

    def report(self, trials: list[Any], done: bool, *sys_info: str) -> None:
        """Print the table (sorted by trial name)."""
        rows = sorted(map(self._row, trials), key=lambda r: r["trial"])
        print(format_table(rows, self.leaves), file=self.out or sys.stdout, flush=True)
