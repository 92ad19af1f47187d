"""Data preparation: recipes → decoded 16-bit clips in Parquet shards + ``manifest.json``.

Public entry points:
    prepare_dataset, format_summary   (prepare.py)
    Manifest, load_split              (manifest.py)
    RECIPES                           (recipes/, one module per dataset)
"""

from clar_ray.data.manifest import Manifest, ManifestError, SplitInfo, load_split
from clar_ray.data.prepare import PrepareError, format_summary, prepare_dataset
from clar_ray.data.recipes import RECIPES

__all__ = [
    "RECIPES",
    "Manifest",
    "ManifestError",
    "PrepareError",
    "SplitInfo",
    "format_summary",
    "load_split",
    "prepare_dataset",
]
