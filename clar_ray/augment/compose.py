"""Apply an ordered sequence of augmentations to a batch on the CPU, reproducibly.

:class:`Augmenter` runs a job's sequence with numpy. Every row's parameters come from the seed
rule of :mod:`clar_ray.augment.seeding` (a generator per clip, view and step), so a view is a
pure function of (seed, epoch, sample id, view) whatever the batch. Within a step the cheap
augmentations transform the whole batch with array ops and the phase-vocoder ones go row by
row (the torch versions, :class:`clar_ray.augment.batch.BatchAugmenter`, do the whole batch at
once).

Example::

    augmenter = Augmenter(["pitch_shift", "fade", "white_noise"], sample_rate=16000, seed=7)
    view_a = augmenter(waves, sample_ids, epoch=3, view=0)  # (B, T) float32
    view_b = augmenter(waves, sample_ids, epoch=3, view=1)

Legend: B clips in a batch, T samples per clip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from clar_ray.augment.placement import split_for_device
from clar_ray.augment.presets import resolve_sequence
from clar_ray.augment.seeding import check_augmenter_args, check_call_args, draw_step

if TYPE_CHECKING:  # pragma: no cover
    from clar_ray.augment.batch import BatchAugmenter


class Augmenter:
    """Apply an ordered augmentation sequence to batches of clips on CPU (numpy).

    Args:
        sequence: Augmentation names (keys of ``AUGMENTATIONS``), applied in order; empty is
            the identity.
        sample_rate: Samples per second of the clips.
        preset: ``paper`` or ``clar-code``.
        params: Per-augmentation overrides, e.g. ``{"pitch_shift": {"p": 0.5}}``.
        seed: The run's seed.
        first_step: Index of ``sequence[0]`` in the job's full sequence (non-zero only for a
            part of a split sequence; see :meth:`split`).

    Raises:
        ValueError: Unknown names, preset or parameters, bad values, sample_rate <= 0.
    """

    def __init__(
        self,
        sequence: Sequence[str],
        *,
        sample_rate: int,
        preset: str = "paper",
        params: Mapping[str, Mapping[str, object]] | None = None,
        seed: int = 0,
        first_step: int = 0,
    ) -> None:
        check_augmenter_args(sample_rate=sample_rate, seed=seed, first_step=first_step)
        self.sequence = tuple(sequence)
        self.sample_rate = int(sample_rate)
        self.preset = preset
        self.params = {name: dict(values) for name, values in (params or {}).items()}
        self.seed = int(seed)
        self.first_step = int(first_step)
        self._steps = resolve_sequence(self.sequence, preset, self.params)

    def __repr__(self) -> str:
        return (f"Augmenter({list(self.sequence)}, sample_rate={self.sample_rate}, "
                f"preset={self.preset!r}, seed={self.seed}, first_step={self.first_step})")

    def __call__(self, waves: np.ndarray, sample_ids: np.ndarray, *, epoch: int,
                 view: int) -> np.ndarray:
        """Augment a batch.

        Args:
            waves: (B, T) clips (any float dtype; never modified).
            sample_ids: (B,) non-negative int64 ids, one per clip.
            epoch: Epoch number (>= 0).
            view: View index (0 and 1 for the two views of a pair).

        Returns:
            (B, T) float32, a new array.
        """
        out = np.asarray(waves, dtype=np.float32)
        if out.ndim != 2:
            raise ValueError(f"waves must have shape (B, T), got {out.shape}")
        ids = check_call_args(sample_ids, out.shape[0], seed=self.seed, epoch=epoch, view=view)
        if out.shape[0] == 0 or not self._steps:
            return out.copy()
        # No copy of the input here: every step's apply returns a new array.
        for k, (spec, params) in enumerate(self._steps):
            draws = draw_step(spec, params, seed=self.seed, epoch=epoch, view=view,
                              step=self.first_step + k, sample_ids=ids,
                              n_samples=out.shape[1], sample_rate=self.sample_rate)
            out = spec.apply(out, draws, self.sample_rate)
        return out

    def split(self) -> tuple[Augmenter, BatchAugmenter]:
        """Split into a CPU part and a training-device part.

        The cut is :func:`clar_ray.augment.placement.split_for_device`'s.

        Returns:
            ``(cpu, device)``: applying ``cpu`` then ``device`` gives what this augmenter
            gives (up to float rounding), since the device part keeps its step indices.
        """
        from clar_ray.augment.batch import BatchAugmenter

        cpu_part, device_part = split_for_device(self.sequence)
        kwargs: dict[str, Any] = {"sample_rate": self.sample_rate, "preset": self.preset,
                                  "params": self.params, "seed": self.seed}
        cpu = Augmenter(cpu_part, first_step=self.first_step, **kwargs)
        device = BatchAugmenter(device_part, first_step=self.first_step + len(cpu_part),
                                **kwargs)
        return cpu, device
