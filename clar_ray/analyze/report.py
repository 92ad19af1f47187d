"""A study's report: which tables and figures its varied leaves call for, and ``report.md``."""

from __future__ import annotations

import math
import os
import posixpath
from collections.abc import Sequence

import numpy as np

from clar_ray import storage
from clar_ray.analyze.figures import curves_png, heatmap_png, mean_curve
from clar_ray.analyze.tables import (
    axis_order,
    cell_text,
    csv_text,
    format_value,
    group_label,
    group_records,
    markdown_table,
    pair_matrix,
    pivot,
    with_means,
)
from clar_ray.analyze.trials import (
    IMPLIED_LEAVES,
    METRIC,
    REPEAT_LEAF,
    TrialRecord,
    load_trials,
)
from clar_ray.rundir import ERROR_FILE, RUNS_DIR, run_file

__all__ = ["MAX_CURVES", "analyze_experiment"]

#: At most this many lines in the curves figure when the method does not vary.
MAX_CURVES = 12


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".+-" else "_" for c in text).strip("_")



class _Writer:
    """Writes report files into ``out`` and remembers the Markdown sections."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.sections: list[str] = []
        self.files: list[str] = []

    def write(self, name: str, data: str | bytes) -> str:
        path = storage.join_uri(self.out, name)
        if isinstance(data, str):
            storage.write_text(path, data)
        else:
            storage.write_bytes(path, data)
        self.files.append(name)
        return name


def _dims(leaves: Sequence[str], *drop: str) -> list[str]:
    return [leaf for leaf in leaves
            if leaf not in (REPEAT_LEAF, *IMPLIED_LEAVES, *drop)]


def _heatmaps(writer: _Writer, records: list[TrialRecord], leaves: Sequence[str],
              augmentations: Sequence[str] | None) -> None:
    if "augment.sequence" not in leaves:
        return
    pairs = [r for r in records if r.params.get("augment.sequence") is not None]
    if not pairs or any(not 1 <= len(r.params["augment.sequence"]) <= 2 for r in pairs):
        return
    names = axis_order(pairs, augmentations)
    others = _dims(leaves, "augment.sequence")
    lines = ["## Augmentation pairs (Figure 4)", "",
             "Linear top-1 (%) of the encoder trained with each ordered pair of augmentations "
             "(row: first, column: second; diagonal: the augmentation alone), with row, column "
             "and overall means. × marks a pair without a result."]
    for key, members in group_records(pairs, others):
        label = group_label(others, key)
        stem = "augmentation_pairs" + (f"_{_slug(label)}" if label else "")
        matrix = pair_matrix(members, names)
        full = with_means(matrix)
        png = writer.write(f"{stem}.png", heatmap_png(
            matrix, names, "linear top-1 (%)" + (f"\n{label}" if label else "")))
        header = ["first \\ second", *names, "mean"]
        rows = [[row_name, *(_pct(v) for v in full[i])]
                for i, row_name in enumerate([*names, "mean"])]
        table = writer.write(f"{stem}.csv", csv_text(header, [
            [r[0], *(f"{v:.4f}" if np.isfinite(v) else "" for v in full[i])]
            for i, r in enumerate(rows)]))
        best = np.unravel_index(np.nanargmax(matrix), matrix.shape) if np.isfinite(
            matrix).any() else None
        lines += ["", *([f"### {label}", ""] if label else []),
                  f"![augmentation pairs]({png})", "", markdown_table(header, rows), "",
                  f"Data: [{table}]({table})."]
        if best is not None:
            i, j = best
            pair = names[i] if i == j else f"{names[i]} → {names[j]}"
            lines.append(f"\nBest: {pair} ({100 * matrix[i, j]:.1f} %); overall mean "
                         f"{100 * full[-1, -1]:.1f} %.")
    writer.sections.append("\n".join(lines))


def _pct(value: float) -> str:
    return f"{100 * value:.1f}" if np.isfinite(value) else "×"


def _table(writer: _Writer, records: list[TrialRecord], leaves: Sequence[str], *, stem: str,
           title: str, note: str, row_first: str, column: str | None) -> None:
    rows_leaves = [row_first, *_dims(leaves, row_first, *([column] if column else []))]
    row_keys, columns, cells = pivot(records, rows_leaves, column)
    header = [*rows_leaves, *(format_value(column, c) if column else METRIC
                              for c in columns)]
    md_rows, csv_rows = [], []
    for key in row_keys:
        values = [cells.get((*key, c) if column else key) for c in columns]
        labels = [format_value(leaf, v) for leaf, v in zip(rows_leaves, key)]
        md_rows.append([*labels, *(cell_text(v) for v in values)])
        csv_rows.append([*labels, *(f"{v['mean']:.4f}" if v and v["n"] else "" for v in values)])
    markdown = markdown_table(header, md_rows)
    writer.write(f"{stem}.md", f"# {title}\n\n{note}\n\n{markdown}\n")
    table = writer.write(f"{stem}.csv", csv_text(header, csv_rows))
    writer.sections.append(f"## {title}\n\n{note}\n\n{markdown}\n\nData: [{table}]({table}).")


def _curves(writer: _Writer, records: list[TrialRecord], leaves: Sequence[str]) -> None:
    probed = [r for r in records if r.curve]
    if not probed:
        return
    if "objective.name" in leaves:
        line_leaves, panel_leaves = ["objective.name"], _dims(leaves, "objective.name")
    else:
        line_leaves, panel_leaves = _dims(leaves), []
    panels = []
    for panel_key, members in group_records(probed, panel_leaves):
        lines = []
        for line_key, group in group_records(members, line_leaves):
            epochs, accuracy = mean_curve(group)
            label = (" ".join(format_value(lf, v) for lf, v in zip(line_leaves, line_key))
                     or "all trials")
            lines.append((label, epochs, accuracy))
        panels.append((group_label(panel_leaves, panel_key), lines))
    if max(len(lines) for _, lines in panels) > MAX_CURVES or len(panels) > MAX_CURVES:
        writer.sections.append(f"## Accuracy against epoch\n\nNot drawn: more than "
                               f"{MAX_CURVES} curves per panel or panels.")
        return
    png = writer.write("curves.png", curves_png(panels))
    figures = [f"![curves]({png})"]
    if len(panels) > 1:  # one figure per panel too, e.g. per label fraction as in Figure 5
        for title, lines in panels:
            one = writer.write(f"curves_{_slug(title)}.png", curves_png([(title, lines)]))
            figures.append(f"![{title}]({one})")
    writer.sections.append(
        "## Accuracy against epoch (Figure 5)\n\nLinear top-1 of the probe during training "
        "(probe epochs of metrics.jsonl; repeats averaged).\n\n" + "\n".join(figures))


def _link(out: str, path: str) -> str:
    if storage.is_uri(out) or storage.is_uri(path):
        return path
    return os.path.relpath(path, out)


def _trial_tables(writer: _Writer, records: list[TrialRecord], leaves: Sequence[str]) -> None:
    dims = [leaf for leaf in leaves if leaf not in IMPLIED_LEAVES]
    header = ["trial", "status", *dims, METRIC, "knn_top1", "epochs", "error"]
    rows = []
    for r in records:
        result = r.result or {}
        rows.append([r.name, r.status, *(format_value(leaf, r.params.get(leaf, ""))
                                         for leaf in dims),
                     result.get(METRIC, ""), result.get("knn_top1", ""),
                     result.get("epoch", ""), r.error or ""])
    writer.write("trials.csv", csv_text(header, rows))
    failed = [r for r in records if r.status != "finished"]
    if failed:
        lines = [markdown_table(
            ["trial", "status", "error"],
            [[r.name, r.status, (r.error or "") + (
                f" ([error.txt]({_link(writer.out, run_file(r.run_dir, ERROR_FILE))}))"
                if r.status == "failed" and storage.exists(
                    run_file(r.run_dir, ERROR_FILE)) else "")] for r in failed])]
        writer.sections.append("## Trials without a result\n\n" + "\n".join(lines))
    ranked = sorted(records, key=lambda r: -(r.metric if r.metric is not None else -1))
    writer.sections.append("## All trials\n\n" + markdown_table(
        ["trial", "status", *dims, "linear top-1 (%)", "kNN top-1 (%)"],
        [[r.name, r.status, *(format_value(leaf, r.params.get(leaf, "")) for leaf in dims),
          _pct(r.metric) if r.metric is not None else "—",
          _pct((r.result or {}).get("knn_top1", math.nan)) if r.result else "—"]
         for r in ranked])
        + "\n\nData: [trials.csv](trials.csv).")


def analyze_experiment(experiment_dir: str, out: str | None = None) -> str:
    """Write the figures, tables and ``report.md`` of an experiment; return the report's path.

    Args:
        experiment_dir: A ``clar-ray tune`` experiment directory (local path or URI), or a
            folder of run directories.
        out: Where to write (default: ``EXPERIMENT/report``).

    Raises:
        FileNotFoundError: No trials in ``experiment_dir``.
    """
    experiment_dir = storage.absolute(experiment_dir).rstrip("/")
    records, info = load_trials(experiment_dir)
    if not records:
        raise FileNotFoundError(f"no trials in {experiment_dir}: expected trials.json or "
                                f"run directories under {experiment_dir}/{RUNS_DIR}")
    out = storage.absolute(out or storage.join_uri(experiment_dir, "report"))
    leaves = list(info["varied"])
    writer = _Writer(out)
    params = info.get("study_params") or {}
    _heatmaps(writer, records, leaves, params.get("augmentations")
              if info.get("study") == "augmentation-pairs" else None)
    if "objective.name" in leaves or "data.label_fraction" in leaves:
        _table(writer, records, leaves, stem="methods_fractions",
               title="Methods × label fractions",
               note="Linear top-1 (%) by training method (rows) and the fraction of training "
                    "labels it saw (columns).",
               row_first="objective.name" if "objective.name" in leaves
               else "data.label_fraction",
               column="data.label_fraction" if "data.label_fraction" in leaves
               and "objective.name" in leaves else None)
    if "model.frontend" in leaves:
        _table(writer, records, leaves, stem="input_types", title="Input types",
               note="Linear top-1 (%) of raw audio (ResNet18-1D) against the three-channel "
                    "time-frequency input (ResNet18-2D); datasets as columns.",
               row_first="model.frontend",
               column="data.path" if "data.path" in leaves else None)
    _curves(writer, records, leaves)
    _trial_tables(writer, records, leaves)

    counts: dict[str, int] = {}
    for record in records:
        counts[record.status] = counts.get(record.status, 0) + 1
    head = [f"# Study report: {posixpath.basename(experiment_dir)}", "",
            f"- experiment: `{experiment_dir}`",
            f"- study: {info.get('study', 'run directories')}; varied: "
            + (", ".join(f"`{leaf}`" for leaf in leaves) or "nothing"),
            f"- trials: {len(records)} — "
            + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
            f"- metric: `{METRIC}` (linear probe on the frozen encoder, result.json)", ""]
    report = "\n".join(head) + "\n" + "\n\n".join(writer.sections) + "\n"
    writer.write("report.md", report)
    return storage.join_uri(out, "report.md")
