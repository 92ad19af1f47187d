"""Dataset recipes: which files make a dataset, their labels and splits.

A recipe lists a source (a local folder or any URI ``pyarrow.fs`` understands) on the driver and
returns a ``Listing``: entries ``(relative path, label, split)``, the label order, and every file or
folder it could not use with the reason. Decoding happens later, in ``prepare.py``.

Recipes (``RECIPES``; each declares its options, with defaults and help text), one module each:
    folder          CLASS/... or SPLIT/CLASS/... folders; else a seeded class-stratified split
    fsdd            Free Spoken Digit Dataset, official split (takes 0-4 are test)
    philharmonia    Philharmonia orchestral notes: instrument, pitch or pitch class; seeded split
    speechcommands  Speech Commands v0.02 (sc10 digits or all 35 words), official lists
    esc50           ESC-50 / ESC-10, folds 1-4 train, fold 5 test
    nsynth          NSynth: instrument family or pitch, official train/valid/test folders
    synthetic       generated sounds (no source); see ``clar_ray/data/synthetic.py``

What they share is :mod:`~clar_ray.data.recipes.base` (types, options, walking a source) and
:mod:`~clar_ray.data.recipes.splits` (seeded splits). A new recipe is one module that defines
``RECIPE = Recipe(name, help, options, source, lister)``, added to ``RECIPES`` below.

Options are strings (as they come from the command line) and every effective value, defaults
included, is recorded in the manifest. Files a recipe leaves out on purpose (e.g. words outside
``subset=sc10``) are counted in ``Listing.excluded``; files it wanted but cannot use are listed in
``Listing.skipped``.
"""

from __future__ import annotations

from collections.abc import Mapping

from clar_ray.data.recipes import (
    esc50,
    folder,
    fsdd,
    nsynth,
    philharmonia,
    speechcommands,
    synthetic,
)
from clar_ray.data.recipes.base import (
    Entry,
    Listing,
    Option,
    Recipe,
    Source,
    resolve_options,
    walk_files,
)
from clar_ray.data.recipes.speechcommands import SPEECH_COMMANDS_URL, download_speech_commands
from clar_ray.data.recipes.splits import grouped_split, stratified_split

__all__ = [
    "RECIPES",
    "SPEECH_COMMANDS_URL",
    "Entry",
    "Listing",
    "Option",
    "Recipe",
    "Source",
    "download_speech_commands",
    "get_recipe",
    "grouped_split",
    "list_recipe",
    "resolve_options",
    "stratified_split",
    "walk_files",
]

#: Every recipe by name.
RECIPES: dict[str, Recipe] = {
    module.RECIPE.name: module.RECIPE
    for module in (folder, fsdd, philharmonia, speechcommands, esc50, nsynth, synthetic)
}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; ``ValueError`` naming the available ones."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; available: {sorted(RECIPES)}")
    return RECIPES[name]


def list_recipe(name: str, source: str | None, options: Mapping[str, object] | None) -> Listing:
    """Run a recipe's listing on the driver.

    Args:
        name: a key of ``RECIPES``.
        source: the dataset folder (local path or URI); None for recipes that need none.
        options: recipe options (unknown keys are an error).

    Raises:
        ValueError: unknown recipe/option, bad option value, or a source where none is allowed.
        FileNotFoundError: a required source is missing or lacks the recipe's layout.
    """
    recipe = get_recipe(name)
    effective = resolve_options(recipe, options)
    if recipe.source == "none" and source:
        raise ValueError(f"recipe {name!r} generates its data and takes no source, got {source!r}")
    if recipe.source == "required" and not source:
        raise ValueError(f"recipe {name!r} needs a source folder (path or URI)")
    return recipe.lister(Source.open(source) if source else None, effective)
