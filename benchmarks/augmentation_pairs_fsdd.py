"""The paper's Figure 4 on real speech: an augmentation-pair study on FSDD, run by `clar-ray tune`.

Four augmentations (fade, time_mask, time_shift, white_noise) give 16 trials: every ordered
pair, the diagonal being one augmentation alone. Each trial trains SimCLR (NT-Xent only, no
labels) on the 2D input (tf3 + ResNet18-2D) on the FSDD training split (takes 5-49 of every
speaker and digit), then the linear probe on the frozen encoder is scored on the test split
(takes 0-4), un-augmented. The heatmap shows that probe's top-1 with row, column and overall
means.

Budget (the defaults): FSDD at its native 8 kHz cut or padded to 0.6 s (90 % of the recordings
are shorter), ResNet18-2D of width 8, batch 64, LARS, 2 epochs per trial, probe 100 epochs.
Measured on a 2-core machine (Nov 2026): one epoch takes ~25 s (~200-250 views/s) and a trial
~1.3 min with Ray Train's start and the final probe when the machine is otherwise idle, so the
16 trials take ~21 minutes; on the same machine shared with other jobs (load 13-17) trials took
up to 4.4 min and the study 34 minutes. It is a small budget: the absolute accuracies are far
below the paper's, and differences of a few points between cells are within run-to-run noise
(one seed per cell).
``--quick`` (2 augmentations, 4 trials, 1 epoch) checks the pipeline in ~5 minutes.

Usage:
    python benchmarks/augmentation_pairs_fsdd.py [--quick] [--epochs 2] [--width 8]
        [--out DIR] [--resume] [--address RAY_ADDRESS]

Writes the experiment (runs, report) to --out, the heatmap to
benchmarks/augmentation_pairs_fsdd.png, the numbers to
benchmarks/results/augmentation_pairs_fsdd.{json,md}, and prints the matrix.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml
from fsdd_cache import prepared_fsdd

from clar_ray.config import FRONTEND_ENCODERS

ROOT = Path(__file__).resolve().parents[1]
AUGMENTATIONS = ("fade", "time_mask", "time_shift", "white_noise")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsdd", default=str(ROOT.parent / "shared" / "data" / "fsdd"))
    parser.add_argument("--quick", action="store_true",
                        help="2 augmentations, 1 epoch: a pipeline check in a few minutes")
    parser.add_argument("--augmentations", nargs="+", default=list(AUGMENTATIONS))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--frontend", default="tf3", choices=sorted(FRONTEND_ENCODERS))
    parser.add_argument("--sample-rate", type=int, default=8000, help="FSDD is recorded at 8 kHz")
    parser.add_argument("--clip-seconds", type=float, default=0.6,
                        help="90 %% of FSDD recordings are shorter than 0.6 s")
    parser.add_argument("--probe-epochs", type=int, default=100)
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(),
                                                      "clar-ray-bench", "aug-pairs-fsdd"))
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "clar-ray-bench"),
                        help="where the prepared FSDD is kept between runs")
    parser.add_argument("--resume", action="store_true", help="finish an interrupted --out")
    parser.add_argument("--address", default=None, help="Ray cluster address")
    parser.add_argument("--results", default=str(ROOT / "benchmarks"),
                        help="where the heatmap PNG and results/ go (--quick: into --out)")
    args = parser.parse_args(argv)
    if args.quick:
        args.augmentations, args.epochs = ["fade", "time_shift"], 1
    if not Path(args.fsdd).is_dir():
        print(f"FSDD not found at {args.fsdd}: pass --fsdd PATH", file=sys.stderr)
        return 2
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    from clar_ray.analyze import analyze_experiment
    from clar_ray.tune import run_study

    started = time.perf_counter()
    data_dir = Path(prepared_fsdd(args.fsdd, args.cache, sample_rate=args.sample_rate,
                                  clip_seconds=args.clip_seconds))
    prepared = time.perf_counter()

    out = Path(args.out)
    if out.exists() and not args.resume:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    encoder = FRONTEND_ENCODERS[args.frontend]
    tune_file = out.parent / f"{out.name}.yaml"
    tune_file.write_text(yaml.safe_dump({
        "base": {
            "name": "fsdd-aug-pairs",
            "data": {"path": str(data_dir)},
            "model": {"frontend": args.frontend, "encoder": encoder, "width": args.width,
                      "hidden_dim": 128},
            "objective": {"name": "simclr"},
            "optim": {"name": "lars", "lr": 1.0, "reference_batch": 256,
                      "warmup_epochs": 0.25 * args.epochs},
            "train": {"epochs": args.epochs, "batch_size": args.batch_size, "workers": 1,
                      "cpus_per_worker": 2, "checkpoint_every": args.epochs},
            "eval": {"every_epochs": 0, "probe_epochs": args.probe_epochs},
        },
        "study": {"name": "augmentation-pairs", "augmentations": args.augmentations},
    }, sort_keys=False))
    experiment = run_study(str(tune_file), str(out / "experiment"), resume=args.resume,
                           address=args.address)
    trained = time.perf_counter()
    report = analyze_experiment(experiment)
    report_dir = Path(report).parent

    with open(report_dir / "augmentation_pairs.csv") as handle:
        matrix = list(csv.reader(handle))
    trials = []
    for run in sorted(Path(experiment, "runs").iterdir()):
        events = [json.loads(line) for line in (Path(experiment) / "events" / f"{run.name}.jsonl")
                  .read_text().splitlines()]
        starts = [e["time"] for e in events if e["event"] in ("start", "resume")]
        ends = [e["time"] for e in events if e["event"] == "finished"]
        result_path = run / "result.json"
        result = json.loads(result_path.read_text()) if result_path.exists() else {}
        trials.append({"trial": run.name, "linear_top1": result.get("linear_top1"),
                       "knn_top1": result.get("knn_top1"),
                       "minutes": round((ends[-1] - starts[-1]) / 60, 2) if ends else None})
    settings = {"augmentations": args.augmentations, "epochs": args.epochs,
                "width": args.width, "batch_size": args.batch_size, "frontend": args.frontend,
                "sample_rate": args.sample_rate, "clip_seconds": args.clip_seconds,
                "probe_epochs": args.probe_epochs,
                "objective": "simclr", "cpu_count": os.cpu_count()}
    timing = {"prepare_minutes": round((prepared - started) / 60, 2),
              "study_minutes": round((trained - prepared) / 60, 2),
              "total_minutes": round((time.perf_counter() - started) / 60, 2),
              # across --resume invocations: each trial from its last (re)start to its end
              "trial_minutes_sum": round(sum(t["minutes"] or 0 for t in trials), 2),
              "resumed": args.resume}
    results_dir = out if args.quick else Path(args.results)  # a check stays out of the repo
    (results_dir / "results").mkdir(parents=True, exist_ok=True)
    stem = "augmentation_pairs_fsdd"
    shutil.copyfile(report_dir / "augmentation_pairs.png", results_dir / f"{stem}.png")
    (results_dir / "results" / f"{stem}.json").write_text(json.dumps(
        {"settings": settings, "timing": timing, "matrix": matrix, "trials": trials},
        indent=2) + "\n")
    table = _markdown(matrix)
    (results_dir / "results" / f"{stem}.md").write_text(
        f"# Augmentation pairs on FSDD\n\nSettings: {json.dumps(settings)}\n\n"
        f"Timing: {json.dumps(timing)}\n\nLinear top-1 (%), row = first augmentation, "
        f"column = second, diagonal = alone:\n\n{table}\n")
    print(f"\nsettings: {json.dumps(settings)}\ntiming:   {json.dumps(timing)}")
    print("\nlinear top-1 (%), row = first, column = second, diagonal = alone:\n" + table)
    print(f"\nheatmap: {results_dir / f'{stem}.png'}\nreport:  {report}")
    return 0


def _markdown(matrix: list[list[str]]) -> str:
    header, *rows = matrix
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"{100 * float(v):.1f}" if v else "×" for v in row[1:]]
        lines.append(f"| {row[0]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
