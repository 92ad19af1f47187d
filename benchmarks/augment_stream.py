"""Augmented views per second: one process, a torch DataLoader, and the Ray Data stream.

For the cheap set (fade → time mask) and the expensive set (fade → time stretch → pitch shift),
on FSDD clips (16 kHz, 1 s), measured in one run so that the ratios are fair on a noisy machine:

    floor       the per-clip functions, one clip at a time, in this process (one core)
    dataloader  torch DataLoader(num_workers=N) over the same per-clip functions (how the
                official CLAR code loads), as it comes: every worker keeps its thread pools
    dataloader1 the same with each worker held to one thread (OMP/BLAS/numba/torch)
    ray         the clar-ray training stream (Parquet → AugmentViews actors), N actors × 1 CPU
    gpu         the batched torch path on CUDA for the cheap set (only with a GPU)

Usage:
    python benchmarks/augment_stream.py [--quick] [--cpus 2] [--json out.json]

It needs ../shared/data/fsdd (or --fsdd PATH) and prepares it once into --cache.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETS = {"cheap": ["fade", "time_mask"], "expensive": ["fade", "time_stretch", "pitch_shift"]}


def _views_per_s(views: int, seconds: float) -> float:
    return views / seconds if seconds > 0 else float("nan")


def _timed(batches, count) -> tuple[float, float]:  # noqa: ANN001
    """(views/s over the whole run, views/s over the second half of the batches).

    The second half leaves out start-up (workers, actors, the first reads) and most of what a
    pipeline computed ahead before its first batch arrived, which "after the first batch"
    would count as free.
    """
    started = time.perf_counter()
    marks = []  # (seconds, views so far) after each batch
    views = 0
    for batch in batches:
        views += count(batch)
        marks.append((time.perf_counter(), views))
    ended = time.perf_counter()
    if len(marks) < 2:
        return _views_per_s(views, ended - started), float("nan")
    (half_at, half_views), (last_at, last_views) = marks[len(marks) // 2 - 1], marks[-1]
    return _views_per_s(views, ended - started), _views_per_s(last_views - half_views,
                                                               last_at - half_at)


def run_floor(waves: np.ndarray, ids: np.ndarray, sequence: list[str], sample_rate: int) -> float:
    from clar_ray.augment import Augmenter
    from clar_ray.data.stream import limit_threads

    limit_threads()
    augmenter = Augmenter(sequence, sample_rate=sample_rate)
    started = time.perf_counter()
    for i in range(len(waves)):
        for view in (0, 1):
            augmenter(waves[i : i + 1], ids[i : i + 1], epoch=0, view=view)
    return _views_per_s(2 * len(waves), time.perf_counter() - started)


class _PairDataset:
    """A map-style dataset of two augmented views per clip (the official code's shape)."""

    def __init__(self, waves: np.ndarray, ids: np.ndarray, sequence: list[str],
                 sample_rate: int) -> None:
        self.waves, self.ids, self.sequence, self.sample_rate = waves, ids, sequence, sample_rate
        self.augmenter = None

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        from clar_ray.augment import Augmenter

        if self.augmenter is None:
            self.augmenter = Augmenter(self.sequence, sample_rate=self.sample_rate)
        wave, sid = self.waves[i : i + 1], self.ids[i : i + 1]
        return (self.augmenter(wave, sid, epoch=0, view=0)[0],
                self.augmenter(wave, sid, epoch=0, view=1)[0])


def _one_thread(_worker: int) -> None:
    from clar_ray.data.stream import limit_threads

    limit_threads()


def run_dataloader(waves: np.ndarray, ids: np.ndarray, sequence: list[str], sample_rate: int,
                   workers: int, limit: bool) -> tuple[float, float]:
    import torch

    loader = torch.utils.data.DataLoader(
        _PairDataset(waves, ids, sequence, sample_rate), batch_size=32, num_workers=workers,
        worker_init_fn=_one_thread if limit else None, persistent_workers=False)
    return _timed(loader, lambda batch: 2 * len(batch[0]))


def run_ray(data_dir: str, sequence: list[str], cpus: int, rows: int,
            actor_batch_size: int | None) -> tuple[float, float]:
    import ray

    from clar_ray.config import JobConfig
    from clar_ray.data.stream import ResourcePlan, build_train_stream

    overrides = [f"data.path={data_dir}", f"augment.sequence={sequence}"]
    if actor_batch_size is not None:
        overrides.append(f"augment.actor_batch_size={actor_batch_size}")
    job = JobConfig().replace(overrides)
    plan = ResourcePlan(workers=1, cpus_per_worker=1.0, gpus_per_worker=0, actors=cpus,
                        cpus_per_actor=1.0)
    dataset = build_train_stream(job, plan, run_id=None, epoch=0).limit(rows)
    assert ray.is_initialized()
    return _timed(dataset.iter_batches(batch_format="numpy", batch_size=64),
                  lambda batch: 2 * len(batch["sample_id"]))


def run_gpu(waves: np.ndarray, ids: np.ndarray, sequence: list[str], sample_rate: int) -> float:
    import torch

    from clar_ray.augment.batch import BatchAugmenter

    augmenter = BatchAugmenter(sequence, sample_rate=sample_rate)
    x = torch.as_tensor(waves, device="cuda")
    sid = torch.as_tensor(ids, device="cuda")
    for _ in range(3):
        augmenter(x[:256], sid[:256], epoch=0, view=0)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for start in range(0, len(x), 256):
        for view in (0, 1):
            augmenter(x[start : start + 256], sid[start : start + 256], epoch=0, view=view)
    torch.cuda.synchronize()
    return _views_per_s(2 * len(x), time.perf_counter() - started)


def _prepare(fsdd: Path, cache: Path) -> str:
    from clar_ray.data.prepare import prepare_dataset

    out = cache / "fsdd"
    if not (out / "manifest.json").exists():
        prepare_dataset("fsdd", str(out), source=str(fsdd), progress=False)
    return str(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a subset: under two minutes")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs for dataloader and ray")
    parser.add_argument("--fsdd", default=str(ROOT.parent / "shared" / "data" / "fsdd"))
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "clar-ray-bench"))
    parser.add_argument("--json", default=None, help="write the numbers here too")
    parser.add_argument("--actor-batch-size", type=int, default=None,
                        help="rows per augmentation-actor batch (default: the job default)")
    args = parser.parse_args(argv)
    if not Path(args.fsdd).is_dir():
        print(f"FSDD not found at {args.fsdd}: pass --fsdd PATH", file=sys.stderr)
        return 2
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import ray

    from clar_ray.data.manifest import Manifest, load_split
    from clar_ray.data.stream import pcm_to_float

    ray.init(address="local", num_cpus=args.cpus + 1, include_dashboard=False,
             log_to_driver=False)
    data_dir = _prepare(Path(args.fsdd), Path(args.cache))
    manifest = Manifest.read(data_dir)
    split = load_split(data_dir, "train", columns=["sample_id", "pcm"])
    rows = {"cheap": 2048, "expensive": 384} if args.quick else {"cheap": 2700, "expensive": 800}
    results: dict[str, dict[str, float]] = {}
    for name, sequence in SETS.items():
        n = rows[name]
        waves, ids = pcm_to_float(split["pcm"][:n]), split["sample_id"][:n]
        sr = manifest.sample_rate
        row = {"clips": float(n)}
        row["floor"] = run_floor(waves[: max(32, n // 4)], ids[: max(32, n // 4)], sequence, sr)
        row["dataloader"], row["dataloader_steady"] = run_dataloader(
            waves, ids, sequence, sr, args.cpus, limit=False)
        row["dataloader1"], row["dataloader1_steady"] = run_dataloader(
            waves, ids, sequence, sr, args.cpus, limit=True)
        row["ray"], row["ray_steady"] = run_ray(data_dir, sequence, args.cpus, n,
                                                args.actor_batch_size)
        import torch

        if torch.cuda.is_available() and name == "cheap":
            row["gpu"] = run_gpu(waves, ids, sequence, sr)
        row["ray_vs_dataloader"] = row["ray_steady"] / row["dataloader_steady"]
        row["ray_vs_ideal"] = row["ray_steady"] / (row["floor"] * args.cpus)
        results[name] = row
    ray.shutdown()
    print(f"\naugmented views/s, {args.cpus} CPUs ({'quick' if args.quick else 'full'} run); "
          f"steady = over the second half of the batches (start-up excluded), total = all")
    print(f"{'set':<10} {'clips':>6} {'floor':>8} {'dataloader':>17} {'dataloader1':>17} "
          f"{'ray':>17} {'ray/dl':>7} {'ray/(floor×' + str(args.cpus) + ')':>15}")
    print(f"{'':<10} {'':>6} {'':>8} {'steady / total':>17} {'steady / total':>17} "
          f"{'steady / total':>17} {'steady':>7} {'steady':>15}")
    for name, row in results.items():
        cells = [f"{row[k + '_steady']:>7.1f} / {row[k]:>7.1f}"
                 for k in ("dataloader", "dataloader1", "ray")]
        print(f"{name:<10} {int(row['clips']):>6} {row['floor']:>8.1f} {cells[0]:>17} "
              f"{cells[1]:>17} {cells[2]:>17} {row['ray_vs_dataloader']:>7.2f} "
              f"{row['ray_vs_ideal']:>15.2f}" + (f"  gpu {row['gpu']:.0f}" if "gpu" in row else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({"cpus": args.cpus, "quick": args.quick,
                                               "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
