"""A study's results → the paper's figures and tables, and a one-page ``report.md``.

Reading the trials is :mod:`~clar_ray.analyze.trials`, tables :mod:`~clar_ray.analyze.tables`,
figures :mod:`~clar_ray.analyze.figures`, and the report that picks them
:mod:`~clar_ray.analyze.report`. Nothing here needs Ray or torch.

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

from clar_ray.analyze.figures import curves_png, heatmap_png, mean_curve
from clar_ray.analyze.report import MAX_CURVES, analyze_experiment
from clar_ray.analyze.tables import (
    aggregate,
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
    IGNORED_LEAVES,
    IMPLIED_LEAVES,
    METRIC,
    REPEAT_LEAF,
    TrialRecord,
    flatten,
    load_trials,
    varied_leaves,
)

__all__ = ["IGNORED_LEAVES", "IMPLIED_LEAVES", "MAX_CURVES", "METRIC", "REPEAT_LEAF",
           "TrialRecord", "aggregate", "analyze_experiment", "axis_order", "cell_text",
           "csv_text", "curves_png", "flatten", "format_value", "group_label", "group_records",
           "heatmap_png", "load_trials", "markdown_table", "mean_curve", "pair_matrix", "pivot",
           "varied_leaves", "with_means"]
