"""The manifest of a prepared dataset (``OUT/manifest.json``), and reading a prepared split.

A prepared dataset is a folder (local path or any URI that ``pyarrow.fs`` understands)::

    OUT/manifest.json
    OUT/<split>/*.parquet      # one row per clip, schema below

Row schema (``row_schema``):
    sample_id  int64    stable id in [0, 2**62): a hash of the path relative to the source root
    pcm        fixed_size_binary(2 * clip_samples)   16-bit PCM, mono, little-endian
    label      int64    index into ``Manifest.labels``
    split      string   split name (the folder name)
    path       string   source path relative to the source root (POSIX separators)

``pcm`` holds each clip's samples as raw bytes: Parquet stores a fixed-size binary column as
one value per row, where a list of int16 (format version 1 used Arrow's fixed-shape tensor)
carries repetition levels for every sample and decoded about 4x slower (29 ms against 7 ms
for a 246-clip FSDD shard on one core); every epoch of training reads every shard.
``pcm_to_arrow`` builds the column, ``pcm_from_arrow`` turns it (or a version-1 column) back
into int16 ``(N, clip_samples)``, and ``pcm_from_values`` does the same for the object array
of bytes that Ray Data's numpy batches hold.

Every reader calls ``Manifest.read``: a missing key, a wrong type, an unknown ``format_version`` or
inconsistent counts is an error that says what is wrong, instead of a guess.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from clar_ray.storage import resolve_filesystem

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "READABLE_FORMAT_VERSIONS",
    "ROW_COLUMNS",
    "Manifest",
    "ManifestError",
    "SplitInfo",
    "load_split",
    "pcm_from_arrow",
    "pcm_from_values",
    "pcm_to_arrow",
    "row_schema",
    "sample_id_for",
]

FORMAT_VERSION = 2
#: Versions this clar-ray reads: 1 stored ``pcm`` as Arrow's fixed-shape int16 tensor, 2 (the
#: one written) as fixed-size binary; nothing else differs.
READABLE_FORMAT_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"
ROW_COLUMNS = ("sample_id", "pcm", "label", "split", "path")
_SAMPLE_ID_BITS = 62


class ManifestError(ValueError):
    """A manifest (or the prepared folder it describes) is missing, malformed or inconsistent."""


def row_schema(clip_samples: int) -> pa.Schema:
    """The Arrow schema of a prepared row for clips of ``clip_samples`` samples."""
    if clip_samples <= 0:
        raise ValueError(f"clip_samples must be > 0, got {clip_samples}")
    return pa.schema(
        [
            pa.field("sample_id", pa.int64(), nullable=False),
            pa.field("pcm", pa.binary(2 * clip_samples), nullable=False),
            pa.field("label", pa.int64(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            pa.field("path", pa.string(), nullable=False),
        ]
    )


def sample_id_for(relative_path: str) -> int:
    """Stable, non-negative id in [0, 2**62) from a POSIX path relative to the source root."""
    digest = hashlib.blake2b(relative_path.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - _SAMPLE_ID_BITS)


@dataclass(frozen=True)
class SplitInfo:
    """One split of a prepared dataset.

    Attributes:
        rows: number of clips.
        files: shard paths relative to the dataset folder, e.g. ``train/x_000000-0.parquet``.
        class_counts: clips per label name (every label, zeros included).
    """

    rows: int
    files: tuple[str, ...]
    class_counts: Mapping[str, int]


_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "format_version": int,
    "recipe": str,
    "source": (str, type(None)),
    "options": dict,
    "sample_rate": int,
    "clip_samples": int,
    "labels": list,
    "splits": dict,
    "skipped": list,
    "created": str,
}


def _check_format_version(version: object) -> None:
    if version not in READABLE_FORMAT_VERSIONS:
        raise ManifestError(
            f"manifest format_version {version!r} is not supported "
            f"(this clar-ray reads versions {list(READABLE_FORMAT_VERSIONS)}); "
            f"re-run `clar-ray prepare`"
        )


@dataclass(frozen=True)
class Manifest:
    """What ``prepare_dataset`` wrote: audio format, labels, splits and what was skipped and why.

    Attributes:
        recipe: the recipe name (see ``clar_ray.data.recipes.RECIPES``).
        source: the source folder or URI as given (None for generated data).
        options: every effective recipe option (defaults included), as strings.
        sample_rate: Hz.
        clip_samples: samples per clip (``pcm`` length).
        labels: label names; a row's ``label`` indexes this tuple.
        splits: split name → ``SplitInfo``.
        skipped: ``{"path", "reason"}`` for every file (or folder) that was not used.
        created: UTC creation time, ISO 8601.
        silent: paths of kept clips that are all zeros (kept on purpose; see ``audio.py``).
        excluded: counts of files left out by design (e.g. a subset option), by reason.
        notes: free-form facts a reader should know, e.g. how the split was made.
        format_version: the manifest format; readers refuse others.
    """

    recipe: str
    source: str | None
    options: Mapping[str, str]
    sample_rate: int
    clip_samples: int
    labels: tuple[str, ...]
    splits: Mapping[str, SplitInfo]
    skipped: tuple[Mapping[str, str], ...]
    created: str
    silent: tuple[str, ...] = ()
    excluded: Mapping[str, int] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        self.validate()

    @property
    def clip_seconds(self) -> float:
        """Clip duration in seconds."""
        return self.clip_samples / self.sample_rate

    @property
    def num_rows(self) -> int:
        """Clips over all splits."""
        return sum(s.rows for s in self.splits.values())

    def validate(self) -> None:
        """Check types and internal consistency.

        Raises:
            ManifestError: naming the field and the bad value.
        """
        _check_format_version(self.format_version)
        if self.sample_rate <= 0:
            raise ManifestError(f"manifest sample_rate must be > 0, got {self.sample_rate}")
        if self.clip_samples <= 0:
            raise ManifestError(f"manifest clip_samples must be > 0, got {self.clip_samples}")
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise ManifestError(
                f"manifest labels must be non-empty and unique, got {list(self.labels)}"
            )
        if not self.splits:
            raise ManifestError("manifest has no splits")
        for name, info in self.splits.items():
            if not name or "/" in name:
                raise ManifestError(f"manifest split name {name!r} is not a folder name")
            if info.rows < 0:
                raise ManifestError(f"split {name!r}: rows must be >= 0, got {info.rows}")
            unknown = set(info.class_counts) - set(self.labels)
            if unknown:
                raise ManifestError(f"split {name!r}: class_counts has unknown labels {unknown}")
            if sum(info.class_counts.values()) != info.rows:
                raise ManifestError(
                    f"split {name!r}: class_counts sum to {sum(info.class_counts.values())}, "
                    f"rows is {info.rows}"
                )
            for f in info.files:
                if f.startswith("/") or "://" in f or ".." in f.split("/"):
                    raise ManifestError(f"split {name!r}: file {f!r} is not a relative path")
        for item in self.skipped:
            if set(item) != {"path", "reason"}:
                raise ManifestError(f"skipped entries need 'path' and 'reason', got {item!r}")

    def split(self, name: str) -> SplitInfo:
        """The ``SplitInfo`` of a split; ``KeyError`` naming the available splits."""
        if name not in self.splits:
            raise KeyError(f"split {name!r} not in the manifest; available: {sorted(self.splits)}")
        return self.splits[name]

    def shard_paths(self, root: str, split: str) -> list[str]:
        """Shard paths of a split joined to the dataset folder ``root`` (path or URI)."""
        base = root.rstrip("/")
        return [f"{base}/{f}" for f in self.split(split).files]

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict written to ``manifest.json``."""
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["options"] = dict(self.options)
        d["skipped"] = [dict(s) for s in self.skipped]
        d["silent"] = list(self.silent)
        d["excluded"] = dict(self.excluded)
        d["notes"] = dict(self.notes)
        d["splits"] = {
            name: {
                "rows": info.rows,
                "files": list(info.files),
                "class_counts": dict(info.class_counts),
            }
            for name, info in self.splits.items()
        }
        d["clip_seconds"] = self.clip_seconds
        d["schema"] = {
            "sample_id": "int64",
            "pcm": (f"int16[{self.clip_samples}]" if self.format_version == 1 else
                    f"int16le[{self.clip_samples}] as fixed_size_binary({2 * self.clip_samples})"),
            "label": "int64",
            "split": "string",
            "path": "string",
        }
        order = [
            "format_version",
            "recipe",
            "source",
            "options",
            "sample_rate",
            "clip_samples",
            "clip_seconds",
            "labels",
            "splits",
            "skipped",
            "silent",
            "excluded",
            "notes",
            "schema",
            "created",
        ]
        return {k: d[k] for k in order}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        """Build and validate from a parsed ``manifest.json``.

        Raises:
            ManifestError: a key is missing or has the wrong type, or the content is inconsistent.
        """
        if not isinstance(d, Mapping):
            raise ManifestError(f"manifest must be a JSON object, got {type(d).__name__}")
        if "format_version" in d:
            _check_format_version(d["format_version"])
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise ManifestError(f"manifest is missing keys {missing}")
        for key, kind in _REQUIRED.items():
            if not isinstance(d[key], kind) or isinstance(d[key], bool):
                raise ManifestError(
                    f"manifest key {key!r} has type {type(d[key]).__name__}, expected {kind}"
                )
        splits: dict[str, SplitInfo] = {}
        for name, s in d["splits"].items():
            if not isinstance(s, Mapping) or not {"rows", "files", "class_counts"} <= set(s):
                raise ManifestError(
                    f"split {name!r} needs 'rows', 'files' and 'class_counts', got {s!r:.200}"
                )
            splits[name] = SplitInfo(
                rows=int(s["rows"]),
                files=tuple(str(f) for f in s["files"]),
                class_counts={str(k): int(v) for k, v in s["class_counts"].items()},
            )
        return cls(
            recipe=d["recipe"],
            source=d["source"],
            options={str(k): str(v) for k, v in d["options"].items()},
            sample_rate=d["sample_rate"],
            clip_samples=d["clip_samples"],
            labels=tuple(str(x) for x in d["labels"]),
            splits=splits,
            skipped=tuple(_skip_record(s) for s in d["skipped"]),
            created=d["created"],
            silent=tuple(str(p) for p in d.get("silent", ())),
            excluded={str(k): int(v) for k, v in d.get("excluded", {}).items()},
            notes={str(k): str(v) for k, v in d.get("notes", {}).items()},
            format_version=d["format_version"],
        )

    @classmethod
    def read(cls, path: str) -> Manifest:
        """Read and validate ``manifest.json`` from a dataset folder (or the file itself).

        Args:
            path: the prepared folder, or its ``manifest.json``; local path or URI.

        Raises:
            ManifestError: no manifest there, invalid JSON, or invalid content.
        """
        fs, p = resolve_filesystem(path)
        if not p.endswith(".json"):
            p = posixpath.join(p, MANIFEST_NAME)
        info = fs.get_file_info(p)
        if info.type != pafs.FileType.File:
            raise ManifestError(
                f"no {MANIFEST_NAME} at {path!r}: not a prepared dataset (run `clar-ray prepare`)"
            )
        with fs.open_input_stream(p) as f:
            raw = f.read()
        try:
            d = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ManifestError(f"{p}: not valid JSON ({e})") from e
        return cls.from_dict(d)

    def write(self, path: str) -> str:
        """Write ``manifest.json`` into the dataset folder ``path``; returns the file's path."""
        fs, p = resolve_filesystem(path)
        if not p.endswith(".json"):
            fs.create_dir(p, recursive=True)
            p = posixpath.join(p, MANIFEST_NAME)
        data = json.dumps(self.to_dict(), indent=2).encode("utf-8")
        if isinstance(fs, pafs.LocalFileSystem):
            tmp = p + ".tmp"
            with fs.open_output_stream(tmp) as f:
                f.write(data)
            fs.move(tmp, p)  # atomic on one local filesystem
        else:
            with fs.open_output_stream(p) as f:
                f.write(data)
        return p


def _skip_record(item: Any) -> dict[str, str]:
    if not isinstance(item, Mapping) or set(item) != {"path", "reason"}:
        raise ManifestError(f"skipped entries need exactly 'path' and 'reason', got {item!r:.200}")
    return {"path": str(item["path"]), "reason": str(item["reason"])}


def load_split(
    path: str, split: str, columns: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Read one prepared split into memory with pyarrow (no Ray).

    Args:
        path: the prepared dataset folder (local path or URI).
        split: split name, e.g. ``"train"``.
        columns: columns to read (default all of ``ROW_COLUMNS``).

    Returns:
        Column name → array: ``pcm`` int16 (N, clip_samples); ``sample_id``/``label`` int64 (N,);
        ``split``/``path`` object arrays of str (N,).

    Raises:
        ManifestError: invalid manifest, or the shards disagree with it.
        KeyError: unknown split or column.
    """
    manifest = Manifest.read(path)
    info = manifest.split(split)
    cols = list(ROW_COLUMNS if columns is None else columns)
    unknown = [c for c in cols if c not in ROW_COLUMNS]
    if unknown:
        raise KeyError(f"unknown columns {unknown}; available: {list(ROW_COLUMNS)}")
    fs, root = resolve_filesystem(path)
    if root.endswith(".json"):
        root = posixpath.dirname(root)
    files = [posixpath.join(root, f) for f in info.files]
    tables = [pq.read_table(f, columns=cols, filesystem=fs) for f in files]
    if tables:
        table = pa.concat_tables(tables)
    else:
        table = row_schema(manifest.clip_samples).empty_table().select(cols)
    if table.num_rows != info.rows:
        raise ManifestError(
            f"split {split!r}: shards hold {table.num_rows} rows, the manifest says {info.rows}"
        )
    out: dict[str, np.ndarray] = {}
    for c in cols:
        column = table[c]
        if c == "pcm":
            out[c] = pcm_from_arrow(column, manifest.clip_samples).copy()
        elif c in ("split", "path"):
            out[c] = np.asarray(column.to_pylist(), dtype=object)
        else:
            out[c] = column.to_numpy().astype(np.int64, copy=False)
    return out


def pcm_to_arrow(pcm: np.ndarray) -> pa.FixedSizeBinaryArray:
    """int16 (N, T) clips → the ``pcm`` column: each row's T samples as 2T little-endian bytes."""
    pcm = np.ascontiguousarray(pcm, dtype="<i2")
    if pcm.ndim != 2 or pcm.shape[1] == 0:
        raise ValueError(f"pcm must have shape (N, T) with T > 0, got {pcm.shape}")
    n, samples = pcm.shape
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(2 * samples), n,
                                                [None, pa.py_buffer(pcm)])


def pcm_from_arrow(column: pa.Array | pa.ChunkedArray,
                   clip_samples: int | None = None) -> np.ndarray:
    """A ``pcm`` column → int16 (N, clip_samples).

    Reads format version 2 (fixed-size binary, without a copy: the result may be read-only)
    and version 1 (Arrow's fixed-shape tensor, or any list storage of it).

    Args:
        column: The column, chunked or not.
        clip_samples: Samples per clip the manifest promises; None takes them from the column.

    Raises:
        ManifestError: When the column holds nulls or another number of samples per clip.
    """
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if isinstance(arr, pa.ExtensionArray):
        arr = arr.storage
    n = len(arr)
    if arr.null_count:
        raise ManifestError(f"pcm column holds {arr.null_count} null clip(s)")
    if pa.types.is_fixed_size_binary(arr.type):
        width = arr.type.byte_width
        samples = width // 2
        if n == 0:
            values = np.zeros((0, samples), dtype="<i2")
        else:
            values = np.frombuffer(arr.buffers()[1], dtype="<i2", count=n * samples,
                                   offset=arr.offset * width).reshape(n, samples)
    else:  # version 1: a fixed-size list of int16 per row
        flat = arr.flatten().to_numpy(zero_copy_only=False)
        samples = flat.size // n if n else (clip_samples or 0)
        if n and flat.size != n * samples:
            raise ManifestError(f"pcm column holds {flat.size} samples for {n} rows")
        values = flat.reshape(n, samples)
    if clip_samples is not None and samples != clip_samples:
        raise ManifestError(
            f"pcm column holds {samples} samples per clip; expected clip_samples={clip_samples}"
        )
    return values.astype(np.int16, copy=False)


def pcm_from_values(values: np.ndarray, clip_samples: int | None = None) -> np.ndarray:
    """Ray Data's numpy batch of a ``pcm`` column → int16 (B, clip_samples).

    Version 2 columns arrive as an object array of bytes, version 1 as int16 (B, T) already.

    Raises:
        ManifestError: When clips differ in length or hold another number of samples.
    """
    if values.dtype != object:
        out = np.asarray(values, dtype=np.int16)
    elif not len(values):
        out = np.zeros((0, clip_samples or 0), dtype=np.int16)
    else:
        widths = {len(value) for value in values}
        if len(widths) != 1 or widths == {0} or min(widths) % 2:
            raise ManifestError(f"pcm batch holds clips of {sorted(widths)} bytes")
        flat = np.frombuffer(b"".join(values), dtype="<i2")
        out = flat.reshape(len(values), -1).astype(np.int16, copy=False)
    if clip_samples is not None and out.shape[1:] != (clip_samples,):
        raise ManifestError(f"pcm batch has shape {out.shape}; expected (B, {clip_samples})")
    return out
