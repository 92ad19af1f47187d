"""Throughput of ``clar-ray prepare`` (clips/s) on FSDD and Philharmonia with 1 and 2 CPUs.

Each CPU count gets its own local Ray session (``ray.init(num_cpus=n)``), warmed up with a tiny
synthetic preparation so that worker start-up is not billed to the first dataset. A dataset that
is absent is skipped with a message. Decode workers run with OMP/MKL/OPENBLAS threads set to 1.

    python benchmarks/prepare_throughput.py --quick --out prepare_throughput.json
    python benchmarks/prepare_throughput.py --data /path/to/datasets --cpus 1 2 4

``--data`` holds ``fsdd/`` and ``philharmonia/`` (default: ``../shared/data`` beside the project).
``--quick`` prepares a subset (600 clips of each) through symlinks and finishes in under 2 minutes.
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

from clar_ray.data.prepare import prepare_dataset  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
QUICK_CLIPS = 600

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


def run(data: Path, cpus: list[int], quick: bool, work: Path) -> list[dict]:
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
    for n in cpus:
        started = time.perf_counter()
        ray.init(
            address="local",
            num_cpus=n,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": THREAD_ENV},
        )
        init_s = time.perf_counter() - started
        try:
            prepare_dataset(
                "synthetic",
                str(work / f"warmup-{n}"),
                progress=False,
                options={"num_classes": "2", "clips_per_class": "4"},
            )
            for name, recipe, source in sources:
                out = work / f"{name}-{n}cpu"
                t0 = time.perf_counter()
                manifest = prepare_dataset(recipe, str(out), source=str(source), progress=False)
                seconds = time.perf_counter() - t0
                rows = manifest.num_rows
                results.append(
                    {
                        "dataset": name,
                        "cpus": n,
                        "clips": rows,
                        "skipped": len(manifest.skipped),
                        "seconds": round(seconds, 2),
                        "clips_per_s": round(rows / seconds, 1),
                        "ray_init_s": round(init_s, 2),
                    }
                )
                print(
                    f"  {name:<13} {n} CPU  {rows:>6} clips  {seconds:7.2f} s  "
                    f"{rows / seconds:8.1f} clips/s",
                    flush=True,
                )
        finally:
            ray.shutdown()
    return results


def table(results: list[dict]) -> str:
    lines = [
        f"{'dataset':<13} {'CPUs':>4} {'clips':>6} {'seconds':>8} {'clips/s':>8} {'speed-up':>8}"
    ]
    base = {
        r["dataset"]: r["clips_per_s"]
        for r in results
        if r["cpus"] == min(x["cpus"] for x in results)
    }
    for r in results:
        speedup = r["clips_per_s"] / base[r["dataset"]]
        lines.append(
            f"{r['dataset']:<13} {r['cpus']:>4} {r['clips']:>6} {r['seconds']:>8.2f} "
            f"{r['clips_per_s']:>8.1f} {speedup:>7.2f}x"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the datasets")
    parser.add_argument("--cpus", type=int, nargs="+", default=[1, 2], help="Ray CPU counts")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_CLIPS} clips per dataset")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="clar-prepare-bench-") as tmp:
        results = run(args.data, args.cpus, args.quick, Path(tmp))
    if not results:
        print("no dataset found: nothing measured", file=sys.stderr)
        return 1
    print(table(results))
    if args.out:
        report = {
            "benchmark": "prepare_throughput",
            "quick": args.quick,
            "results": results,
            "machine": {
                "cpu_count": os.cpu_count(),
                "load_avg_1m": os.getloadavg()[0],
                "python": platform.python_version(),
                "ray": ray.__version__,
            },
        }
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
