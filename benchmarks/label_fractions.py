"""The paper's Table 2 and Figure 5 on real audio, as a `clar-ray tune` study.

Runs a label-fraction study (default ``jobs/study-label-fractions-fsdd.yaml``: supervised,
SimCLR and CLAR × 100 / 10 / 1 % labels × two seeds on FSDD; SimCLR reads no label and trains
once per seed) with Ray Tune, ``--resume`` continues an interrupted study, then ``clar-ray
analyze`` draws the curves (one PNG per fraction) and this script writes the table with every
seed and their spread.

Every encoder is evaluated the paper's way: a linear classifier on the frozen features of ALL
training clips, top-1 on the un-augmented test clips, plus kNN.

Usage:
    python benchmarks/label_fractions.py [--out DIR] [--experiment DIR] [--resume]
        [--set KEY=VALUE ...]
    python benchmarks/label_fractions.py --study jobs/study-label-fractions-philharmonia.yaml \
        --data PREPARED_DIR --name label_fractions_philharmonia --experiment DIR

With ``--data`` the study trains on that prepared dataset; without it FSDD is prepared from
``--fsdd`` (8 kHz, 0.6 s) into ``--cache`` once. It writes OUT/NAME.json (one row per trial:
method, label_fraction, seed, linear_top1, knn_top1, curve) and OUT/NAME.md, and copies the
curves beside them as OUT/NAME_curves_*.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fsdd_cache import prepared_fsdd

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "jobs" / "study-label-fractions-fsdd.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(STUDY), help="the study's tune file")
    parser.add_argument("--data", default=None, help="a prepared dataset (default: FSDD)")
    parser.add_argument("--name", default="label_fractions", help="output file names")
    parser.add_argument("--fsdd", default=str(ROOT.parent / "shared" / "data" / "fsdd"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--experiment", default=os.path.join(tempfile.gettempdir(),
                                                             "clar-ray-fractions-fsdd"))
    parser.add_argument("--resume", action="store_true", help="continue the experiment")
    parser.add_argument("--set", dest="overrides", nargs="*", default=[],
                        help="overrides of the study's base job, e.g. train.epochs=20")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "clar-ray-bench"))
    args = parser.parse_args(argv)
    if args.data is None and not Path(args.fsdd).is_dir():
        print(f"FSDD not found at {args.fsdd}: pass --fsdd PATH or --data PREPARED",
              file=sys.stderr)
        return 2
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    from clar_ray.analyze import analyze_experiment
    from clar_ray.tune import run_study

    data_dir = args.data or prepared_fsdd(args.fsdd, args.cache)
    started = time.perf_counter()
    run_study(args.study, args.experiment, resume=args.resume,
              overrides=[f"data.path={data_dir}", *args.overrides])
    minutes = (time.perf_counter() - started) / 60
    report = Path(analyze_experiment(args.experiment))
    rows = trial_rows(args.experiment)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for png in report.parent.glob("curves*.png"):
        shutil.copy(png, out / f"{args.name}_{png.name}")
    study = Path(args.study).resolve()
    (out / f"{args.name}.json").write_text(json.dumps(
        {"study": str(study.relative_to(ROOT) if study.is_relative_to(ROOT) else study),
         "overrides": args.overrides,
         "minutes": minutes, "cpu_count": os.cpu_count(), "results": rows}, indent=2) + "\n")
    text = table(rows)
    (out / f"{args.name}.md").write_text(text)
    print(text)
    return 0


def trial_rows(experiment: str) -> list[dict]:
    """One row per trial with a result: method, fraction, seed, accuracies and the curve."""
    import yaml

    from clar_ray.analyze import load_trials

    records, _info = load_trials(experiment)
    rows = []
    for record in records:
        if record.result is None:
            continue
        job = yaml.safe_load((Path(record.run_dir) / "config.yaml").read_text())
        epochs = [json.loads(line) for line in
                  (Path(record.run_dir) / "metrics.jsonl").read_text().splitlines() if line]
        rows.append({
            "trial": record.name, "method": job["objective"]["name"],
            "label_fraction": job["data"]["label_fraction"], "seed": job["train"]["seed"],
            "linear_top1": record.result["linear_top1"], "knn_top1": record.result["knn_top1"],
            "curve": [[e["epoch"] + 1, e["linear_top1"]] for e in epochs if "linear_top1" in e],
            "train_ce_last_epoch": epochs[-1].get("ce", epochs[-1].get("cross_entropy")),
        })
    return rows


def table(rows: list[dict]) -> str:
    """Markdown: each cell is the mean of the seeds, their spread, and both seeds' values.

    A label-free method trained once stands for every fraction (its training reads no label).
    """
    fractions = sorted({r["label_fraction"] for r in rows}, reverse=True)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    text = ("| method | " + " | ".join(f"{f:.0%} labels" for f in fractions)
            + " |\n|---|" + "---|" * len(fractions) + "\n")
    for method in methods:
        own = [r for r in rows if r["method"] == method]
        trained = {r["label_fraction"] for r in own}
        cells = []
        for fraction in fractions:
            cell = [r for r in own if r["label_fraction"] == fraction]
            if not cell and len(trained) == 1:  # label-free: one training for every fraction
                cell = own
            cells.append(_cell(cell))
        text += f"| {method} | " + " | ".join(cells) + " |\n"
    return text


def _cell(rows: list[dict]) -> str:
    if not rows:
        return "—"
    values = [100 * r["linear_top1"] for r in sorted(rows, key=lambda r: r["seed"])]
    seeds = ", ".join(f"{v:.1f}" for v in values)
    if len(values) == 1:
        return f"{values[0]:.1f} (one seed)"
    spread = max(values) - min(values)
    return f"**{statistics.mean(values):.1f}** ± {spread / 2:.1f} ({seeds})"


if __name__ == "__main__":
    sys.exit(main())
