"""Augmented views per second: one process, a torch DataLoader, and the Ray Data stream.

For the cheap set (fade → time mask) and the expensive set (fade → time stretch → pitch shift),
on FSDD clips (16 kHz, 1 s), measured in one run so that the ratios are fair on a noisy machine:

    floor       the per-clip functions, one clip at a time, in this process (one core; the
                better of two passes after a warm-up call)
    dataloader  torch DataLoader(num_workers=N) over the same per-clip functions (how the
                official CLAR code loads: workers start again every epoch), as it comes:
                every worker keeps its thread pools
    dataloader1 the same with each worker held to one thread (OMP/BLAS/numba/torch)
    ray         the clar-ray training stream (Parquet → AugmentViews actors, N actors × 1 CPU),
                one execution for all the epochs, as training runs it
    actor       the stream's actor code alone, in this process on one core: read the shards,
                augment 128-row batches, convert them to Ray Data blocks (one pass over the
                clips after a warm-up pass); ray / (actor × N) is what the stream's transport
                and Ray's own processes leave of N cores
    gpu         the batched torch path on CUDA for the cheap set (only with a GPU)

Each of dataloader, dataloader1 and ray runs the same epochs over the same clips, from a cold
start: "start" is the seconds to the first batch, "total" is views over all the wall time,
"steady" the rate over the second half of the batches. A training run pays the Ray stream's
start once (one execution serves every epoch) and then runs at its steady rate.

Ray starts first and runs one tiny dataset: Ray Data starts its per-cluster actors (stats,
autoscaling coordinator) on a cluster's first dataset and keeps them for the cluster's life, so
a job on a running cluster never pays them; the Ray stream's start is its own (two actor
processes, their imports, the first blocks). Then, per set and round, floor, dataloader,
dataloader1 and ray run one after the other; the ratios are taken within each round (this
machine's speed drifts by tens of percent over minutes) and the table shows the median of
each number over the rounds (--rounds; 3 for the full run, 1 for --quick).

Usage:
    python benchmarks/augment_stream.py [--quick] [--rounds N] [--cpus 2] [--json out.json]

It needs ../shared/data/fsdd (or --fsdd PATH) and prepares it, and the subsets it uses, once
into --cache.
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


def _timed(batches, count) -> tuple[float, float, float]:  # noqa: ANN001
    """(views/s over the whole run, views/s over the second half of the batches, seconds to
    the first batch).

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
        return _views_per_s(views, ended - started), float("nan"), float("nan")
    (half_at, half_views), (last_at, last_views) = marks[len(marks) // 2 - 1], marks[-1]
    return (_views_per_s(views, ended - started),
            _views_per_s(last_views - half_views, last_at - half_at), marks[0][0] - started)


def run_floor(waves: np.ndarray, ids: np.ndarray, sequence: list[str], sample_rate: int) -> float:
    from clar_ray.augment import Augmenter
    from clar_ray.data.stream import limit_threads

    limit_threads()
    augmenter = Augmenter(sequence, sample_rate=sample_rate)
    augmenter(waves[:1], ids[:1], epoch=0, view=0)  # first calls load and compile
    rates = []
    for _ in range(2):
        started = time.perf_counter()
        for i in range(len(waves)):
            for view in (0, 1):
                augmenter(waves[i : i + 1], ids[i : i + 1], epoch=0, view=view)
        rates.append(_views_per_s(2 * len(waves), time.perf_counter() - started))
    return max(rates)


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
                   workers: int, limit: bool, epochs: int) -> tuple[float, float, float]:
    import torch

    loader = torch.utils.data.DataLoader(
        _PairDataset(waves, ids, sequence, sample_rate), batch_size=32, num_workers=workers,
        worker_init_fn=_one_thread if limit else None, persistent_workers=False)
    batches = (batch for _ in range(epochs) for batch in loader)
    return _timed(batches, lambda batch: 2 * len(batch[0]))


def run_ray(data_dir: str, sequence: list[str], cpus: int, epochs: int,
            actor_batch_size: int | None) -> tuple[float, float, float]:
    import ray

    from clar_ray.config import JobConfig
    from clar_ray.data.stream import build_train_stream
    from clar_ray.resources import ResourcePlan

    overrides = [f"data.path={data_dir}", f"augment.sequence={sequence}"]
    if actor_batch_size is not None:
        overrides.append(f"augment.actor_batch_size={actor_batch_size}")
    job = JobConfig().replace(overrides)
    plan = ResourcePlan(workers=1, cpus_per_worker=1.0, gpus_per_worker=0, actors=cpus,
                        cpus_per_actor=1.0)
    dataset = build_train_stream(job, plan, run_id=None, epoch=0, epochs=epochs)
    assert ray.is_initialized()
    return _timed(dataset.iter_batches(batch_format="numpy", batch_size=64),
                  lambda batch: 2 * len(batch["sample_id"]))


def run_actor(data_dir: str, sequence: list[str], actor_batch_size: int | None) -> float:
    import pyarrow.fs
    from ray.data.block import BlockAccessor

    from clar_ray.config import JobConfig
    from clar_ray.data.manifest import Manifest
    from clar_ray.data.stream import AugmentViews

    manifest = Manifest.read(data_dir)
    files = manifest.shard_paths(data_dir, "train")
    actor = AugmentViews(
        sequence=sequence, sample_rate=manifest.sample_rate, preset="paper", params={}, seed=0,
        labelled=np.zeros(0, np.int64), filesystem=pyarrow.fs.LocalFileSystem(),
        batch_size=actor_batch_size or JobConfig().augment.actor_batch_size, run_id=None,
        epoch=0)
    items = {"path": np.array(files), "file": np.arange(len(files)),
             "pass": np.zeros(len(files), np.int64)}
    for _ in range(2):  # a warm-up pass, then the measured one
        started, views = time.perf_counter(), 0
        for batch in actor(items):
            BlockAccessor.batch_to_block(batch)
            views += 2 * len(batch["sample_id"])
    return _views_per_s(views, time.perf_counter() - started)


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


def _prepare(fsdd: Path, cache: Path, clips: int | None) -> str:
    """FSDD prepared (all of it, or its first ``clips`` training recordings) into ``cache``."""
    from clar_ray.data.prepare import prepare_dataset

    out = cache / ("fsdd" if clips is None else f"fsdd-{clips}")
    if (out / "manifest.json").exists():
        return str(out)
    source = fsdd
    if clips is not None:  # a folder of links to the recordings the subset keeps
        source = cache / f"fsdd-{clips}-source"
        (source / "recordings").mkdir(parents=True, exist_ok=True)
        recordings = sorted((fsdd / "recordings").glob("*.wav"))
        takes = [int(f.stem.rsplit("_", 1)[1]) for f in recordings]  # takes 0-4 are test
        train = [f for f, take in zip(recordings, takes) if take > 4][:clips]
        test = [f for f, take in zip(recordings, takes) if take <= 4][:8]
        for wav in train + test:
            link = source / "recordings" / wav.name
            if not link.exists():
                link.symlink_to(wav.resolve())
    prepare_dataset("fsdd", str(out), source=str(source), progress=False)
    return str(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a subset: under two minutes")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs for dataloader and ray")
    parser.add_argument("--fsdd", default=str(ROOT.parent / "shared" / "data" / "fsdd"))
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "clar-ray-bench"))
    parser.add_argument("--json", default=None, help="write the numbers here too")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds of every pipeline (default: 3, or 1 with --quick)")
    parser.add_argument("--actor-batch-size", type=int, default=None,
                        help="rows per augmentation-actor batch (default: the job default)")
    args = parser.parse_args(argv)
    if not Path(args.fsdd).is_dir():
        print(f"FSDD not found at {args.fsdd}: pass --fsdd PATH", file=sys.stderr)
        return 2
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import ray
    import ray.data

    from clar_ray.data.manifest import Manifest, load_split
    from clar_ray.data.stream import pcm_to_float

    # (clips, epochs) per set: the same clips and epochs for dataloader, dataloader1 and ray
    runs = ({"cheap": (None, 3), "expensive": (768, 2)} if args.quick
            else {"cheap": (None, 8), "expensive": (None, 2)})
    rounds = args.rounds or (1 if args.quick else 3)
    ray.init(address="local", num_cpus=args.cpus + 1, include_dashboard=False,
             log_to_driver=False)
    data_dirs = {name: _prepare(Path(args.fsdd), Path(args.cache), runs[name][0])
                 for name in SETS}
    ray.data.range(8, override_num_blocks=2).map_batches(lambda batch: batch).take_all()
    time.sleep(5.0)  # Ray's agents and the idle workers it starts after that warm-up settle
    results: dict[str, dict[str, float]] = {}
    per_round: dict[str, list[dict[str, float]]] = {}
    for name, sequence in SETS.items():
        data_dir, epochs = data_dirs[name], runs[name][1]
        manifest = Manifest.read(data_dir)
        split = load_split(data_dir, "train", columns=["sample_id", "pcm"])
        waves, ids = pcm_to_float(split["pcm"]), split["sample_id"]
        sr = manifest.sample_rate
        probe = 1024 if name == "cheap" else 192
        per_round[name] = []
        for _ in range(rounds):
            row = {"floor": run_floor(waves[:probe], ids[:probe], sequence, sr),
                   "actor": run_actor(data_dir, sequence, args.actor_batch_size)}
            for key, limit in (("dataloader", False), ("dataloader1", True)):
                row[key], row[f"{key}_steady"], row[f"{key}_start_s"] = run_dataloader(
                    waves, ids, sequence, sr, args.cpus, limit=limit, epochs=epochs)
            row["ray"], row["ray_steady"], row["ray_start_s"] = run_ray(
                data_dir, sequence, args.cpus, epochs, args.actor_batch_size)
            for suffix in ("", "_steady"):
                best_dl = max(row["dataloader" + suffix], row["dataloader1" + suffix])
                row["ray_vs_dataloader" + suffix] = row["ray" + suffix] / best_dl
                row["ray_vs_ideal" + suffix] = row["ray" + suffix] / (row["floor"] * args.cpus)
            row["ray_vs_actors_steady"] = row["ray_steady"] / (row["actor"] * args.cpus)
            per_round[name].append(row)
        results[name] = {"clips": float(len(ids)), "epochs": float(epochs),
                         **{key: float(np.median([row[key] for row in per_round[name]]))
                            for key in per_round[name][0]}}
        import torch

        if torch.cuda.is_available() and name == "cheap":
            results[name]["gpu"] = run_gpu(waves, ids, sequence, sr)
    ray.shutdown()
    ideal = f"floor×{args.cpus}"
    print(f"\naugmented views/s, {args.cpus} CPUs ({'quick' if args.quick else 'full'} run, "
          f"median of {rounds} round(s)); "
          f"total = all views over all the wall time (start-up included), steady = over the "
          f"second half of the batches; ray/dl against the faster dataloader")
    print(f"{'set':<10} {'clips×ep':>9} {'floor':>7} {'dataloader':>21} {'dataloader1':>21} "
          f"{'ray':>21} {'ray/dl':>11} {'ray/' + ideal:>11}")
    print(f"{'':<10} {'':>9} {'':>7} {'total / steady, start':>21} {'total / steady, start':>21} "
          f"{'total / steady, start':>21} {'tot / std':>11} {'tot / std':>11}")
    for name, row in results.items():
        cells = [f"{row[k]:>5.0f} / {row[k + '_steady']:>5.0f}, {row[k + '_start_s']:>4.1f}s"
                 for k in ("dataloader", "dataloader1", "ray")]
        runs_cell = f"{int(row['clips'])}×{int(row['epochs'])}"
        print(f"{name:<10} {runs_cell:>9} {row['floor']:>7.0f} {cells[0]:>21} {cells[1]:>21} "
              f"{cells[2]:>21} {row['ray_vs_dataloader']:>5.2f} / "
              f"{row['ray_vs_dataloader_steady']:<4.2f} {row['ray_vs_ideal']:>5.2f} / "
              f"{row['ray_vs_ideal_steady']:<4.2f}"
              + f"  actor {row['actor']:.0f}, ray/(actor×{args.cpus}) steady "
              f"{row['ray_vs_actors_steady']:.2f}"
              + (f"  gpu {row['gpu']:.0f}" if "gpu" in row else ""))
    if rounds > 1:
        for name, rows in per_round.items():
            print(f"{name} per round: ray/dl total " + ", ".join(
                f"{row['ray_vs_dataloader']:.2f}" for row in rows) + "; steady " + ", ".join(
                f"{row['ray_vs_dataloader_steady']:.2f}" for row in rows) + "; ray/" + ideal
                + " steady " + ", ".join(f"{row['ray_vs_ideal_steady']:.2f}" for row in rows))
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"cpus": args.cpus, "quick": args.quick, "rounds": rounds, "results": results,
             "per_round": per_round}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
