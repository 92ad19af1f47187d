"""Training throughput (views/s) of the 2D and 1D models: model alone vs the whole pipeline.

    model     frontend + method forward/backward + LARS step on in-memory batches (the ceiling)
    pipeline  `run_training`: Ray Data stream (read → augment actors) → Ray Train worker,
              the same model; views/s of the last epoch from metrics.jsonl

The gap between the two is the share lost to the input pipeline. On a GPU the model runs
under bf16 autocast (``train.precision=auto``).

Usage:
    python benchmarks/train_throughput.py [--quick] [--device cpu|cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

MODELS = {
    "2d": ["model.frontend=tf3", "model.encoder=resnet18_2d"],
    "1d": ["model.frontend=raw", "model.encoder=resnet18_1d"],
}


def model_alone(overrides: list[str], device: str, batch: int, steps: int) -> float:
    """Median views/s of full training steps on one fixed in-memory batch."""
    import torch

    from clar_ray.config import JobConfig
    from clar_ray.methods import build_method
    from clar_ray.models import build_frontend
    from clar_ray.optim import lars

    job = JobConfig().replace(overrides)
    dev = torch.device(device)
    frontend = build_frontend(job.model.frontend, sample_rate=16000).to(dev)
    method = build_method(job.model, job.objective, in_channels=frontend.out_channels,
                          num_classes=10).to(dev)
    optimizer = lars.LARS(lars.param_groups(method, 1e-4), lr=0.1)
    waves = torch.randn(2, batch, 16000, device=dev) * 0.1
    ids = torch.arange(batch, device=dev)
    labels = ids % 10
    bf16 = dev.type == "cuda"
    times = []
    for step in range(steps + 2):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        with torch.no_grad():
            x_a, x_b = frontend(waves[0]), frontend(waves[1])
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = method(x_a, x_b, ids, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if step >= 2:  # warm-up steps are not counted
            times.append(time.perf_counter() - started)
    return 2 * batch / statistics.median(times)


def pipeline(overrides: list[str], data_dir: str, epochs: int) -> float:
    """views/s of the last epoch of a real `run_training` (no evaluation)."""
    from clar_ray.config import JobConfig
    from clar_ray.train import run_training

    job = JobConfig().replace([f"data.path={data_dir}", f"train.epochs={epochs}", *overrides])
    with tempfile.TemporaryDirectory() as folder:
        run_training(job, os.path.join(folder, "run"), evaluate=False)
        lines = Path(folder, "run", "metrics.jsonl").read_text().splitlines()
    return float(json.loads(lines[-1])["views_per_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small widths and few steps")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--width", type=int, default=None, help="model.width (default 16/64)")
    parser.add_argument("--no-pipeline", action="store_true", help="model alone only")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    width = args.width or (16 if args.quick or args.device == "cpu" else 64)
    batch = 32 if args.device == "cpu" else 256
    common = [f"model.width={width}", "objective.name=clar", f"train.batch_size={batch}",
              "augment.sequence=[fade, time_mask]", "optim.warmup_epochs=0",
              f"optim.reference_batch={batch}"]
    results: dict[str, dict[str, float]] = {}
    data_dir = None
    if not args.no_pipeline:
        from clar_ray.data.prepare import prepare_dataset

        data_dir = os.path.join(tempfile.mkdtemp(prefix="clar-ray-bench-"), "synthetic")
        prepare_dataset("synthetic", data_dir, progress=False,
                        options={"clips_per_class": "40" if args.quick else "100"})
    for name, model in MODELS.items():
        row = {"model": model_alone(model + common, args.device, batch,
                                    steps=3 if args.quick else 10)}
        if data_dir is not None:
            row["pipeline"] = pipeline(model + common + [f"train.use_gpu={args.device == 'cuda'}"],
                                       data_dir, epochs=2)
            row["pipeline_share"] = row["pipeline"] / row["model"]
        results[name] = row
    print(f"\ntraining views/s on {args.device}, width {width}, batch {batch}")
    print(f"{'model':<6} {'model alone':>12} {'pipeline':>10} {'pipeline/model':>15}")
    for name, row in results.items():
        pipe = ""
        if "pipeline" in row:
            pipe = f"{row['pipeline']:>10.1f} {row['pipeline_share']:>15.2f}"
        print(f"{name:<6} {row['model']:>12.1f} {pipe}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": args.device, "width": width,
                                               "batch": batch, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
