"""Audio augmentations of CLAR: numpy per clip and per batch (CPU), torch per batch (device).

* ``signal``: the seven augmentations of the paper as numpy functions
  ``(wave, rng, *, sample_rate, **params) -> wave``.
* ``presets``: the registry ``AUGMENTATIONS`` and the ``paper`` / ``clar-code`` presets
  (the differences from the official code are listed there).
* ``compose``: ``Augmenter``, the reproducible ordered composition over a batch, and the seed
  rule ``view_rng(seed, epoch, sample_id, view)``.
* ``batch``: ``BatchAugmenter`` (every augmentation as torch ops over a batch, meant for CUDA)
  and SLICER's ``kmix``; ``batch_vocoder``: its pitch shift and time stretch, a phase vocoder
  over the whole batch with one rate per row. Both are imported on first use, so CPU actors
  do not load torch through this package.
* ``placement``: ``place``, which augmentations run on the CPU actors and which on the
  training device (``augment.on_device``: false, true or auto, by cost).
* ``noise`` and ``vocoder``: the counter-based noise shared by numpy and torch, and librosa's
  phase-vocoder time stretch and pitch shift without librosa's per-frame loop.

Threads: the numpy path starts no thread pool (numpy's pocketfft and soxr run one thread,
librosa and numba are not used), so a CPU actor needs no setting for it; BLAS is not used
either, though ``OPENBLAS_NUM_THREADS=1`` keeps an idle pool out of each actor. The torch path
on CPU tensors runs on torch's intra-op pool: set ``torch.set_num_threads`` (or
``OMP_NUM_THREADS``) where that shares cores with other work.
"""

from __future__ import annotations

from typing import Any

from clar_ray.augment.compose import Augmenter, split_for_device, step_rng, view_rng
from clar_ray.augment.placement import ON_DEVICE_CHOICES, Placement, place
from clar_ray.augment.presets import (
    AUGMENTATIONS,
    CLAR_CODE_ORDER,
    PRESETS,
    AugmentationSpec,
    build_params,
    resolve_params,
)
from clar_ray.augment.signal import (
    fade,
    mixed_noise,
    pitch_shift,
    time_mask,
    time_shift,
    time_stretch,
    white_noise,
)

_LAZY = {"BatchAugmenter", "kmix", "kmix_partners", "kmix_embedding", "spherical_kmeans"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from clar_ray.augment import batch

        return getattr(batch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AUGMENTATIONS",
    "CLAR_CODE_ORDER",
    "ON_DEVICE_CHOICES",
    "PRESETS",
    "AugmentationSpec",
    "Augmenter",
    "BatchAugmenter",
    "Placement",
    "build_params",
    "fade",
    "kmix",
    "kmix_embedding",
    "kmix_partners",
    "mixed_noise",
    "pitch_shift",
    "place",
    "resolve_params",
    "spherical_kmeans",
    "split_for_device",
    "step_rng",
    "time_mask",
    "time_shift",
    "time_stretch",
    "view_rng",
    "white_noise",
]
