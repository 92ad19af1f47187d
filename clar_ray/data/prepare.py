"""``clar-ray prepare``: decode a dataset once into Parquet shards plus ``manifest.json``, on Ray.

The driver lists the source through ``pyarrow.fs`` (``recipes/``); Ray Data tasks
(``decode_task.py``) read each file's bytes through ``pyarrow.fs``, decode it with soundfile, mix
to mono, resample with soxr and pad/crop (``audio.py``); each split is written with
``Dataset.write_parquet(mode="overwrite")`` under ``OUT/<split>/``; the manifest is written last,
so a folder without one is not a dataset.

Every file is accounted for: it becomes a row or an entry of ``skipped`` with its reason
(``rows + skipped == files listed``). ``strict=True`` turns any skip into an error. Decisions:

* NaN/inf samples: skipped ("non-finite samples"); repairing them would invent audio.
* Silence: kept (a quiet take is still an example of its class), and listed in ``silent``.
* Very long files: only the first ``clip_seconds`` (+ 50 ms) are decoded, never the whole file.
* Any other decode failure (empty, cut header, not audio, unreadable): skipped with the message.
  A file cut inside its audio data keeps the frames it has (libsndfile reads them), padded.
* Stereo and multichannel files are averaged to mono; every sample rate is resampled.
"""

from __future__ import annotations

import math
import posixpath
import sys
import time
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, cast

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from clar_ray.console import data_progress_bars, use_bars
from clar_ray.data.decode_task import Collector, FileLoader, SyntheticLoader, decode_rows
from clar_ray.data.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    SplitInfo,
    sample_id_for,
)
from clar_ray.data.recipes import Listing, get_recipe, list_recipe, resolve_options
from clar_ray.storage import resolve_filesystem

__all__ = ["PrepareError", "format_summary", "prepare_dataset"]

#: Fewest files one decode task gets (tiny shards cost more to read than they save).
_MIN_FILES_PER_TASK = 64
#: Decode workers never need more than one thread per library (set when we start Ray).
_THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


class PrepareError(RuntimeError):
    """Preparation could not produce a usable dataset (or ``strict`` found skipped files).

    Attributes:
        skipped: the ``{"path", "reason"}`` records behind the error, if any.
    """

    def __init__(self, message: str, skipped: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.skipped = list(skipped or [])


# ---------------------------------------------------------------- the driver


def prepare_dataset(
    recipe: str,
    out: str,
    *,
    source: str | None = None,
    sample_rate: int = 16000,
    clip_seconds: float = 1.0,
    options: Mapping[str, str] | None = None,
    strict: bool = False,
    overwrite: bool = False,
    rows_per_shard: int = 256,
    progress: bool | None = None,
) -> Manifest:
    """Decode a dataset into ``OUT/<split>/*.parquet`` and ``OUT/manifest.json``.

    Starts a local Ray session if none is running (and stops it at the end); otherwise uses the
    running one, whatever its size.

    Args:
        recipe: a key of ``clar_ray.data.recipes.RECIPES``.
        out: output folder, local path or URI (``s3://...``).
        source: dataset folder, local path or URI (None for ``synthetic``; ``speechcommands``
            then downloads).
        sample_rate: target rate in Hz.
        clip_seconds: clip length; audio is cropped from the start or right-padded with zeros.
        options: recipe options, e.g. ``{"test_fraction": "0.1"}``.
        strict: fail (writing no manifest) if any file was skipped.
        overwrite: replace a previously prepared dataset in ``out``.
        rows_per_shard: most rows per Parquet file. Each decode task writes its own shards, so
            shards are smaller when that keeps at least two tasks per CPU busy.
        progress: show Ray Data's progress bars and a line per split (default: when standard
            error is a terminal, :func:`clar_ray.console.use_bars`).

    Returns:
        The manifest that was written.

    Raises:
        ValueError: bad argument, unknown recipe or option.
        FileExistsError: ``out`` is not empty and ``overwrite`` is False.
        FileNotFoundError: the source is missing or lacks the recipe's layout.
        PrepareError: nothing decodable, or ``strict`` and some files were skipped.
    """
    clip_samples = _clip_samples(sample_rate, clip_seconds, rows_per_shard)
    effective = resolve_options(get_recipe(recipe), options)  # bad names fail before any I/O
    out_fs, out_path = resolve_filesystem(out)
    _check_output(out_fs, out_path, out, overwrite)

    started = time.monotonic()
    listing = list_recipe(recipe, source, effective)
    if strict and listing.skipped:
        raise PrepareError(_strict_message(list(listing.skipped)), list(listing.skipped))
    if not listing.entries:
        raise PrepareError(
            f"recipe {recipe!r} found no audio files in {source!r}"
            + _reasons_suffix(list(listing.skipped)),
            list(listing.skipped),
        )
    _clear_output(out_fs, out_path)
    label_index = {name: i for i, name in enumerate(listing.labels)}
    rows_by_split = _rows_by_split(listing, label_index)
    loader: FileLoader | SyntheticLoader = (
        SyntheticLoader(listing.synthetic) if listing.synthetic else FileLoader(listing.root)
    )

    decode_skipped, silent = _run_ray(rows_by_split, loader, out_fs, out_path, sample_rate,
                                      clip_samples, rows_per_shard,
                                      use_bars() if progress is None else progress)
    skipped = list(listing.skipped) + [
        {"path": p, "reason": r} for p, r in sorted(decode_skipped.items())
    ]
    splits = _written_splits(out_fs, out_path, rows_by_split, listing.labels)
    _check_accounting(rows_by_split, splits, decode_skipped)
    total = sum(s.rows for s in splits.values())
    if (strict and skipped) or total == 0:
        _remove_splits(out_fs, out_path, splits)
        if total == 0:
            message = f"no decodable audio: all {len(skipped)} files were skipped"
            raise PrepareError(message + _reasons_suffix(skipped), skipped)
        raise PrepareError(_strict_message(skipped), skipped)

    manifest = Manifest(
        recipe=recipe,
        source=source,
        options=effective,
        sample_rate=sample_rate,
        clip_samples=clip_samples,
        labels=listing.labels,
        splits=splits,
        skipped=tuple(skipped),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        silent=tuple(silent),
        excluded=dict(listing.excluded),
        notes={
            **listing.notes,
            **({"source_root": listing.root} if listing.root else {}),
            "seconds_to_prepare": f"{time.monotonic() - started:.1f}",
        },
    )
    manifest.write(out)
    return manifest


def _clip_samples(sample_rate: int, clip_seconds: float, rows_per_shard: int) -> int:
    """Check :func:`prepare_dataset`'s numbers; return the samples of a clip."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int (Hz), got {sample_rate!r}")
    if not (
        isinstance(clip_seconds, int | float) and math.isfinite(clip_seconds) and clip_seconds > 0
    ):
        raise ValueError(f"clip_seconds must be > 0, got {clip_seconds!r}")
    if not isinstance(rows_per_shard, int) or rows_per_shard <= 0:
        raise ValueError(f"rows_per_shard must be a positive int, got {rows_per_shard!r}")
    clip_samples = round(sample_rate * clip_seconds)
    if clip_samples < 1:
        raise ValueError(f"clip_seconds={clip_seconds} gives no samples at {sample_rate} Hz")
    return clip_samples


#: Seed of the order of rows in the shards (any order works; a fixed one keeps re-runs equal).
ROW_ORDER_SEED = 0x5EED


def _rows_by_split(listing: Listing, label_index: Mapping[str, int]) -> dict[str, list[dict]]:
    seen: dict[int, str] = {}
    rows: dict[str, list[dict]] = {}
    for e in listing.entries:
        sid = sample_id_for(e.path)
        if sid in seen:
            raise PrepareError(f"sample_id collision between {seen[sid]!r} and {e.path!r}")
        seen[sid] = e.path
        row = {"sample_id": sid, "path": e.path, "label": label_index[e.label], "split": e.split}
        rows.setdefault(e.split, []).append(row)
    for split_rows in rows.values():
        # Shards hold their rows in a seeded random order, not the listing's (which is sorted,
        # so by class for most recipes): the training stream only shuffles shard order and
        # within a local buffer, and class-sorted shards would give batches of one class.
        split_rows.sort(key=lambda row: row["sample_id"])
        order_rng = np.random.default_rng(ROW_ORDER_SEED)
        split_rows[:] = [split_rows[i] for i in order_rng.permutation(len(split_rows))]
    order = {"train": 0, "validation": 1, "test": 2}
    return dict(sorted(rows.items(), key=lambda kv: (order.get(kv[0], 3), kv[0])))


def _run_ray(
    rows_by_split: Mapping[str, list[dict]],
    loader: FileLoader | SyntheticLoader,
    out_fs: pafs.FileSystem,
    out_path: str,
    sample_rate: int,
    clip_samples: int,
    rows_per_shard: int,
    progress: bool,
) -> tuple[dict[str, str], list[str]]:
    """Decode and write every split on Ray; returns (skipped path → reason, silent paths)."""
    import ray

    from clar_ray.resources import init_ray

    own_session = init_ray(env_vars=_THREAD_ENV)  # RAY_ADDRESS, else a new local Ray
    collector: Any = ray.remote(num_cpus=0)(Collector).remote()
    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        with data_progress_bars(progress):
            for split, rows in rows_by_split.items():
                if progress:
                    print(f"prepare: split {split!r}: {len(rows)} files", file=sys.stderr)
                # One task decodes a block of files and writes it (fused by Ray Data): decoded
                # audio never goes through the object store. Blocks of at most rows_per_shard
                # files, at least 2 per CPU, but not smaller than _MIN_FILES_PER_TASK.
                blocks = min(
                    math.ceil(len(rows) / _MIN_FILES_PER_TASK),
                    max(math.ceil(len(rows) / rows_per_shard), 2 * cpus),
                )
                ds: ray.data.Dataset = ray.data.from_items(rows, override_num_blocks=blocks)
                ds = ds.map_batches(
                    cast(Any, decode_rows),
                    batch_format="pyarrow",
                    batch_size=None,
                    num_cpus=1,
                    fn_kwargs={
                        "loader": loader,
                        "sample_rate": sample_rate,
                        "clip_samples": clip_samples,
                        "collector": collector,
                    },
                )
                ds.write_parquet(
                    posixpath.join(out_path, split),
                    filesystem=out_fs,
                    mode=ray.data.SaveMode.OVERWRITE,
                    max_rows_per_file=rows_per_shard,
                )
        skipped, silent = ray.get(collector.get.remote())
        return skipped, silent
    finally:
        ray.kill(collector)
        if own_session:
            ray.shutdown()


def _check_output(fs: pafs.FileSystem, path: str, out: str, overwrite: bool) -> None:
    """Refuse an output that is a file, or a non-empty folder unless ``overwrite``."""
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return
    if info.type != pafs.FileType.Directory:
        raise FileExistsError(f"output {out!r} exists and is not a folder")
    names = sorted(c.base_name for c in fs.get_file_info(pafs.FileSelector(path)))
    if names and not overwrite:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise FileExistsError(
            f"output folder {out!r} is not empty ({shown}); "
            "pass overwrite=True (--overwrite) to replace the dataset in it"
        )


def _clear_output(fs: pafs.FileSystem, path: str) -> None:
    """Create the output folder, or remove the dataset a previous run left in it.

    Only ``manifest.json`` and the split folders it names are removed (the manifest first, so an
    interrupted run never leaves a manifest that points at missing shards); other files stay.
    """
    fs.create_dir(path, recursive=True)
    manifest_path = posixpath.join(path, MANIFEST_NAME)
    if fs.get_file_info(manifest_path).type != pafs.FileType.File:
        return
    try:
        old_splits = list(Manifest.read(manifest_path).splits)
    except ManifestError:
        old_splits = []
    fs.delete_file(manifest_path)
    for split in old_splits:
        split_path = posixpath.join(path, split)
        if fs.get_file_info(split_path).type == pafs.FileType.Directory:
            fs.delete_dir(split_path)


def _written_splits(
    fs: pafs.FileSystem, root: str, rows_by_split: Mapping[str, list[dict]], labels: tuple[str, ...]
) -> dict[str, SplitInfo]:
    """Split infos from what is on disk: shard files, rows and class counts read back."""
    out: dict[str, SplitInfo] = {}
    for split in rows_by_split:
        folder = posixpath.join(root, split)
        files: list[str] = []
        if fs.get_file_info(folder).type == pafs.FileType.Directory:
            files = sorted(
                posixpath.join(split, posixpath.relpath(i.path, folder))
                for i in fs.get_file_info(pafs.FileSelector(folder, recursive=True))
                if i.type == pafs.FileType.File and i.path.endswith(".parquet")
            )
        counts: Counter[int] = Counter()
        for f in files:
            table = pq.read_table(posixpath.join(root, f), columns=["label"], filesystem=fs)
            counts.update(table.column("label").to_pylist())
        out[split] = SplitInfo(
            rows=sum(counts.values()),
            files=tuple(files),
            class_counts={name: counts.get(i, 0) for i, name in enumerate(labels)},
        )
    return out


def _check_accounting(
    rows_by_split: Mapping[str, list[dict]],
    splits: Mapping[str, SplitInfo],
    decode_skipped: Mapping[str, str],
) -> None:
    for split, rows in rows_by_split.items():
        failed = sum(1 for r in rows if r["path"] in decode_skipped)
        if splits[split].rows + failed != len(rows):
            raise PrepareError(
                f"split {split!r}: {splits[split].rows} rows written + {failed} skipped != "
                f"{len(rows)} files listed; the output is incomplete, re-run with overwrite=True"
            )


def _remove_splits(fs: pafs.FileSystem, root: str, splits: Mapping[str, SplitInfo]) -> None:
    for split in splits:
        folder = posixpath.join(root, split)
        if fs.get_file_info(folder).type == pafs.FileType.Directory:
            fs.delete_dir(folder)


def _reasons_suffix(skipped: list[dict[str, str]], limit: int = 5) -> str:
    if not skipped:
        return ""
    lines = [f"  {s['path']}: {s['reason']}" for s in skipped[:limit]]
    more = f"\n  ... and {len(skipped) - limit} more" if len(skipped) > limit else ""
    return ":\n" + "\n".join(lines) + more


def _strict_message(skipped: list[dict[str, str]]) -> str:
    return f"strict mode: {len(skipped)} file(s) skipped" + _reasons_suffix(skipped, limit=20)


def format_summary(manifest: Manifest, out: str | None = None, *, max_reasons: int = 5) -> str:
    """A one-screen, human-readable summary of a prepared dataset.

    Args:
        manifest: what ``prepare_dataset`` returned (or ``Manifest.read``).
        out: the output folder, shown when given.
        max_reasons: how many skipped files to show with their reasons.
    """
    lines = [
        f"prepared {manifest.recipe!r}"
        + (f" from {manifest.source}" if manifest.source else "")
        + (f" into {out}" if out else ""),
        f"  audio:   {manifest.sample_rate} Hz, {manifest.clip_seconds:g} s clips "
        f"({manifest.clip_samples} samples, 16-bit mono)",
        f"  classes: {len(manifest.labels)}: " + _ellipsis(manifest.labels, 12),
    ]
    for name, info in manifest.splits.items():
        lines.append(f"  {name + ':':<12} {info.rows:>8} rows in {len(info.files)} shard(s)")
    lines.append(f"  total:       {manifest.num_rows:>8} rows")
    if manifest.options:
        lines.append("  options: " + ", ".join(f"{k}={v}" for k, v in manifest.options.items()))
    if "split" in manifest.notes:
        lines.append(f"  split:   {manifest.notes['split']}")
    for reason, n in manifest.excluded.items():
        lines.append(f"  excluded {n}: {reason}")
    if manifest.silent:
        lines.append(f"  silent clips kept: {len(manifest.silent)} (listed in the manifest)")
    lines.append(f"  skipped: {len(manifest.skipped)}")
    by_reason = Counter(_reason_kind(s["reason"]) for s in manifest.skipped)
    for reason, n in by_reason.most_common(max_reasons):
        lines.append(f"    {n:>6} × {reason}")
    for s in manifest.skipped[:max_reasons]:
        lines.append(f"    e.g. {s['path']}: {s['reason']}")
    return "\n".join(lines)


def _reason_kind(reason: str) -> str:
    return reason.split(":")[0][:80]


def _ellipsis(names: tuple[str, ...], limit: int) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit})" if len(names) > limit else "")
