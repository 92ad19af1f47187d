"""Local paths and URIs through one door: ``storage.absolute`` and local round trips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clar_ray import storage


def test_absolute_keeps_uris_and_makes_local_paths_absolute(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert storage.absolute("s3://bucket/runs/x") == "s3://bucket/runs/x"
    assert storage.absolute("gs://bucket") == "gs://bucket"
    assert storage.absolute("runs/x") == str(tmp_path / "runs" / "x")
    assert storage.absolute("file:///data/fsdd") == "/data/fsdd"
    assert storage.absolute("~/data") == os.path.join(os.path.expanduser("~"), "data")


def test_file_uri_and_plain_path_reach_the_same_file(tmp_path: Path) -> None:
    storage.write_text(f"file://{tmp_path}/a/notes.txt", "one\n")
    storage.append_text(str(tmp_path / "a" / "notes.txt"), "two\n")
    assert (tmp_path / "a" / "notes.txt").read_text() == "one\ntwo\n"
    assert storage.read_text(storage.absolute(f"file://{tmp_path}/a/notes.txt")) == "one\ntwo\n"
