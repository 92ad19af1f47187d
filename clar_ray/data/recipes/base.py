"""What every dataset recipe shares: its types, its options, its source folder and walking it.

A recipe lists a source (a local folder or any URI ``pyarrow.fs`` understands) on the driver and
returns a :class:`Listing`: entries ``(relative path, label, split)``, the label order, and every
file or folder it could not use with the reason. Decoding happens later, in ``prepare.py``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import pyarrow.fs as pafs

from clar_ray.data.audio import AUDIO_EXTENSIONS
from clar_ray.data.synthetic import SyntheticSpec
from clar_ray.storage import resolve_filesystem

__all__ = ["Entry", "Lister", "Listing", "Option", "Recipe", "Source", "is_audio", "not_audio",
           "oneline", "option_number", "resolve_options", "walk_files"]

_MAX_DEPTH = 32


@dataclass(frozen=True)
class Option:
    """One recipe option: name, default (a string, as on the command line), help, allowed values."""

    name: str
    default: str
    help: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Entry:
    """One file of a dataset: path relative to the listing root (POSIX), label name, split name."""

    path: str
    label: str
    split: str


@dataclass(frozen=True)
class Listing:
    """What a recipe found.

    Attributes:
        root: the folder entries are relative to (absolute local path or URI); "" if generated.
        entries: the files to decode, sorted by path.
        labels: label names in index order.
        skipped: ``{"path", "reason"}`` for files or folders the recipe could not use.
        excluded: files left out by design, counted by reason.
        notes: facts for the manifest, e.g. how the split was made.
        synthetic: set for generated data (then ``root`` is "" and paths are virtual).
    """

    root: str
    entries: tuple[Entry, ...]
    labels: tuple[str, ...]
    skipped: tuple[dict[str, str], ...] = ()
    excluded: Mapping[str, int] = field(default_factory=dict)
    notes: Mapping[str, str] = field(default_factory=dict)
    synthetic: SyntheticSpec | None = None


Lister = Callable[["Source | None", Mapping[str, str]], Listing]


@dataclass(frozen=True)
class Recipe:
    """A dataset recipe.

    Attributes:
        name: registry key.
        help: one line for ``clar-ray prepare --help``.
        options: the options it accepts.
        source: whether a source folder is "required", "optional" (downloads) or "none".
        lister: builds the ``Listing``; called by ``list_recipe``.
    """

    name: str
    help: str
    options: tuple[Option, ...]
    source: Literal["required", "optional", "none"]
    lister: Lister


# ---------------------------------------------------------------- options and sources


# ---------------------------------------------------------------- options and sources


def resolve_options(recipe: Recipe, options: Mapping[str, object] | None) -> dict[str, str]:
    """Every option of a recipe with its effective value (defaults filled in), as strings.

    Raises:
        ValueError: an unknown option (naming the allowed ones) or a value not among its choices.
    """
    allowed = {o.name: o for o in recipe.options}
    given = dict(options or {})
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        names = ", ".join(f"{o.name} (default {o.default!r})" for o in recipe.options) or "none"
        raise ValueError(
            f"unknown option(s) {unknown} for recipe {recipe.name!r}; allowed: {names}"
        )
    out: dict[str, str] = {}
    for name, opt in allowed.items():
        value = str(given.get(name, opt.default)).strip()
        if opt.choices and value not in opt.choices:
            raise ValueError(
                f"option {name}={value!r} for recipe {recipe.name!r}; allowed: {list(opt.choices)}"
            )
        out[name] = value
    return out


def option_number(options: Mapping[str, str], name: str, kind: type, lo: float,
                  hi: float) -> float:
    """Option ``name`` read as ``kind`` (int or float) and checked to lie in ``[lo, hi]``.

    Raises:
        ValueError: naming the option, what it must be and the value given.
    """
    raw = options[name]
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"option {name} must be a {kind.__name__}, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ValueError(f"option {name} must be in [{lo}, {hi}], got {raw!r}")
    return value


@dataclass(frozen=True)
class Source:
    """A folder on some filesystem and the URI that names it for workers."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @classmethod
    def open(cls, uri: str) -> Source:
        """The folder at ``uri``; FileNotFoundError or NotADirectoryError when it is none."""
        fs, path = resolve_filesystem(uri)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"source {uri!r} does not exist")
        if info.type != pafs.FileType.Directory:
            raise NotADirectoryError(f"source {uri!r} is not a folder")
        return cls(fs, path, path if isinstance(fs, pafs.LocalFileSystem) else uri.rstrip("/"))

    def child(self, rel: str) -> Source:
        """The subfolder ``rel`` (a relative POSIX path)."""
        base, query = (self.uri.split("?", 1) + [""])[:2]
        uri = f"{base.rstrip('/')}/{rel}" + (f"?{query}" if query else "")
        return Source(self.fs, posixpath.join(self.path, rel), uri)

    def kind(self, rel: str) -> pafs.FileType:
        """Whether ``rel`` is a file, a folder or missing."""
        return self.fs.get_file_info(posixpath.join(self.path, rel)).type

    def read_text(self, rel: str) -> str:
        """The UTF-8 text of the file ``rel``."""
        with self.fs.open_input_stream(posixpath.join(self.path, rel)) as f:
            return f.read().decode("utf-8")


def _list_dir(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    """One folder's entries (a seam for tests that simulate unreadable folders)."""
    return fs.get_file_info(pafs.FileSelector(path, recursive=False))


def walk_files(source: Source) -> tuple[list[tuple[str, int]], list[dict[str, str]]]:
    """All files under a source folder, one folder at a time so one bad folder costs only itself.

    Returns:
        ``[(relative POSIX path, size in bytes)]`` sorted by path, and ``{"path", "reason"}`` for
        folders that could not be listed and entries that are neither file nor folder.
    """
    files: list[tuple[str, int]] = []
    skipped: list[dict[str, str]] = []
    stack: list[tuple[str, int]] = [("", 0)]
    while stack:
        rel, depth = stack.pop()
        try:
            infos = _list_dir(source.fs, posixpath.join(source.path, rel) if rel else source.path)
        except OSError as e:
            if not rel:
                raise
            skipped.append({"path": rel + "/", "reason": f"unreadable folder: {oneline(e)}"})
            continue
        for info in infos:
            child = f"{rel}/{info.base_name}" if rel else info.base_name
            if info.type == pafs.FileType.Directory:
                if depth + 1 > _MAX_DEPTH:
                    skipped.append({"path": child + "/", "reason": "folder nested too deep"})
                else:
                    stack.append((child, depth + 1))
            elif info.type == pafs.FileType.File:
                files.append((child, int(info.size or 0)))
            else:
                skipped.append({"path": child, "reason": "not a regular file (broken link?)"})
    files.sort()
    return files, sorted(skipped, key=lambda s: s["path"])


def is_audio(rel: str) -> bool:
    """True for a path with an audio file extension (:data:`AUDIO_EXTENSIONS`)."""
    return posixpath.splitext(rel)[1].lower() in AUDIO_EXTENSIONS


def not_audio(rel: str) -> dict[str, str]:
    """The skip record of a file that is not audio, naming its extension."""
    ext = posixpath.splitext(rel)[1] or "(none)"
    return {"path": rel, "reason": f"not an audio file extension: {ext}"}


def oneline(e: BaseException) -> str:
    """An error's message on one line (its type when it has none)."""
    return " ".join(str(e).split()) or type(e).__name__
