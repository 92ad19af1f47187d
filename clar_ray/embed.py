"""Embeddings of every clip of a prepared dataset, by Ray Data batch inference.

Legend: B clips per batch, T samples, D features.

    read_parquet(shards of the chosen splits)          sample_id, pcm (B,) bytes, label, split
      → map_batches(EmbedActor, ActorPoolStrategy)     one frozen encoder per actor (GPU if any)
      → Parquet                                        sample_id, label, split, embedding (D,)

``out`` ending in ``.parquet`` is one file, written on the driver as the batches stream in;
any other ``out`` is a folder of shards written by Ray Data in parallel. ``embedding`` is a
``fixed_size_list<float32>[D]``, which pyarrow, pandas and Ray Data all read back. On a terminal
a progress bar follows the rows (Ray Data's bars for a folder); otherwise a file's writing prints
a few plain lines (:mod:`clar_ray.console`).

Nothing that clar-ray did not write is ever replaced: an existing file is replaced only with
``overwrite`` and only if its schema metadata says clar-ray wrote it; a folder must be new or
empty, or (with ``overwrite``) hold :data:`FOLDER_MARKER`, and then only the shards that marker
lists are removed.
"""

from __future__ import annotations

import posixpath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from torch import nn

from clar_ray import artifacts, console, storage
from clar_ray.data.manifest import Manifest, pcm_from_values
from clar_ray.evaluate import check_compatible, default_device, extract_features, feature_size

__all__ = ["EMBED_COLUMNS", "EmbedActor", "embed_run", "embedding_schema"]

EMBED_COLUMNS = ("sample_id", "label", "split", "embedding")
#: Schema metadata of every embedding file clar-ray writes.
METADATA = {b"written_by": b"clar-ray embed"}
#: The file that marks a folder of embedding shards (JSON: the shards clar-ray wrote).
FOLDER_MARKER = ".clar-ray-embeddings"


def embedding_schema(num_features: int) -> pa.Schema:
    """The Arrow schema of an embedding row for ``num_features``-dimensional features."""
    if num_features < 1:
        raise ValueError(f"num_features must be >= 1, got {num_features}")
    return pa.schema([
        pa.field("sample_id", pa.int64(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32(), num_features), nullable=False),
    ], metadata=METADATA)


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
    """(actors, CPUs per actor, GPUs per actor) from the connected cluster's resources."""
    from clar_ray.resources import read_cluster

    cluster = read_cluster()
    gpus = int(cluster.gpus)
    cpus = max(1, int(cluster.cpus))
    if gpus:
        return actors or gpus, 1.0, 1.0
    return actors or max(1, min(8, cpus // 2)), 1.0, 0.0


def check_output(out: str, *, overwrite: bool = False) -> None:
    """Refuse an ``out`` whose writing would replace anything clar-ray did not write.

    Raises:
        FileExistsError: naming ``out`` and what to do instead.
    """
    fs, inner = storage.resolve_filesystem(out)
    info = fs.get_file_info(inner)
    if info.type == pafs.FileType.NotFound:
        return
    if out.endswith(".parquet"):
        if info.type != pafs.FileType.File:
            raise FileExistsError(f"--out {out} exists and is not a file: choose another --out")
        if not overwrite:
            raise FileExistsError(f"--out {out} exists: pass --overwrite to replace it (only "
                                  f"embeddings clar-ray wrote are replaced)")
        try:
            metadata = pq.read_schema(inner, filesystem=fs).metadata or {}
        except (OSError, ValueError):
            metadata = {}
        if metadata.get(b"written_by") != METADATA[b"written_by"]:
            raise FileExistsError(f"--out {out} was not written by clar-ray embed: it is kept; "
                                  f"choose another --out")
        return
    if info.type != pafs.FileType.Directory:
        raise FileExistsError(f"--out {out} is a file; a folder of shards needs a new or empty "
                              f"folder (or end --out in .parquet for one file)")
    names = {i.base_name for i in fs.get_file_info(pafs.FileSelector(inner))}
    if not names:
        return
    if FOLDER_MARKER not in names:
        raise FileExistsError(f"--out {out} is a folder that holds other files: choose a new or "
                              f"empty folder (clar-ray never deletes what it did not write)")
    if not overwrite:
        raise FileExistsError(f"--out {out} holds embeddings: pass --overwrite to replace them")


def _clear_folder(out: str) -> None:
    """Remove the shards a previous ``embed`` listed in the folder's marker, then the marker."""
    fs, inner = storage.resolve_filesystem(out)
    marker = storage.join_uri(out, FOLDER_MARKER)
    if not storage.exists(marker):
        return
    for name in storage.read_json(marker)["files"]:
        path = posixpath.join(inner, name)
        if fs.get_file_info(path).type == pafs.FileType.File:
            fs.delete_file(path)
    fs.delete_file(posixpath.join(inner, FOLDER_MARKER))


def embed_run(run_dir: str, data: str, out: str, *, split: str | None = None,
              batch_size: int = 256, actors: int | None = None,
              overwrite: bool = False) -> int:
    """Write one embedding row per clip of ``data`` with a run's frozen encoder.

    Uses the running Ray session, or reaches one for the call
    (:func:`clar_ray.resources.init_ray`: RAY_ADDRESS, else a new local Ray). Each actor takes one
    GPU when the cluster has GPUs (up to one actor per GPU), else one CPU (up to half the
    CPUs, at most 8).

    Args:
        run_dir: The run directory holding ``encoder.pt`` (local path or URI).
        data: A prepared dataset with the encoder's sample rate and clip length.
        out: ``*.parquet``: one file; otherwise a folder of Parquet shards (local or URI).
        split: Only this split (default: every split of the dataset).
        batch_size: Clips per inference batch.
        actors: Inference actors (default: one per GPU, or half the CPUs up to 8).
        overwrite: Replace embeddings that clar-ray wrote at ``out`` (never anything else).

    Returns:
        The number of rows written (the clips of the chosen splits, each once).

    Raises:
        ValueError: ``data`` does not match the encoder's audio format, or a bad argument.
        FileExistsError: ``out`` exists and may not be replaced (:func:`check_output`).
        KeyError: ``split`` is not in the dataset.
        RuntimeError: The rows written differ from the clips in the manifest.
    """
    import ray
    import ray.data

    from clar_ray.resources import init_ray

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if actors is not None and actors < 1:
        raise ValueError(f"actors must be >= 1, got {actors}")
    check_output(out, overwrite=overwrite)
    extractor, info = artifacts.load_encoder(run_dir)
    manifest = Manifest.read(data)
    check_compatible(manifest, info, data)
    splits = [split] if split is not None else list(manifest.splits)
    expected = sum(manifest.split(name).rows for name in splits)
    fs, _root = storage.resolve_filesystem(data)
    files = [storage.resolve_filesystem(path)[1]
             for name in splits for path in manifest.shard_paths(data, name)]
    own_session = init_ray()  # RAY_ADDRESS, else a new local Ray (never another user's)
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
            rows = _write_file(embedded, out, embedding_schema(feature_size(extractor)),
                               expected)
        else:
            with console.data_progress_bars():
                rows = _write_folder(embedded, out)
    finally:
        if own_session:
            ray.shutdown()
    if rows != expected:
        raise RuntimeError(f"wrote {rows} embeddings to {out}, but the manifest lists {expected} "
                           f"clips in splits {splits}")
    return rows


def _write_file(dataset: Any, out: str, schema: pa.Schema, expected: int) -> int:
    """Stream the batches into one Parquet file; returns the rows written.

    A :class:`clar_ray.console.Progress` counts the rows against ``expected``.
    """
    fs, inner = storage.resolve_filesystem(out)
    parent = posixpath.dirname(inner)
    if parent:
        fs.create_dir(parent, recursive=True)
    rows = 0
    try:
        with (pq.ParquetWriter(inner, schema, filesystem=fs) as writer,
              console.Progress("embed", expected, unit="clip") as bar):
            for table in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
                writer.write_table(table.cast(schema))
                rows += table.num_rows
                bar.update(table.num_rows)
    except BaseException:  # no half-written file that a re-run would have to --overwrite
        if fs.get_file_info(inner).type == pafs.FileType.File:
            fs.delete_file(inner)
        raise
    return rows


def _write_folder(dataset: Any, out: str) -> int:
    """Write a folder of Parquet shards with Ray Data (new files only); returns the rows."""
    import ray.data

    _clear_folder(out)
    fs, inner = storage.resolve_filesystem(out)
    fs.create_dir(inner, recursive=True)
    before = {i.base_name for i in fs.get_file_info(pafs.FileSelector(inner))}

    def new_shards() -> list[pafs.FileInfo]:
        return [i for i in fs.get_file_info(pafs.FileSelector(inner))
                if i.base_name not in before and i.base_name.endswith(".parquet")]

    try:
        dataset.write_parquet(inner, filesystem=fs, mode=ray.data.SaveMode.APPEND)
    except BaseException:  # remove the shards of a failed write, nothing else
        for info in new_shards():
            fs.delete_file(info.path)
        raise
    written = new_shards()
    storage.write_json(storage.join_uri(out, FOLDER_MARKER),
                       {"written_by": "clar-ray embed",
                        "files": sorted(i.base_name for i in written)})
    return sum(pq.read_metadata(info.path, filesystem=fs).num_rows for info in written)
