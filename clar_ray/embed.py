"""Embeddings of every clip of a prepared dataset, by Ray Data batch inference.

Legend: B clips per batch, T samples, D features.

    read_parquet(shards of the chosen splits)          sample_id, pcm (B,) bytes, label, split
      → map_batches(EmbedActor, ActorPoolStrategy)     one frozen encoder per actor (GPU if any)
      → Parquet                                        sample_id, label, split, embedding (D,)

``out`` ending in ``.parquet`` is one file, written on the driver as the batches stream in;
any other ``out`` is a folder of shards written by Ray Data in parallel. ``embedding`` is a
``fixed_size_list<float32>[D]``, which pyarrow, pandas and Ray Data all read back.
"""

from __future__ import annotations

import posixpath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from torch import nn

from clar_ray import artifacts, storage
from clar_ray.data.manifest import Manifest, pcm_from_values
from clar_ray.evaluate import check_compatible, default_device, extract_features, feature_size

__all__ = ["EMBED_COLUMNS", "EmbedActor", "embed_run", "embedding_schema"]

EMBED_COLUMNS = ("sample_id", "label", "split", "embedding")


def embedding_schema(num_features: int) -> pa.Schema:
    """The Arrow schema of an embedding row for ``num_features``-dimensional features."""
    if num_features < 1:
        raise ValueError(f"num_features must be >= 1, got {num_features}")
    return pa.schema([
        pa.field("sample_id", pa.int64(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32(), num_features), nullable=False),
    ])


class EmbedActor:
    """Ray Data actor: a batch of prepared rows → their embeddings (frozen encoder, no grad).

    Args:
        extractor: The feature extractor (shipped to the actor once, by pickling).
        threads: Torch CPU threads of this actor (its CPU reservation).
    """

    def __init__(self, extractor: nn.Module, threads: int = 1) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.device = default_device()
        self.extractor = extractor.to(self.device).eval()
        self.schema = embedding_schema(feature_size(extractor))

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """Embed one batch (inputs are read-only views; nothing is modified)."""
        pcm = pcm_from_values(batch["pcm"])  # (B, T) int16
        feats = extract_features(self.extractor, pcm, batch_size=len(pcm),
                                 device=self.device)  # (B, D)
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(feats.reshape(-1)),
                                                      feats.shape[1])
        return pa.Table.from_arrays([
            pa.array(np.asarray(batch["sample_id"], dtype=np.int64)),
            pa.array(np.asarray(batch["label"], dtype=np.int64)),
            pa.array([str(s) for s in batch["split"]], type=pa.string()),
            embedding,
        ], schema=self.schema)


def _actor_plan(actors: int | None) -> tuple[int, float, float]:
    """(actors, CPUs per actor, GPUs per actor) from the cluster's resources."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    if gpus:
        return actors or gpus, 1.0, 1.0
    return actors or max(1, min(8, cpus // 2)), 1.0, 0.0


def embed_run(run_dir: str, data: str, out: str, *, split: str | None = None,
              batch_size: int = 256, actors: int | None = None) -> int:
    """Write one embedding row per clip of ``data`` with a run's frozen encoder.

    Uses the running Ray session, or starts a local one for the call. Each actor takes one
    GPU when the cluster has GPUs (up to one actor per GPU), else one CPU (up to half the
    CPUs, at most 8).

    Args:
        run_dir: The run directory holding ``encoder.pt`` (local path or URI).
        data: A prepared dataset with the encoder's sample rate and clip length.
        out: ``*.parquet``: one file; otherwise a folder of Parquet shards (local or URI).
        split: Only this split (default: every split of the dataset).
        batch_size: Clips per inference batch.
        actors: Inference actors (default: one per GPU, or half the CPUs up to 8).

    Returns:
        The number of rows written (the clips of the chosen splits, each once).

    Raises:
        ValueError: ``data`` does not match the encoder's audio format, or a bad argument.
        KeyError: ``split`` is not in the dataset.
        RuntimeError: The rows written differ from the clips in the manifest.
    """
    import ray
    import ray.data

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if actors is not None and actors < 1:
        raise ValueError(f"actors must be >= 1, got {actors}")
    extractor, info = artifacts.load_encoder(run_dir)
    manifest = Manifest.read(data)
    check_compatible(manifest, info, data)
    splits = [split] if split is not None else list(manifest.splits)
    expected = sum(manifest.split(name).rows for name in splits)
    fs, _root = storage.resolve_filesystem(data)
    files = [storage.resolve_filesystem(path)[1]
             for name in splits for path in manifest.shard_paths(data, name)]
    own_session = not ray.is_initialized()
    if own_session:
        ray.init(include_dashboard=False)
    try:
        size, cpus, gpus = _actor_plan(actors)
        dataset = ray.data.read_parquet(files, filesystem=fs).select_columns(
            ["sample_id", "pcm", "label", "split"])
        embedded = dataset.map_batches(
            EmbedActor,
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=size),
            num_cpus=cpus,
            num_gpus=gpus,
            fn_constructor_kwargs={"extractor": extractor, "threads": int(cpus)},
        )
        if out.endswith(".parquet"):
            rows = _write_file(embedded, out, embedding_schema(feature_size(extractor)))
        else:
            rows = _write_folder(embedded, out)
    finally:
        if own_session:
            ray.shutdown()
    if rows != expected:
        raise RuntimeError(f"wrote {rows} embeddings to {out}, but the manifest lists {expected} "
                           f"clips in splits {splits}")
    return rows


def _write_file(dataset: Any, out: str, schema: pa.Schema) -> int:
    """Stream the batches into one Parquet file; returns the rows written."""
    fs, inner = storage.resolve_filesystem(out)
    parent = posixpath.dirname(inner)
    if parent:
        fs.create_dir(parent, recursive=True)
    rows = 0
    with pq.ParquetWriter(inner, schema, filesystem=fs) as writer:
        for table in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            writer.write_table(table.cast(schema))
            rows += table.num_rows
    return rows


def _write_folder(dataset: Any, out: str) -> int:
    """Write a folder of Parquet shards with Ray Data; returns the rows written."""
    import ray.data

    fs, inner = storage.resolve_filesystem(out)
    dataset.write_parquet(inner, filesystem=fs, mode=ray.data.SaveMode.OVERWRITE)
    written = fs.get_file_info(pafs.FileSelector(inner, recursive=True))
    return sum(pq.read_metadata(info.path, filesystem=fs).num_rows
               for info in written if info.path.endswith(".parquet"))
