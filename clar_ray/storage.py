"""Local paths and cloud URIs through one door: pyarrow's filesystems.

Everything clar-ray reads or writes outside a worker's memory (prepared shards, manifests,
run directories, Tune experiments) goes through these helpers, so ``s3://bucket/x``,
``gs://bucket/x`` and ``/data/x`` work alike.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

import pyarrow.fs as pafs


def is_uri(path: str) -> bool:
    """True for ``scheme://...`` paths other than ``file://``."""
    return "://" in path and not path.startswith("file://")


def absolute(path: str) -> str:
    """A URI as it is; a local path (``file://`` or plain, ``~`` expanded) made absolute."""
    if is_uri(path):
        return path
    if path.startswith("file://"):
        path = path[len("file://"):]
    import os

    return os.path.abspath(os.path.expanduser(path))


def resolve_filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """Return the filesystem for ``path`` and the path inside it.

    Local paths are made absolute; URIs go to ``pyarrow.fs.FileSystem.from_uri``.
    """
    if is_uri(path) or path.startswith("file://"):
        fs, inner = pafs.FileSystem.from_uri(path)
        return fs, inner
    import os

    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))


def join_uri(root: str, *parts: str) -> str:
    """Join path parts with ``/`` (valid for local paths and inside every pyarrow filesystem)."""
    return posixpath.join(root, *parts)


def exists(path: str) -> bool:
    """True if ``path`` (file or directory) exists."""
    fs, inner = resolve_filesystem(path)
    return fs.get_file_info(inner).type != pafs.FileType.NotFound


def read_text(path: str) -> str:
    """Read a whole text file."""
    fs, inner = resolve_filesystem(path)
    with fs.open_input_stream(inner) as stream:
        return stream.read().decode("utf-8")


def write_text(path: str, text: str) -> None:
    """Write a whole text file, creating its directory."""
    fs, inner = resolve_filesystem(path)
    fs.create_dir(posixpath.dirname(inner), recursive=True)
    with fs.open_output_stream(inner) as stream:
        stream.write(text.encode("utf-8"))


def append_text(path: str, text: str) -> None:
    """Append to a text file (read-modify-write on object stores, which cannot append)."""
    fs, inner = resolve_filesystem(path)
    fs.create_dir(posixpath.dirname(inner), recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        with open(inner, "a", encoding="utf-8") as handle:
            handle.write(text)
        return
    old = read_text(path) if exists(path) else ""
    write_text(path, old + text)


def read_json(path: str) -> Any:
    """Read a JSON file."""
    return json.loads(read_text(path))


def write_json(path: str, value: Any) -> None:
    """Write ``value`` as indented JSON."""
    write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


def read_bytes(path: str) -> bytes:
    """Read a whole binary file."""
    fs, inner = resolve_filesystem(path)
    with fs.open_input_stream(inner) as stream:
        return bytes(stream.read())


def write_bytes(path: str, data: bytes) -> None:
    """Write a whole binary file, creating its directory."""
    fs, inner = resolve_filesystem(path)
    fs.create_dir(posixpath.dirname(inner), recursive=True)
    with fs.open_output_stream(inner) as stream:
        stream.write(data)


def upload_dir(local_dir: str, target: str) -> None:
    """Copy a local directory tree to ``target`` (a local path or URI)."""
    fs, inner = resolve_filesystem(target)
    fs.create_dir(inner, recursive=True)
    pafs.copy_files(local_dir, inner, destination_filesystem=fs)
