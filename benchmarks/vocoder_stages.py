"""Where the expensive set's time goes: CPU-ms per view of each stage, per clip against batched.

The same views as ``benchmarks/vocoder_batch.py`` (FSDD at 16 kHz, 1 s, the ``paper`` preset,
fade → time stretch → pitch shift, every step applied), on one thread. Each stage function of
the two paths is wrapped by a timer for the measured calls:

    numpy    ``Augmenter`` on one-row batches: ``vocoder._stft``, ``_phase_vocoder``,
             ``_istft`` and ``_resample`` (soxr HQ)
    torch    ``BatchAugmenter`` on a CPU batch of --batch rows (chunks of ``CHUNK_ROWS``):
             ``batch_vocoder.stft``, ``phase_vocoder``, ``istft`` and ``resample``

"other" is the rest of a call (draws, the fade, crops, row selection). Both paths run each
stage twice per view (the stretch and the pitch shift) and resample once; the numpy stretch
computes the frames its crop drops, the batched one skips them. Rounds alternate the paths;
the table shows medians.

Usage:
    python benchmarks/vocoder_stages.py [--rounds 3] [--batch 128]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from vocoder_batch import FSDD, SAMPLE_RATE, SEQUENCE, load_clips

STAGES = {"numpy": ("_stft", "_phase_vocoder", "_istft", "_resample"),
          "torch": ("stft", "phase_vocoder", "istft", "resample")}
NAMES = ("STFT", "phase vocoder", "inverse STFT", "resample")


@contextmanager
def timed_stages(module: object, names: tuple[str, ...]) -> Iterator[collections.Counter]:
    """Wrap ``module.<name>`` by timers for the block; yields seconds spent per name."""
    spent: collections.Counter = collections.Counter()
    originals = {name: getattr(module, name) for name in names}

    def timer(name: str, function: Callable) -> Callable:
        def wrapped(*args: object, **kwargs: object) -> object:
            started = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] += time.process_time() - started
        return wrapped

    for name, function in originals.items():
        setattr(module, name, timer(name, function))
    try:
        yield spent
    finally:
        for name, function in originals.items():
            setattr(module, name, function)


def measure(path: str, module: object, run: Callable[[], None], views: int) -> dict[str, float]:
    """CPU-ms per view of each stage of one call of ``run`` (after a warm-up call)."""
    run()
    with timed_stages(module, STAGES[path]) as spent:
        started = time.process_time()
        run()
        total = time.process_time() - started
    per_view = {name: 1e3 * spent[stage] / views for name, stage in zip(NAMES, STAGES[path])}
    per_view["other"] = 1e3 * total / views - sum(per_view.values())
    per_view["total"] = 1e3 * total / views
    return per_view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fsdd", type=Path, default=FSDD)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    import torch

    from clar_ray.augment import Augmenter, BatchAugmenter, batch_vocoder, vocoder

    torch.set_num_threads(1)
    waves = load_clips(args.fsdd, args.batch)
    ids = np.arange(len(waves))
    per_clip = Augmenter(SEQUENCE, sample_rate=SAMPLE_RATE)
    batched = BatchAugmenter(SEQUENCE, sample_rate=SAMPLE_RATE)
    x, x_ids = torch.from_numpy(waves), torch.from_numpy(ids)

    def numpy_run() -> None:
        for i in range(len(waves)):
            per_clip(waves[i:i + 1], ids[i:i + 1], epoch=0, view=0)

    def torch_run() -> None:
        batched(x, x_ids, epoch=0, view=0)

    rounds = [{"numpy": measure("numpy", vocoder, numpy_run, len(waves)),
               "torch": measure("torch", batch_vocoder, torch_run, len(waves))}
              for _ in range(args.rounds)]
    print(f"CPU-ms per view, one thread, torch batch {args.batch}, "
          f"median of {args.rounds} rounds")
    print("| stage | numpy per clip | torch batched | torch / numpy |")
    print("|---|---|---|---|")
    for name in (*NAMES, "other", "total"):
        numpy_ms = statistics.median(r["numpy"][name] for r in rounds)
        torch_ms = statistics.median(r["torch"][name] for r in rounds)
        print(f"| {name} | {numpy_ms:.2f} | {torch_ms:.2f} | {torch_ms / numpy_ms:.2f} |")


if __name__ == "__main__":
    main()
