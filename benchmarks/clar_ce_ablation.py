"""What makes CLAR's cross-entropy learn: heads, CE sum, optimiser and ce_weight on FSDD.

At 100 % labels on FSDD every variant trains the same encoder for the same few epochs; the
table compares the per-epoch training cross-entropy (and labelled accuracy) of each CLAR
variant with the supervised run's. The variants walk from the project's earlier CLAR (the paper
text's plain heads, the CE as a mean over both views) to the authors' released code (batch norm
heads, the two views' CEs summed, LARS over Adam).

Usage:
    python benchmarks/clar_ce_ablation.py [--epochs 3] [--out benchmarks/results]

It writes OUT/clar_ce_ablation.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from fsdd_cache import prepared_fsdd

ROOT = Path(__file__).resolve().parents[1]

#: (name, overrides): the supervised reference, then CLAR from the old setup to the released code.
VARIANTS: list[tuple[str, list[str]]] = [
    ("supervised (code head)", ["objective.name=supervised"]),
    ("supervised (paper head)", ["objective.name=supervised", "model.head=paper"]),
    ("CLAR: paper head, CE mean (before)", ["model.head=paper", "objective.ce_weight=0.5"]),
    ("CLAR: paper head, CE sum", ["model.head=paper"]),
    ("CLAR: code head, CE mean", ["objective.ce_weight=0.5"]),
    ("CLAR: code head, CE sum (default)", []),
    ("CLAR: code head, CE sum, ce_weight 2", ["objective.ce_weight=2.0"]),
    ("CLAR: code head, CE sum, LARS-Adam lr 1.0", ["optim.name=lars_adam"]),
    ("CLAR: code head, CE sum, LARS-Adam lr 0.1", ["optim.name=lars_adam", "optim.lr=0.1"]),
    ("supervised (code head), LARS-Adam lr 0.1",
     ["objective.name=supervised", "optim.name=lars_adam", "optim.lr=0.1"]),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsdd", default=str(ROOT.parent / "shared" / "data" / "fsdd"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--only", nargs="*", type=int, help="indices of VARIANTS to run")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "clar-ray-bench"))
    args = parser.parse_args(argv)
    if not Path(args.fsdd).is_dir():
        print(f"FSDD not found at {args.fsdd}: pass --fsdd PATH", file=sys.stderr)
        return 2
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    from clar_ray.config import JobConfig
    from clar_ray.resources import ensure_ray
    from clar_ray.train import run_training

    data_dir = prepared_fsdd(args.fsdd, args.cache)
    base = JobConfig().replace([
        f"data.path={data_dir}", "objective.name=clar", f"model.width={args.width}",
        "model.hidden_dim=128", "augment.sequence=[fade, time_mask]",
        f"train.epochs={args.epochs}", "train.batch_size=64", "optim.lr=1.0",
        "optim.reference_batch=256", "optim.warmup_epochs=1", "train.cpus_per_worker=1",
        f"train.checkpoint_every={args.epochs}", "eval.every_epochs=0",
    ])
    ensure_ray(base)
    runs = Path(tempfile.mkdtemp(prefix="clar-ray-ce-ablation-"))
    chosen = args.only if args.only else range(len(VARIANTS))
    rows = []
    for index in chosen:
        name, overrides = VARIANTS[index]
        job = base.replace(overrides)
        started = time.perf_counter()
        run_dir = runs / f"variant-{index}"
        run_training(job, str(run_dir), evaluate=False)
        epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        ce_key = "ce" if job.objective.name == "supervised" else "cross_entropy"
        # CLAR's CE is the two views' sum: halve it to compare with the supervised mean.
        per_view = 1.0 if job.objective.name == "supervised" else 2.0
        row = {"variant": name, "overrides": overrides,
               "ce_per_view": [e[ce_key] / per_view for e in epochs],
               "acc": [e["acc"] for e in epochs],
               "nt_xent": [e.get("nt_xent") for e in epochs],
               "minutes": (time.perf_counter() - started) / 60}
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"epochs": args.epochs, "width": args.width, "dataset": "FSDD 8 kHz 0.6 s",
                "batch_size": 64, "label_fraction": 1.0, "cpu_count": os.cpu_count()}
    (out / "clar_ce_ablation.json").write_text(
        json.dumps({"settings": settings, "results": rows}, indent=2) + "\n")
    print(table(rows))
    return 0


def table(rows: list[dict]) -> str:
    """Markdown: per-view training CE and labelled accuracy at every epoch."""
    epochs = max(len(r["ce_per_view"]) for r in rows)
    text = ("| variant | " + " | ".join(f"CE / acc, epoch {e + 1}" for e in range(epochs))
            + " |\n|---|" + "---|" * epochs + "\n")
    for r in rows:
        cells = [f"{ce:.2f} / {acc:.0%}" for ce, acc in zip(r["ce_per_view"], r["acc"])]
        text += f"| {r['variant']} | " + " | ".join(cells) + " |\n"
    return text


if __name__ == "__main__":
    sys.exit(main())
