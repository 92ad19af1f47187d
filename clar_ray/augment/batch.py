"""Batched torch augmentations for the training device: :class:`BatchAugmenter`.

:class:`BatchAugmenter` runs any augmentation that has a torch version (its spec's
``torch_function``; today all seven) as tensor ops over a batch with per-example parameters:
the cheap ones elementwise, pitch shift and time stretch by the batched phase vocoder of
:mod:`clar_ray.augment.batch_vocoder`. It is meant for CUDA, where it takes a job's sequence,
or its tail, off the CPU actors (:mod:`clar_ray.augment.placement`); it also runs on CPU
tensors (the tests use that), but there the numpy ``Augmenter`` costs less CPU.
Its parameters are drawn on the CPU by the same per-row rule as
:class:`clar_ray.augment.compose.Augmenter` (:func:`clar_ray.augment.seeding.draw_step`) and its
noise comes from the same counter-based integer hash (:mod:`clar_ray.augment.batch_noise`), so a
clip's view does not depend on the batch it is in or on the device, and equals the numpy result
to float32 rounding (~1e-7; a batched CUDA FFT, used for pink and brown noise, may also round
differently with the batch size).

Legend: B examples in a batch, T samples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from clar_ray.augment.placement import split_for_device
from clar_ray.augment.presets import AUGMENTATIONS, resolve_sequence
from clar_ray.augment.seeding import check_augmenter_args, check_call_args, draw_step
from clar_ray.augment.spec import Draws


def _to_tensors(draws: Draws, device: torch.device) -> dict[str, Tensor]:
    out = {}
    for key, values in draws.items():
        dtype = (torch.bool if values.dtype == np.bool_ else
                 torch.int64 if np.issubdtype(values.dtype, np.integer) else torch.float32)
        out[key] = torch.as_tensor(values).to(device=device, dtype=dtype)
    return out


class BatchAugmenter:
    """Apply a sequence of augmentations to a batch of tensors (meant for CUDA).

    The same seed rule as :class:`clar_ray.augment.compose.Augmenter`: row ``i`` of a batch
    gets parameters from ``step_rng(seed, epoch, sample_ids[i], view, first_step + k)``,
    drawn on the host by the same code, so a view's parameters do not depend on the device.

    Args:
        sequence: Augmentation names (every one has a batched version); empty is the
            identity.
        sample_rate: Samples per second.
        preset: ``paper`` or ``clar-code``.
        params: Per-augmentation overrides, as for ``Augmenter``.
        seed: The run's seed.
        first_step: Index of ``sequence[0]`` in the job's full sequence; use
            :meth:`device_part` to get it right for the tail of a sequence.

    Raises:
        ValueError: A name without a batched version, or an unknown name, preset or
            parameter.
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
        self._steps = resolve_sequence(sequence, preset, params)
        batched = [name for name, spec in AUGMENTATIONS.items()
                   if spec.torch_function is not None]
        for spec, _ in self._steps:
            if spec.torch_function is None:
                raise ValueError(
                    f"augmentation {spec.name!r} has no batched torch version (it runs per clip "
                    f"on CPU: use Augmenter, or split_for_device); batched: {batched}")
        self._functions = [spec.torch_function for spec, _ in self._steps]
        self.sequence = tuple(sequence)
        self.sample_rate = int(sample_rate)
        self.seed = int(seed)
        self.first_step = int(first_step)

    @classmethod
    def device_part(
        cls,
        sequence: Sequence[str],
        *,
        sample_rate: int,
        preset: str = "paper",
        params: Mapping[str, Mapping[str, object]] | None = None,
        seed: int = 0,
    ) -> BatchAugmenter:
        """The augmenter of the device suffix of a job's full ``sequence``.

        Run ``Augmenter(cpu_part, ...)`` on CPU first, with ``split_for_device(sequence)``.
        """
        cpu_part, device_part = split_for_device(sequence)
        return cls(device_part, sample_rate=sample_rate, preset=preset, params=params,
                   seed=seed, first_step=len(cpu_part))

    def __repr__(self) -> str:
        return (f"BatchAugmenter({list(self.sequence)}, sample_rate={self.sample_rate}, "
                f"seed={self.seed}, first_step={self.first_step})")

    def __call__(self, waves: Tensor, sample_ids: Tensor, *, epoch: int, view: int) -> Tensor:
        """Augment a batch on its device.

        Args:
            waves: (B, T) floating tensor on any device (not modified).
            sample_ids: (B,) non-negative integer ids; keep them on the CPU to avoid a
                device sync.
            epoch: Epoch number.
            view: View index.

        Returns:
            (B, T) tensor of ``waves``' dtype and device.
        """
        if waves.ndim != 2 or not waves.is_floating_point():
            raise ValueError(f"waves must be a floating (B, T) tensor, got {waves.dtype} "
                             f"{tuple(waves.shape)}")
        ids = check_call_args(torch.as_tensor(sample_ids).detach().cpu().numpy(),
                              waves.shape[0], seed=self.seed, epoch=epoch, view=view)
        if waves.shape[0] == 0 or not self._steps:
            return waves.clone()
        out = waves.to(torch.float32)
        for k, ((spec, params), function) in enumerate(zip(self._steps, self._functions)):
            draws = draw_step(spec, params, seed=self.seed, epoch=epoch, view=view,
                              step=self.first_step + k, sample_ids=ids,
                              n_samples=waves.shape[1], sample_rate=self.sample_rate)
            assert function is not None
            on = torch.device("cpu") if spec.host_draws else waves.device
            out = function(out, _to_tensors(draws, on))
        return out.to(waves.dtype)


__all__ = ["BatchAugmenter"]
