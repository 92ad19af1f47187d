"""FSDD prepared once per (sample rate, clip length) into the benchmarks' cache folder."""

from __future__ import annotations

from pathlib import Path


def prepared_fsdd(source: str, cache: str, *, sample_rate: int = 8000,
                  clip_seconds: float = 0.6) -> str:
    """The prepared dataset's folder, prepared from ``source`` if the cache has none yet."""
    from clar_ray.data.prepare import prepare_dataset

    data_dir = Path(cache) / f"fsdd-{sample_rate}-{clip_seconds:g}s"
    if not (data_dir / "manifest.json").exists():
        prepare_dataset("fsdd", str(data_dir), source=source, sample_rate=sample_rate,
                        clip_seconds=clip_seconds, progress=False)
    return str(data_dir)
