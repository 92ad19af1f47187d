"""The paper's Table 2 on real speech: supervised vs SimCLR vs CLAR at 100 %, 10 % and 1 % labels.

On FSDD (spoken digits, official split: takes 0-4 of each speaker and digit are the test set),
each method trains the same encoder with the same augmentations and epoch budget; every encoder
is then evaluated the paper's way: a linear classifier on the frozen features of ALL training
labels, top-1 on the un-augmented test set (plus kNN).

Budget (the defaults): FSDD at its native 8 kHz, cut or padded to 0.6 s (90 % of the recordings
are shorter), tf3 + ResNet18-2D of width 8, batch 64, LARS, fade -> time mask, 10 epochs per
run, probe 100 epochs: nine runs fit in about an hour on a quiet 2-core machine.

Usage:
    python benchmarks/label_fractions_fsdd.py [--epochs 10] [--width 8] [--out DIR]

It writes DIR/label_fractions.json and DIR/label_fractions.md (the table) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("supervised", "simclr", "clar")
FRACTIONS = (1.0, 0.1, 0.01)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsdd", default=str(ROOT.parent / "shared" / "data" / "fsdd"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--sample-rate", type=int, default=8000, help="FSDD is recorded at 8 kHz")
    parser.add_argument("--clip-seconds", type=float, default=0.6,
                        help="90 %% of FSDD recordings are shorter than 0.6 s")
    parser.add_argument("--probe-epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frontend", default="tf3", choices=["tf3", "raw"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "clar-ray-bench"))
    args = parser.parse_args(argv)
    if not Path(args.fsdd).is_dir():
        print(f"FSDD not found at {args.fsdd}: pass --fsdd PATH", file=sys.stderr)
        return 2
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    from clar_ray.config import JobConfig
    from clar_ray.data.prepare import prepare_dataset
    from clar_ray.train import ensure_ray, run_training

    encoder = "resnet18_2d" if args.frontend == "tf3" else "resnet18_1d"
    base = JobConfig().replace([
        f"model.frontend={args.frontend}", f"model.encoder={encoder}",
        f"model.width={args.width}", "model.hidden_dim=128",
        "augment.sequence=[fade, time_mask]", f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch_size}", "optim.name=lars", "optim.lr=1.0",
        "optim.reference_batch=256", "optim.warmup_epochs=1", "eval.every_epochs=0",
        f"eval.probe_epochs={args.probe_epochs}", "train.cpus_per_worker=2",
        f"train.checkpoint_every={args.epochs}", f"train.seed={args.seed}",
    ])
    ensure_ray(base)
    data_dir = str(Path(args.cache) / f"fsdd-{args.sample_rate}-{args.clip_seconds:g}s")
    if not Path(data_dir, "manifest.json").exists():
        prepare_dataset("fsdd", data_dir, source=args.fsdd, sample_rate=args.sample_rate,
                        clip_seconds=args.clip_seconds, progress=False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = Path(tempfile.mkdtemp(prefix="clar-ray-fractions-"))
    results = []
    for method in args.methods:
        for fraction in args.fractions:
            job = base.replace([f"data.path={data_dir}", f"objective.name={method}",
                                f"data.label_fraction={fraction}",
                                f"name=fsdd-{method}-{fraction:g}"])
            started = time.perf_counter()
            summary = run_training(job, str(runs / f"{method}-{fraction:g}"))
            row = {"method": method, "label_fraction": fraction,
                   "linear_top1": summary["result"]["linear_top1"],
                   "knn_top1": summary["result"]["knn_top1"],
                   "minutes": (time.perf_counter() - started) / 60}
            print(json.dumps(row), flush=True)
            results.append(row)
    settings = {"epochs": args.epochs, "width": args.width, "frontend": args.frontend,
                "batch_size": args.batch_size, "augment": list(base.augment.sequence),
                "sample_rate": args.sample_rate, "clip_seconds": args.clip_seconds,
                "probe_epochs": args.probe_epochs, "seed": args.seed,
                "cpu_count": os.cpu_count()}
    (out / "label_fractions.json").write_text(
        json.dumps({"settings": settings, "results": results}, indent=2) + "\n")
    table = _table(results, args.methods, args.fractions)
    (out / "label_fractions.md").write_text(table)
    print(table)
    return 0


def _table(results: list[dict], methods: list[str], fractions: list[float]) -> str:
    cell = {(r["method"], r["label_fraction"]): r for r in results}
    head = "| method | " + " | ".join(f"{f:.0%} labels" for f in fractions) + " |\n"
    head += "|---|" + "---|" * len(fractions) + "\n"
    for method in methods:
        values = [cell.get((method, f)) for f in fractions]
        head += f"| {method} | " + " | ".join(
            f"{v['linear_top1']:.1%} (kNN {v['knn_top1']:.1%})" if v else "—" for v in values
        ) + " |\n"
    return head


if __name__ == "__main__":
    sys.exit(main())
