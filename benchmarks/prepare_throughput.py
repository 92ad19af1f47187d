"""Throughput of ``clar-ray prepare`` (clips/s) on FSDD and Philharmonia with 1 and 2 CPUs.

Each CPU count gets its own local Ray session (``ray.init(num_cpus=n)``), warmed up with a tiny
synthetic preparation so that worker start-up is not billed to the first dataset; each dataset is
then prepared ``--repeats`` times (into a fresh folder) and the best time is reported, since the
machine may be shared. A dataset that is absent is skipped with a message. Decode workers run
with OMP/MKL/OPENBLAS threads set to 1. A row "no Ray" decodes the same clips serially in this
process (no Parquet writing): the ceiling for one core.

    python benchmarks/prepare_throughput.py --quick --out prepare_throughput.json
    python benchmarks/prepare_throughput.py --data /path/to/datasets --cpus 1 2 4

``--data`` holds ``fsdd/`` and ``philharmonia/`` (default: ``../shared/data`` beside the project).
``--quick`` prepares a subset (1,500 clips of each, through symlinks) and takes about a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402

from clar_ray.data.decode_task import FileLoader  # noqa: E402
from clar_ray.data.prepare import prepare_dataset  # noqa: E402
from clar_ray.data.recipes import list_recipe  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
QUICK_CLIPS = 1500

# (name, recipe, folder under --data, glob of its audio files)
DATASETS = [
    ("fsdd", "fsdd", "fsdd", "recordings/*.wav"),
    ("philharmonia", "philharmonia", "philharmonia", "*/*.mp3"),
]


def subset(source: Path, pattern: str, n: int, into: Path) -> Path:
    """A folder of symlinks to an evenly spread subset of ``n`` files (same relative paths)."""
    files = sorted(source.glob(pattern))
    step = max(1, len(files) // n)
    for f in files[::step][:n]:
        link = into / f.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f)
    return into


def serial_seconds(recipe: str, source: Path) -> tuple[int, float]:
    """Decode every clip in this process, no Ray; returns (clips, seconds)."""
    listing = list_recipe(recipe, str(source), None)
    loader = FileLoader(listing.root)
    t0 = time.perf_counter()
    for entry in listing.entries:
        loader.load(entry.path, 16000, 16000)
    return len(listing.entries), time.perf_counter() - t0


def row(dataset: str, cpus: int, clips: int, times: list[float], **extra: object) -> dict:
    best = min(times)
    return {
        "dataset": dataset,
        "cpus": cpus,
        "clips": clips,
        "seconds": round(best, 2),
        "clips_per_s": round(clips / best, 1),
        "all_seconds": [round(t, 2) for t in times],
        **extra,
    }


def run(data: Path, cpus: list[int], quick: bool, repeats: int, work: Path) -> list[dict]:
    sources: list[tuple[str, str, Path]] = []
    for name, recipe, folder, pattern in DATASETS:
        source = data / folder
        if not source.is_dir():
            print(f"skipping {name}: {source} is absent", file=sys.stderr)
            continue
        if quick:
            source = subset(source, pattern, QUICK_CLIPS, work / f"{name}-subset")
        sources.append((name, recipe, source))
    results = []
    for name, recipe, source in sources:
        runs = [serial_seconds(recipe, source) for _ in range(repeats)]
        results.append(row(name, 0, runs[0][0], [s for _, s in runs]))
        print(f"  {name:<13} no Ray: {results[-1]['clips_per_s']:8.1f} clips/s", flush=True)
    for n in cpus:
        t0 = time.perf_counter()
        ray.init(
            address="local",
            num_cpus=n,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": THREAD_ENV},
        )
        init_s = round(time.perf_counter() - t0, 2)
        try:
            prepare_dataset(
                "synthetic",
                str(work / f"warmup-{n}"),
                progress=False,
                options={"num_classes": "2", "clips_per_class": "4"},
            )
            for name, recipe, source in sources:
                times, clips, skipped = [], 0, 0
                for r in range(repeats):
                    t0 = time.perf_counter()
                    m = prepare_dataset(
                        recipe, str(work / f"{name}-{n}cpu-{r}"), source=str(source), progress=False
                    )
                    times.append(time.perf_counter() - t0)
                    clips, skipped = m.num_rows, len(m.skipped)
                results.append(row(name, n, clips, times, skipped=skipped, ray_init_s=init_s))
                print(
                    f"  {name:<13} {n} CPU:  {results[-1]['clips_per_s']:8.1f} clips/s "
                    f"({results[-1]['all_seconds']} s)",
                    flush=True,
                )
        finally:
            ray.shutdown()
    return results


def table(results: list[dict]) -> str:
    head = ("dataset", "Ray CPUs", "clips", "best s", "clips/s", "vs 1 CPU")
    lines = ["{:<13} {:>8} {:>6} {:>7} {:>8} {:>8}".format(*head)]
    one = min((r["cpus"] for r in results if r["cpus"] > 0), default=0)
    base = {r["dataset"]: r["clips_per_s"] for r in results if r["cpus"] == one}
    for r in results:
        ratio = r["clips_per_s"] / base[r["dataset"]] if r["dataset"] in base else float("nan")
        cpus = r["cpus"] or "no Ray"
        lines.append(
            f"{r['dataset']:<13} {cpus:>8} {r['clips']:>6} {r['seconds']:>7.2f} "
            f"{r['clips_per_s']:>8.1f} {ratio:>7.2f}x"
        )
    lines.append("(no Ray: the same decoding serially in one process, without writing Parquet)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the datasets")
    parser.add_argument("--cpus", type=int, nargs="+", default=[1, 2], help="Ray CPU counts")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CLIPS} clips per dataset")
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting; best is kept")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="clar-prepare-bench-") as tmp:
        results = run(args.data, args.cpus, args.quick, args.repeats, Path(tmp))
    if not results:
        print("no dataset found: nothing measured", file=sys.stderr)
        return 1
    print(table(results))
    if args.out:
        report = {
            "benchmark": "prepare_throughput",
            "quick": args.quick,
            "repeats": args.repeats,
            "wall_seconds": round(time.perf_counter() - started, 1),
            "results": results,
            "machine": {
                "cpu_count": os.cpu_count(),
                "load_avg_1m_before": load_before,
                "load_avg_1m_after": os.getloadavg()[0],
                "python": platform.python_version(),
                "ray": ray.__version__,
            },
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
