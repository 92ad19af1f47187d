"""What one decode task of ``clar-ray prepare`` runs: files → conditioned clips → Parquet rows.

:func:`decode_rows` is the Ray Data UDF; a loader turns one relative path into int16 PCM of the
clip length (:class:`FileLoader` reads a file through ``pyarrow.fs``, :class:`SyntheticLoader`
renders a generated clip). Files that fail never raise: they go to the :class:`Collector`
actor with their reason, together with the paths of silent clips.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from clar_ray.data.audio import AudioError, condition, decode, is_silent
from clar_ray.data.manifest import pcm_to_arrow, row_schema
from clar_ray.data.synthetic import SyntheticSpec
from clar_ray.storage import resolve_filesystem

__all__ = ["IN_MEMORY_BYTES", "Collector", "FileLoader", "SyntheticLoader", "decode_rows"]

#: Files read whole into memory up to this size; larger ones are streamed (random access).
IN_MEMORY_BYTES = 8 << 20


@dataclass(frozen=True)
class FileLoader:
    """Clips from files under ``root`` (an absolute local path or a URI)."""

    root: str

    def load(self, rel: str, sample_rate: int, clip_samples: int) -> np.ndarray:
        """The file ``rel`` as int16 PCM ``(clip_samples,)`` at ``sample_rate``.

        Files up to :data:`IN_MEMORY_BYTES` are read whole; larger ones are streamed and only
        their first ``clip_samples`` are decoded.

        Raises:
            AudioError: the file cannot be opened, is empty or does not decode.
        """
        fs, base = _filesystem(self.root)
        try:
            f = fs.open_input_file(posixpath.join(base, rel))
        except OSError as e:
            raise AudioError(f"cannot open: {' '.join(str(e).split())}") from e
        with f:
            size = f.size()
            if size == 0:
                raise AudioError("empty file (0 bytes)")
            data: Any = f.read() if size <= IN_MEMORY_BYTES else f
            decoded = decode(data, max_seconds=clip_samples / sample_rate)
        return condition(
            decoded.samples,
            decoded.sample_rate,
            target_rate_hz=sample_rate,
            num_samples=clip_samples,
        )


@dataclass(frozen=True)
class SyntheticLoader:
    """Generated clips (``rel`` is a virtual path of :mod:`clar_ray.data.synthetic`)."""

    spec: SyntheticSpec

    def load(self, rel: str, sample_rate: int, clip_samples: int) -> np.ndarray:
        """The generated clip ``rel`` as int16 PCM ``(clip_samples,)`` at ``sample_rate``."""
        wave = self.spec.render_path(rel, sample_rate=sample_rate, num_samples=clip_samples)
        return condition(wave, sample_rate, target_rate_hz=sample_rate, num_samples=clip_samples)


@lru_cache(maxsize=8)
def _filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    return resolve_filesystem(root)


def decode_rows(
    batch: pa.Table,
    *,
    loader: FileLoader | SyntheticLoader,
    sample_rate: int,
    clip_samples: int,
    collector: Any = None,
) -> pa.Table:
    """Ray Data UDF: rows ``(sample_id, path, label, split)`` → prepared rows (``row_schema``).

    Files that fail become ``{"path", "reason"}`` records sent to ``collector`` (a
    :class:`Collector` actor), together with the paths of silent clips; they never raise.
    """
    paths = batch.column("path").to_pylist()
    keep: list[int] = []
    clips: list[np.ndarray] = []
    skipped: list[dict[str, str]] = []
    silent: list[str] = []
    for i, rel in enumerate(paths):
        try:
            pcm = loader.load(rel, sample_rate, clip_samples)
        except AudioError as e:
            skipped.append({"path": rel, "reason": e.reason})
            continue
        except Exception as e:  # a bad file must never stop the run: record it
            skipped.append({"path": rel, "reason": f"unexpected {type(e).__name__}: {e}"[:300]})
            continue
        keep.append(i)
        clips.append(pcm)
        if is_silent(pcm):
            silent.append(rel)
    if collector is not None and (skipped or silent):
        import ray

        ray.get(collector.add.remote(skipped, silent))
    schema = row_schema(clip_samples)
    if not keep:
        return schema.empty_table()
    take = pa.array(keep, type=pa.int64())
    pcm_array = pcm_to_arrow(np.stack(clips))  # (N, T) int16 as 2T bytes a row
    return pa.Table.from_arrays(
        [
            batch.column("sample_id").take(take).cast(pa.int64()),
            pcm_array,
            batch.column("label").take(take).cast(pa.int64()),
            batch.column("split").take(take).cast(pa.string()),
            batch.column("path").take(take).cast(pa.string()),
        ],
        schema=schema,
    )


class Collector:
    """Ray actor gathering skip records and silent paths from decode tasks."""

    def __init__(self) -> None:
        self.skipped: dict[str, str] = {}
        self.silent: set[str] = set()

    def add(self, skipped: list[dict[str, str]], silent: list[str]) -> None:
        """Record a task's skipped files and silent clips."""
        for s in skipped:  # keyed by path: a retried task does not count twice
            self.skipped[s["path"]] = s["reason"]
        self.silent.update(silent)

    def get(self) -> tuple[dict[str, str], list[str]]:
        """Skipped path → reason, and the silent paths, sorted."""
        return self.skipped, sorted(self.silent)
