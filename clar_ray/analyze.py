"""A study's results → the paper's figures and tables, and a one-page ``report.md``.

The run directories are the source of truth: ``config.yaml`` says what ran, ``result.json``
that it finished and how well, ``metrics.jsonl`` how accuracy grew, ``error.txt`` why it
failed. ``trials.json`` (written by :mod:`clar_ray.tune`) adds the trials that never started
and what the study varied; without it, the varied leaves are those that differ between the
runs' configs. A trial without ``result.json`` is listed with its status (failed, stopped,
unfinished or pending), never dropped.

What is made depends on what varied (``train.seed`` repeats are averaged, ± their std):

* ``augment.sequence`` with one or two augmentations per trial → the augmentation-pair heatmap
  (first augmentation = row, second = column, diagonal = one augmentation alone) with row,
  column and overall means: the paper's Figure 4 (``augmentation_pairs*.png`` + ``.csv``).
* ``objective.name`` or ``data.label_fraction`` → the methods × label-fractions table
  (``methods_fractions.md`` + ``.csv``).
* ``model.frontend`` → the input-type table, datasets as columns (``input_types.md`` + ``.csv``).
* Probe epochs in ``metrics.jsonl`` (``eval.every_epochs``) → linear top-1 against epoch, one
  line per method: the paper's Figure 5 (``curves.png``).
* Always: ``trials.csv`` and ``report.md`` with every trial and the failed ones' errors.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow.fs as pafs
import yaml

from clar_ray import artifacts, storage

#: The accuracy that tables and figures show.
METRIC = "linear_top1"
#: Leaves that differ between trials without being part of the study.
IGNORED_LEAVES = ("augment.actors",)
#: The leaf whose values are repeats: averaged over, not a row or column.
REPEAT_LEAF = "train.seed"
#: Leaves implied by another (never a row or column of their own).
IMPLIED_LEAVES = ("model.encoder",)
#: At most this many lines in the curves figure when the method does not vary.
MAX_CURVES = 12

# Mirrors of clar_ray.tune's file names (not imported: analysis needs no Ray).
RUNS_DIR = "runs"
TRIALS_FILE = "trials.json"
TUNE_STATUS_FILE = "tune_status.json"
ERROR_FILE = "error.txt"

Key = tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """What is known about one trial.

    Attributes:
        name: The trial (its run directory's name).
        status: ``finished``, ``failed``, ``stopped`` (by the scheduler or an interrupt),
            ``unfinished`` (started, no result yet) or ``pending`` (never started).
        params: The varied leaves and this trial's values (lists as tuples).
        result: ``result.json``, or None.
        curve: Probe epochs of ``metrics.jsonl``: ``{"epoch", "linear_top1", "knn_top1"}``.
        error: The error's first line, when known.
        run_dir: The run directory.
    """

    name: str
    status: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    curve: tuple[dict[str, float], ...]
    error: str | None
    run_dir: str

    @property
    def metric(self) -> float | None:
        """The trial's :data:`METRIC`, or None when it has no result."""
        value = (self.result or {}).get(METRIC)
        return float(value) if isinstance(value, (int, float)) else None


# ------------------------------------------------------------------------ pure helpers


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists become tuples (hashable)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = _hashable(value)
    return flat


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def varied_leaves(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Leaves of flat configs that take more than one value (in first-seen order)."""
    leaves: list[str] = []
    for config in configs:
        leaves.extend(k for k in config if k not in leaves)
    return [leaf for leaf in leaves if leaf not in IGNORED_LEAVES
            and len({c.get(leaf) for c in configs}) > 1]


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


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in ".+-" else "_" for c in text).strip("_")


# ------------------------------------------------------------------------ figures


def heatmap_png(matrix: np.ndarray, names: Sequence[str], title: str) -> bytes:
    """The Figure-4 heatmap (percent) with a mean column, a mean row and the overall mean."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    full = 100 * with_means(matrix)
    n = len(names)
    fig = Figure(figsize=(1.1 * n + 3.0, 0.9 * n + 2.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    masked = np.ma.masked_invalid(full)
    finite = full[np.isfinite(full)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 100.0)
    image = ax.imshow(masked, cmap="viridis", vmin=low, vmax=max(high, low + 1e-6))
    ax.set_facecolor("#d0d0d0")
    for i in range(n + 1):
        for j in range(n + 1):
            missing = not np.isfinite(full[i, j])
            text = "×" if missing and i < n and j < n else ("" if missing else f"{full[i, j]:.1f}")
            shade = 0.0 if missing else (full[i, j] - low) / max(high - low, 1e-6)
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="black" if shade > 0.6 else "white",
                    fontweight="bold" if i == n or j == n else "normal")
    ax.axhline(n - 0.5, color="white", linewidth=3)
    ax.axvline(n - 0.5, color="white", linewidth=3)
    ax.set_xticks(range(n + 1), [*names, "mean"], rotation=45, ha="right")
    ax.set_yticks(range(n + 1), [*names, "mean"])
    ax.set_xlabel("second augmentation")
    ax.set_ylabel("first augmentation")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="linear top-1 (%)", shrink=0.8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def curves_png(panels: Sequence[tuple[str, Sequence[tuple[str, Sequence[float],
                                                            Sequence[float]]]]]) -> bytes:
    """Linear top-1 (%) against epoch: one panel per ``(title, [(label, epochs, acc)])``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.4 * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (title, lines) in zip(axes.flat, panels):
        for label, epochs, accuracy in lines:
            ax.plot(epochs, [100 * a for a in accuracy], marker="o", markersize=3, label=label)
        ax.set_title(title or "linear top-1", fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("linear top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return buffer.getvalue()


def mean_curve(records: Sequence[TrialRecord]) -> tuple[list[float], list[float]]:
    """Epochs (1-based) and the mean probe accuracy over the records that reached them."""
    by_epoch: dict[int, list[float]] = {}
    for record in records:
        for point in record.curve:
            by_epoch.setdefault(int(point["epoch"]), []).append(float(point[METRIC]))
    epochs = sorted(by_epoch)
    return [e + 1 for e in epochs], [float(np.mean(by_epoch[e])) for e in epochs]


# ------------------------------------------------------------------------ reading


def _list_dirs(path: str) -> list[str]:
    fs, inner = storage.resolve_filesystem(path)
    if fs.get_file_info(inner).type != pafs.FileType.Directory:
        return []
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=False))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def _read_json(path: str) -> Any:
    return storage.read_json(path) if storage.exists(path) else None


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")[:300]


def _curve(run_dir: str) -> tuple[dict[str, float], ...]:
    path = artifacts.run_file(run_dir, artifacts.METRICS_FILE)
    if not storage.exists(path):
        return ()
    points = []
    for line in storage.read_text(path).splitlines():
        try:
            record = json.loads(line) if line.strip() else {}
        except json.JSONDecodeError:  # a line cut short by an interrupted run
            continue
        if METRIC in record:
            points.append({"epoch": record["epoch"], METRIC: record[METRIC],
                           "knn_top1": record.get("knn_top1", math.nan)})
    return tuple(points)


def load_trials(experiment_dir: str) -> tuple[list[TrialRecord], dict[str, Any]]:
    """Every trial of an experiment (or of a folder of run directories).

    Args:
        experiment_dir: A ``clar-ray tune`` experiment (``trials.json``, ``runs/``) or any
            folder whose subfolders are run directories.

    Returns:
        The trials (in the study's order, then any other run directories) and the study's
        ``trials.json`` info (empty without one).
    """
    info = _read_json(storage.join_uri(experiment_dir, TRIALS_FILE)) or {}
    tune_status = _read_json(storage.join_uri(experiment_dir, TUNE_STATUS_FILE)) or {}
    runs_root = storage.join_uri(experiment_dir, RUNS_DIR)
    found = _list_dirs(runs_root)
    if not info and not storage.exists(runs_root):  # a folder of run directories
        runs_root = experiment_dir
        found = [n for n in _list_dirs(runs_root) if any(
            storage.exists(artifacts.run_file(storage.join_uri(runs_root, n), f))
            for f in (artifacts.CONFIG_FILE, artifacts.RESULT_FILE, ERROR_FILE))]
    planned = {t["name"]: t for t in info.get("trials", [])}
    names = list(planned) + [n for n in found if n not in planned]
    raw: list[tuple[str, str, dict[str, Any], dict[str, Any] | None, str | None, str]] = []
    for name in names:
        run_dir = storage.join_uri(runs_root, name)
        config_path = artifacts.run_file(run_dir, artifacts.CONFIG_FILE)
        if storage.exists(config_path):
            config = flatten(yaml.safe_load(storage.read_text(config_path)) or {})
        else:
            config = flatten(planned.get(name, {}).get("job", {}))
        result = _read_json(artifacts.run_file(run_dir, artifacts.RESULT_FILE))
        error_path = artifacts.run_file(run_dir, ERROR_FILE)
        error = (_first_line(storage.read_text(error_path)) if storage.exists(error_path)
                 else tune_status.get(name, {}).get("error"))
        if result is not None:
            status = "finished"
        elif error:
            status = "failed"
        elif tune_status.get(name, {}).get("status") == "stopped":
            status = "stopped"
        elif storage.exists(config_path):
            status = "unfinished"
        elif name in planned:
            status = "pending"
        else:
            status, error = "failed", f"no {artifacts.CONFIG_FILE} in {run_dir}"
        raw.append((name, status, config, result, error, run_dir))
    leaves = list(info.get("varied") or varied_leaves([c for _, _, c, _, _, _ in raw if c]))
    records = []
    for name, status, config, result, error, run_dir in raw:
        if name in planned:
            params = {k: _hashable(v) for k, v in planned[name].get("params", {}).items()}
        else:
            params = {leaf: config[leaf] for leaf in leaves if leaf in config}
        records.append(TrialRecord(name, status, params, result, _curve(run_dir), error,
                                   run_dir))
    return records, {**info, "varied": leaves}


# ------------------------------------------------------------------------ the report


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
                f" ([error.txt]({_link(writer.out, artifacts.run_file(r.run_dir, ERROR_FILE))}))"
                if r.status == "failed" and storage.exists(
                    artifacts.run_file(r.run_dir, ERROR_FILE)) else "")] for r in failed])]
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
