"""Views/s of the expensive set (fade → time stretch → pitch shift): per clip against batched.

On FSDD clips (resampled to 16 kHz, 1 s), the ``paper`` preset (every step applied, rates in
[0.5, 1.5], ±15 semitones), the same views (seed, epoch 0, view 0) in every variant:

    librosa      per clip in this process: the numpy fade, then librosa.effects.time_stretch
                 (cropped/padded) and librosa.effects.pitch_shift (soxr_hq), one core
    numpy        per clip in this process: ``Augmenter`` on one-row batches (the project's
                 vectorised phase vocoder and soxr), one core
    torch B      ``BatchAugmenter`` on CPU tensors of B rows (torch.set_num_threads(--threads))
    cuda B       the same on the GPU (only when there is one), timed after synchronising
    model        (GPU only) the 2D model's training views/s alone and with the expensive set
                 augmented on the GPU first (benchmarks/train_throughput.py's step)

The per-clip variants run on one core; "on 2 cores" is twice their rate (their copies would
not share anything: an upper bound). The torch rows run on --threads threads (default 2).
Each round runs every variant back to back and the ratios are taken within the round (these
machines drift); the table shows medians over --rounds. Besides views/s (wall clock) the
script reports CPU-ms per view (process time), which other load on the machine disturbs less.

Usage:
    python benchmarks/vocoder_batch.py [--quick] [--rounds 2] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEQUENCE = ["fade", "time_stretch", "pitch_shift"]
SAMPLE_RATE = 16000
FSDD = ROOT.parent / "shared" / "data" / "fsdd"


def load_clips(fsdd: Path, count: int) -> np.ndarray:
    """``count`` FSDD recordings, 8 → 16 kHz, cut or zero-padded to 1 s: (count, 16000)."""
    import soundfile
    import soxr

    files = sorted((fsdd / "recordings").glob("*.wav"))
    if not files:
        raise SystemExit(f"no FSDD recordings under {fsdd}/recordings (use --fsdd)")
    clips = []
    for path in files[::max(1, len(files) // count)][:count]:
        x, rate = soundfile.read(path, dtype="float32")
        x = soxr.resample(x, rate, SAMPLE_RATE, quality="HQ")
        clips.append(np.pad(x, (0, max(0, SAMPLE_RATE - len(x))))[:SAMPLE_RATE])
    return np.stack(clips).astype(np.float32)


def librosa_views(waves: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The expensive set per clip with librosa's effects, on the Augmenter's parameters."""
    import librosa

    from clar_ray.augment import AUGMENTATIONS, build_params, step_rng

    out = np.empty_like(waves)
    specs = [(AUGMENTATIONS[name], build_params(name)) for name in SEQUENCE]
    for row, (wave, sample_id) in enumerate(zip(waves, ids)):
        x = wave
        for step, (spec, params) in enumerate(specs):
            draw = spec.draw(step_rng(0, 0, int(sample_id), 0, step), len(x), SAMPLE_RATE,
                             params)
            if spec.name == "fade":
                x = spec.apply(x[None], {k: np.asarray([v]) for k, v in draw.items()},
                               SAMPLE_RATE)[0]
            elif spec.name == "time_stretch":
                x = librosa.util.fix_length(librosa.effects.time_stretch(x, rate=draw["rate"]),
                                            size=len(wave))
            else:
                x = librosa.effects.pitch_shift(x, sr=SAMPLE_RATE, n_steps=draw["semitones"],
                                                res_type="soxr_hq")
        out[row] = x
    return out


def timed(function: Callable[[], object], views: int, sync: Callable[[], None] | None = None
          ) -> dict[str, float]:
    """Views/s (wall) and CPU-ms per view (this process) of one call."""
    if sync:
        sync()
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    if sync:
        sync()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"views_per_s": views / wall, "cpu_ms_per_view": 1e3 * cpu / views}


def run_round(waves: np.ndarray, batches: list[int], per_clip: int, cuda: bool
              ) -> dict[str, dict[str, float]]:
    import torch

    from clar_ray.augment import Augmenter, BatchAugmenter

    ids = np.arange(len(waves))
    results: dict[str, dict[str, float]] = {}
    numpy_path = Augmenter(SEQUENCE, sample_rate=SAMPLE_RATE)
    batched = BatchAugmenter(SEQUENCE, sample_rate=SAMPLE_RATE)
    clips, clip_ids = waves[:per_clip], ids[:per_clip]
    librosa_views(clips[:2], clip_ids[:2])  # warm-up (librosa's first calls are slow)
    results["librosa"] = timed(lambda: librosa_views(clips, clip_ids), per_clip)
    results["numpy"] = timed(lambda: [numpy_path(clips[i:i + 1], clip_ids[i:i + 1], epoch=0,
                                                 view=0) for i in range(per_clip)], per_clip)
    for batch in batches:
        x, x_ids = torch.from_numpy(waves[:batch]), torch.from_numpy(ids[:batch])
        batched(x, x_ids, epoch=0, view=0)  # warm-up at this size
        results[f"torch {batch}"] = timed(
            lambda x=x, x_ids=x_ids: batched(x, x_ids, epoch=0, view=0), batch)
    if cuda:
        for batch in batches:
            x, x_ids = torch.from_numpy(waves[:batch]).cuda(), torch.from_numpy(ids[:batch])
            batched(x, x_ids, epoch=0, view=0)
            results[f"cuda {batch}"] = timed(
                lambda x=x, x_ids=x_ids: batched(x, x_ids, epoch=0, view=0), batch,
                torch.cuda.synchronize)
    return results


def model_rows(waves: np.ndarray, batch: int) -> dict[str, float]:
    """GPU: the 2D model's training views/s alone and with the expensive set on the GPU."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_throughput import MODELS, model_alone  # type: ignore[import-not-found]

    from clar_ray.augment import BatchAugmenter

    alone = model_alone(MODELS["2d"], "cuda", batch, 10)
    augment = BatchAugmenter(SEQUENCE, sample_rate=SAMPLE_RATE)
    x = torch.from_numpy(np.resize(waves, (batch, waves.shape[1]))).cuda()
    ids = torch.arange(batch)
    times = []
    for _ in range(6):
        torch.cuda.synchronize()
        started = time.perf_counter()
        for view in (0, 1):
            augment(x, ids, epoch=0, view=view)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    augment_s = statistics.median(times[1:]) / (2 * batch)  # seconds per view
    return {"model_alone": alone, "model_with_set": 1.0 / (1.0 / alone + augment_s),
            "augment_only": 1.0 / augment_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fsdd", type=Path, default=FSDD)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--per-clip", type=int, default=128, help="clips per per-clip variant")
    parser.add_argument("--quick", action="store_true", help="1 round, batches 32 and 128")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    batches = [32, 128] if args.quick else [32, 128, 512]
    rounds = 1 if args.quick else args.rounds
    cuda = torch.cuda.is_available()
    load_before = os.getloadavg()
    waves = load_clips(args.fsdd, max(batches + [args.per_clip]))
    per_round = [run_round(waves, batches, args.per_clip, cuda) for _ in range(rounds)]
    load_after = os.getloadavg()
    names = list(per_round[0])
    median = {name: {key: statistics.median(r[name][key] for r in per_round)
                     for key in per_round[0][name]} for name in names}
    ratio = {name: statistics.median(r[name]["views_per_s"] / (2 * r["numpy"]["views_per_s"])
                                     for r in per_round) for name in names}
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}; "
          f"torch threads {args.threads}; {rounds} round(s)")
    print("| variant | views/s | CPU-ms per view | views/s / (numpy per clip × 2 cores) |")
    print("|---|---|---|---|")
    for name in names:
        print(f"| {name} | {median[name]['views_per_s']:,.0f} | "
              f"{median[name]['cpu_ms_per_view']:.2f} | {ratio[name]:.2f} |")
    record: dict[str, object] = {"rounds": per_round, "median": median, "ratio": ratio,
                                 "load_before": load_before, "load_after": load_after,
                                 "threads": args.threads}
    if cuda:
        record["model"] = model_rows(waves, 128)
        print("GPU, 2D model, batch 128:", record["model"])
    else:
        print("GPU: no GPU was available")
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
