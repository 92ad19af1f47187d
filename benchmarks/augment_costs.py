"""CPU-ms per view of each augmentation alone: the numbers behind ``cpu_ms_per_view``.

Each augmentation of the registry, applied to every row (p = 1, the ``paper`` preset's other
values) by ``Augmenter`` on 128-row batches of FSDD clips at 16 kHz, 1 s, in this process on
one core: process time over --views views after a warm-up call, median of --rounds rounds.
Placement by cost (``clar_ray/augment/placement.py``) and the run's ``plan.json`` use the
numbers that ``AugmentationSpec.cpu_ms_per_view`` holds; the last column shows them beside
this run's.

Usage:
    python benchmarks/augment_costs.py [--rounds 3] [--views 4]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from vocoder_batch import FSDD, SAMPLE_RATE, load_clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fsdd", type=Path, default=FSDD)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--views", type=int, default=4, help="views of the batch per round")
    args = parser.parse_args()
    from clar_ray.augment import AUGMENTATIONS, Augmenter

    waves = load_clips(args.fsdd, 128)
    ids = np.arange(len(waves))
    spent: dict[str, list[float]] = {name: [] for name in AUGMENTATIONS}
    for _ in range(args.rounds):
        for name in AUGMENTATIONS:
            augment = Augmenter([name], sample_rate=SAMPLE_RATE, params={name: {"p": 1.0}})
            augment(waves, ids, epoch=0, view=0)  # warm-up
            started = time.process_time()
            for view in range(args.views):
                augment(waves, ids, epoch=0, view=view)
            spent[name].append(1e3 * (time.process_time() - started) / (args.views * len(waves)))
    print(f"CPU-ms per view, one core, 128-row batches, median of {args.rounds} rounds")
    print("| augmentation | this run | `cpu_ms_per_view` in the code |")
    print("|---|---|---|")
    for name, values in sorted(spent.items(), key=lambda item: -statistics.median(item[1])):
        print(f"| {name} | {statistics.median(values):.3f} | "
              f"{AUGMENTATIONS[name].cpu_ms_per_view} |")


if __name__ == "__main__":
    main()
