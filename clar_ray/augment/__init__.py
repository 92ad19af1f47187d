"""Audio augmentations of CLAR: numpy per clip and per batch (CPU), torch per batch (device).

Layers, lowest first (a module imports only those above it in this list):

* ``spec``: what an augmentation is (:class:`AugmentationSpec`) and the pieces all share;
  ``noise`` / ``batch_noise`` and ``vocoder`` / ``batch_vocoder``: the counter-based noise and
  the phase vocoder, numpy and torch.
* ``ops``: the seven augmentations of the paper, one module each (parameters, draw, numpy and
  torch transforms, ``clar-code`` values), each exporting its per-clip function
  ``(wave, rng, *, sample_rate, **params) -> wave``.
* ``presets``: the registry ``AUGMENTATIONS``, the ``paper`` / ``clar-code`` presets and the
  validation of a job's parameters; ``seeding``: the seed rule ``step_rng(seed, epoch,
  sample_id, view, step)``, the batch draws and the shared argument checks.
* ``placement``: ``place``, which augmentations run on the CPU actors and which on the
  training device (``augment.on_device``: false, true or auto, by cost), the one place that
  cuts a sequence.
* ``compose``: ``Augmenter``, the ordered composition over a batch in numpy; ``batch``:
  ``BatchAugmenter``, the same in torch (meant for CUDA). ``batch`` and the torch transforms
  import torch on first use, so CPU actors do not load torch through this package.

Threads: the numpy path starts no thread pool (``scipy.fft`` runs one worker unless told
otherwise, soxr one thread, librosa and numba are not used), so a CPU actor needs no setting
for it; BLAS is not used either, though ``OPENBLAS_NUM_THREADS=1`` keeps an idle pool out of
each actor. The torch path on CPU tensors runs on torch's intra-op pool: set
``torch.set_num_threads`` (or ``OMP_NUM_THREADS``) where that shares cores with other work.
"""

from __future__ import annotations

from typing import Any

from clar_ray.augment.compose import Augmenter
from clar_ray.augment.ops.fade import fade
from clar_ray.augment.ops.mixed_noise import mixed_noise
from clar_ray.augment.ops.pitch_shift import pitch_shift
from clar_ray.augment.ops.time_mask import time_mask
from clar_ray.augment.ops.time_shift import time_shift
from clar_ray.augment.ops.time_stretch import time_stretch
from clar_ray.augment.ops.white_noise import white_noise
from clar_ray.augment.placement import ON_DEVICE_CHOICES, Placement, place, split_for_device
from clar_ray.augment.presets import (
    AUGMENTATIONS,
    CLAR_CODE_ORDER,
    PRESETS,
    build_params,
    resolve_params,
)
from clar_ray.augment.seeding import step_rng, view_rng
from clar_ray.augment.spec import AugmentationSpec


def __getattr__(name: str) -> Any:
    if name == "BatchAugmenter":  # imports torch: only when asked for
        from clar_ray.augment.batch import BatchAugmenter

        return BatchAugmenter
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
    "mixed_noise",
    "pitch_shift",
    "place",
    "resolve_params",
    "split_for_device",
    "step_rng",
    "time_mask",
    "time_shift",
    "time_stretch",
    "view_rng",
    "white_noise",
]
