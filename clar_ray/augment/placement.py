"""Where each augmentation of a job runs: on the CPU actors or on the training device.

The CPU actors run a prefix of the sequence and the training device the rest, order kept
(the device sees a batch only after the actors are done with it), so a placement is one cut.
``augment.on_device`` chooses it:

* ``false``: everything on the actors.
* ``true``: the longest suffix whose augmentations all have a batched torch version
  (:func:`split_for_device`): now every augmentation has one, so the whole sequence runs on
  the device.
* ``auto``: by cost. On a GPU the device runs the sequence from its first phase-vocoder
  augmentation (pitch shift, time stretch) on, the cheap prefix stays on the actors; without
  a GPU, or with no phase-vocoder augmentation, everything stays on the actors.

Why ``auto`` cuts there (``benchmarks/README.md`` has the measurements): pitch shift and time
stretch cost a CPU core 1.4 and 0.9 ms a view, the other five 0.02-0.6 ms each, so a GPU
training thousands of views per second needs more than 2 CPU cores per 1,000 views/s for the
phase vocoder alone (``cluster.yaml``'s 32-core augmentation nodes), while batched on the
GPU it is a few large FFTs and elementwise ops per batch. The cheap augmentations keep the
actors' pool busy for little and leave the GPU to the model; the stream's cost there is
moving the views, which the device placement does not remove. On CPU training the actors
keep it: they run beside training in processes of their own, and the batched path on the
trainer's 2 threads delivers 0.66-0.75 of what two numpy actors do on 2 cores.

The run's ``plan.json`` records the placement (:meth:`Placement.describe`), with what the
actors' part costs: :data:`CPU_MS_PER_VIEW` summed, and the CPU cores it takes per 1,000
views/s, to set against the cluster's actors (:func:`clar_ray.resources.plan_resources`).

This module is the one place that cuts a sequence: ``Augmenter.split`` and
``BatchAugmenter.device_part`` ask :func:`split_for_device`, which is the ``true`` rule, and
training builds its device augmenter from :attr:`Placement.device_first_step`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

from clar_ray.augment.presets import AUGMENTATIONS, get_spec

#: The named value of ``augment.on_device`` beside false and true: its type in
#: :mod:`clar_ray.config` is ``bool | OnDeviceMode``.
OnDeviceMode = Literal["auto"]
#: The values of ``augment.on_device``.
ON_DEVICE_CHOICES: tuple[bool | str, ...] = (False, True, *get_args(OnDeviceMode))
#: CPU time per view of each augmentation on the actors (``AugmentationSpec.cpu_ms_per_view``:
#: numpy, one core, a 1-s clip at 16 kHz; relative costs). Scale with the clip's samples.
CPU_MS_PER_VIEW = {name: spec.cpu_ms_per_view for name, spec in AUGMENTATIONS.items()}


@dataclasses.dataclass(frozen=True)
class Placement:
    """A job's sequence cut into what the CPU actors and the training device run.

    Attributes:
        actors: The prefix the CPU augmentation actors run.
        device: The suffix the training device runs (its first step index is
            ``len(actors)``).
        rule: Why the cut is there, in words.
    """

    actors: tuple[str, ...]
    device: tuple[str, ...]
    rule: str

    @property
    def device_first_step(self) -> int:
        """Index of ``device[0]`` in the job's sequence (its ``step`` in the seed rule)."""
        return len(self.actors)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Placement:
        """The placement in a :meth:`describe` record (``plan.json``, the training loop's)."""
        return cls(tuple(record["actors"]), tuple(record["device"]), str(record["rule"]))

    @property
    def actor_ms_per_view(self) -> float:
        """Estimated CPU-ms per view of the actors' part (1-s clip at 16 kHz)."""
        return sum(CPU_MS_PER_VIEW[name] for name in self.actors)

    def describe(self) -> dict[str, object]:
        """The record of ``plan.json``: both parts, the rule, and the actors' estimated cost."""
        ms = self.actor_ms_per_view
        return {"actors": list(self.actors), "device": list(self.device), "rule": self.rule,
                "actor_cpu_ms_per_view_1s_16khz": round(ms, 3),
                "actor_cores_per_1000_views_per_s": round(ms, 3)}


def split_for_device(sequence: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split a sequence into a CPU prefix and a device suffix, order preserved.

    The device part is the longest suffix made only of augmentations with a batched torch
    version (today every augmentation has one, so it is the whole sequence); everything
    before it runs on CPU. This is ``place(sequence, True, ...)``.

    Returns:
        ``(cpu_part, device_part)``; their concatenation is ``sequence``.

    Raises:
        ValueError: An unknown augmentation name.
    """
    names = tuple(sequence)
    cut = len(names)
    while cut > 0 and get_spec(names[cut - 1]).torch_function is not None:
        cut -= 1
    return names[:cut], names[cut:]


def place(sequence: Sequence[str], on_device: bool | str, *, use_gpu: bool) -> Placement:
    """Cut ``sequence`` between the CPU actors and the training device.

    Args:
        sequence: The job's augmentation names, in order.
        on_device: ``augment.on_device``: False, True or ``"auto"``.
        use_gpu: Whether the training workers have a GPU (``train.use_gpu``).

    Returns:
        The placement; ``actors + device == tuple(sequence)``.

    Raises:
        ValueError: An unknown ``on_device`` value or augmentation name.
    """
    names = tuple(sequence)
    for name in names:
        get_spec(name)
    if on_device is False:
        return Placement(names, (), "augment.on_device=false: all on the CPU actors")
    if on_device is True:
        actors, device = split_for_device(names)
        return Placement(actors, device, "augment.on_device=true: the longest suffix with a "
                                         "batched torch version on the device")
    if on_device != "auto":
        raise ValueError(f"augment.on_device must be one of {list(ON_DEVICE_CHOICES)}, "
                         f"got {on_device!r}")
    if not use_gpu:
        return Placement(names, (), "augment.on_device=auto without a GPU: all on the CPU "
                                    "actors (beside training, not on its threads)")
    expensive = [i for i, name in enumerate(names) if not get_spec(name).cheap]
    if not expensive:
        return Placement(names, (), "augment.on_device=auto: no phase-vocoder augmentation, "
                                    "all on the CPU actors")
    cut = expensive[0]
    return Placement(names[:cut], names[cut:], "augment.on_device=auto on a GPU: from the first "
                                               "phase-vocoder augmentation on, on the device")


__all__ = ["CPU_MS_PER_VIEW", "ON_DEVICE_CHOICES", "OnDeviceMode", "Placement", "place",
           "split_for_device"]
