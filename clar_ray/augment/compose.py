"""Apply an ordered sequence of augmentations to a batch, reproducibly.

The seed rule: the view ``v`` of clip ``i`` in epoch ``e`` of a run seeded ``s`` is a pure
function of ``(s, e, i, v)``, whatever the batch boundaries, the order of rows, or the number of
actors and nodes. :func:`view_rng` builds that view's generator from
``np.random.SeedSequence`` over the four integers, and step ``k`` of the sequence (the k-th
augmentation, counted in the job's full sequence) draws from the view's k-th child
(:func:`step_rng`, the same as ``SeedSequence.spawn``). Each step thus has its own stream: a
change of ``p`` or of a range in one step leaves the draws of the others as they were, and the
part of a sequence run on the training device (``clar_ray.augment.batch``) draws exactly what
the CPU would have drawn for it.

Within a step every row's parameters come from its own generator; the cheap augmentations
then transform the whole batch with array ops and the phase-vocoder ones go row by row (the
torch versions in ``clar_ray.augment.batch`` do the whole batch at once).

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

from clar_ray.augment.presets import AugmentationSpec, build_params, get_spec
from clar_ray.augment.seeding import pcg64_states
from clar_ray.augment.signal import Draws, stack_draws

if TYPE_CHECKING:  # pragma: no cover
    from clar_ray.augment.batch import BatchAugmenter

_WORD = 2**32
#: Batches of at least this many rows derive their generators' states together
#: (:mod:`clar_ray.augment.seeding`); below it one ``step_rng`` per row is cheaper.
BATCH_SEEDING_MIN_ROWS = 16


def check_augmenter_args(*, sample_rate: int, seed: int, first_step: int) -> None:
    """The argument checks shared by :class:`Augmenter` and ``BatchAugmenter``."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    if first_step < 0:
        raise ValueError(f"first_step must be >= 0, got {first_step}")
    seed_entropy(seed, 0, 0, 0)  # seed range check


def seed_entropy(seed: int, epoch: int, sample_id: int, view: int) -> list[int]:
    """The entropy of a view's ``SeedSequence``: the four integers as eight 32-bit words.

    Fixed width, so no two tuples give the same words.

    Raises:
        ValueError: When an argument is negative or does not fit in 64 bits.
    """
    words = []
    for name, value in (("seed", seed), ("epoch", epoch), ("sample_id", sample_id),
                        ("view", view)):
        value = int(value)
        if not 0 <= value < _WORD**2:
            raise ValueError(f"{name} must be in [0, 2**64), got {value}")
        words += [value % _WORD, value // _WORD]
    return words


def view_rng(seed: int, epoch: int, sample_id: int, view: int) -> np.random.Generator:
    """The generator of one view of one clip: ``SeedSequence`` over (seed, epoch, id, view).

    Raises:
        ValueError: When an argument is negative or does not fit in 64 bits.
    """
    return np.random.default_rng(np.random.SeedSequence(seed_entropy(seed, epoch, sample_id, view)))


def step_rng(seed: int, epoch: int, sample_id: int, view: int, step: int) -> np.random.Generator:
    """The generator of step ``step`` of a view: the view's ``step``-th spawned child."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    # The same generator as default_rng(SeedSequence(words, spawn_key=(step,))), built without
    # default_rng's argument dispatch and with the words as one uint32 array: ~40 % cheaper,
    # and it is built once per row, step and view.
    words = np.array(seed_entropy(seed, epoch, sample_id, view), dtype=np.uint32)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words, spawn_key=(step,))))


def batch_entropy(seed: int, epoch: int, sample_ids: np.ndarray, view: int,
                  step: int) -> list[Any]:
    """The assembled ``SeedSequence`` entropy of :func:`step_rng` for a batch of ids.

    Returns:
        Nine words: :func:`seed_entropy`'s eight (the ids' two as (B,) uint32 arrays, the rest
        ints shared by the batch), then the spawn key ``step``; the input of
        :func:`clar_ray.augment.seeding.pcg64_states`.
    """
    ids = np.asarray(sample_ids, dtype=np.uint64)
    entropy: list[Any] = seed_entropy(seed, epoch, 0, view) + [step]
    entropy[4] = (ids & np.uint64(_WORD - 1)).astype(np.uint32)  # the ids' low words
    entropy[5] = (ids >> np.uint64(32)).astype(np.uint32)  # and high words
    return entropy


def split_for_device(sequence: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split a sequence into a CPU prefix and a device suffix, order preserved.

    The device part is the longest suffix made only of augmentations with a batched torch
    version (today every augmentation has one, so it is the whole sequence); everything
    before it runs on CPU. :func:`clar_ray.augment.placement.place` chooses among the cuts.

    Returns:
        ``(cpu_part, device_part)``; their concatenation is ``sequence``.
    """
    names = tuple(sequence)
    cut = len(names)
    while cut > 0 and get_spec(names[cut - 1]).torch_name is not None:
        cut -= 1
    return names[:cut], names[cut:]


def resolve_sequence(
    sequence: Sequence[str],
    preset: str,
    params: Mapping[str, Mapping[str, object]] | None,
) -> list[tuple[AugmentationSpec, Any]]:
    """Each step's spec and validated parameter dataclass.

    ``params`` is keyed by augmentation name; names absent from ``sequence`` are allowed (a job
    may hold parameters for augmentations a grid switches on and off) but must be known.

    Raises:
        ValueError: Unknown augmentation, preset or parameter, or a bad value.
    """
    if isinstance(sequence, str):
        raise ValueError(f"sequence must be a list of augmentation names, got {sequence!r}")
    params = params or {}
    for name in params:
        get_spec(name)
    return [(get_spec(name), build_params(name, preset, params.get(name))) for name in sequence]


def draw_step(
    spec: AugmentationSpec,
    params: Any,
    *,
    seed: int,
    epoch: int,
    view: int,
    step: int,
    sample_ids: np.ndarray,
    n_samples: int,
    sample_rate: int,
) -> Draws:
    """The stacked draws of one step for a batch, each row from its own :func:`step_rng`.

    From :data:`BATCH_SEEDING_MIN_ROWS` rows on, the rows' generator states come from
    :func:`clar_ray.augment.seeding.pcg64_states` (the same states, derived for the batch at
    once) and one generator is set to each in turn.
    """
    if len(sample_ids) < BATCH_SEEDING_MIN_ROWS:
        return stack_draws([
            spec.draw(step_rng(seed, epoch, int(sample_id), view, step), n_samples,
                      sample_rate, params)
            for sample_id in sample_ids
        ])
    rng = np.random.Generator(np.random.PCG64(0))
    draws = []
    for state in pcg64_states(batch_entropy(seed, epoch, sample_ids, view, step)):
        rng.bit_generator.state = state
        draws.append(spec.draw(rng, n_samples, sample_rate, params))
    return stack_draws(draws)


def check_batch_ids(sample_ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Validate sample ids: (B,) non-negative integers → int64 array."""
    ids = np.asarray(sample_ids)
    if ids.ndim != 1 or ids.shape[0] != batch_size:
        raise ValueError(f"sample_ids must have shape ({batch_size},), got {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"sample_ids must be integers, got dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    if ids.size and ids.min() < 0:
        raise ValueError(f"sample_ids must be >= 0, got {int(ids.min())}")
    return ids


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
        ids = check_batch_ids(sample_ids, out.shape[0])
        seed_entropy(self.seed, epoch, 0, view)  # epoch and view range checks
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
        """Split into a CPU part and a training-device part (see :func:`split_for_device`).

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
