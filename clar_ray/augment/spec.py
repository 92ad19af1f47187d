"""What an augmentation is: :class:`AugmentationSpec`, its draws, and the pieces every one shares.

An augmentation is one module of :mod:`clar_ray.augment.ops` that fills in a spec:

* a frozen ``*Params`` dataclass: the job-configurable ranges, with units in the names and the
  paper's values as defaults, checked in ``__post_init__`` with the ``check_*`` functions here;
* ``draw(rng, n_samples, sample_rate, params) -> Draw``: one clip's random parameters, drawn
  from the generator it is given and nothing else (never from the waveform). Every draw begins
  with the coin ``applied = rng.random() < p`` and then draws all its parameters whether or not
  the coin came up, so ``p`` changes nothing but the coin;
* ``apply(waves, draws, sample_rate) -> waves``: the deterministic numpy transform of a batch
  ``(B, T)`` given the stacked draws (:func:`stack_draws`). It returns a new float32 array and
  never modifies its input (Ray may hand read-only views); a row's result never depends on the
  other rows of its batch, to the bit;
* optionally ``torch_function(waves, draws) -> waves``: the same transform as torch ops over a
  batch on any device (:class:`clar_ray.augment.batch.BatchAugmenter` runs it). It imports
  torch when called, so the CPU actors, which run only the numpy path, never load torch;
* the ``clar-code`` preset's values where they differ from the defaults.

The per-clip function ``(wave, rng, *, sample_rate, **params) -> wave`` of every augmentation
is built here from its spec (:attr:`AugmentationSpec.function`): draw + apply on one clip.

Legend: B clips in a batch, T samples per clip.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

#: One clip's random parameters (plain Python scalars).
Draw = dict[str, Any]
#: The draws of a batch stacked per key, each an array of shape (B,).
Draws = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class AugmentationSpec:
    """Everything the composition needs to know about one augmentation.

    Attributes:
        name: The name a job uses.
        params_type: Frozen dataclass of its parameters (defaults = the ``paper`` preset).
        draw: ``(rng, n_samples, sample_rate, params) -> Draw``: one clip's random parameters.
        apply: ``(waves (B, T), draws, sample_rate) -> (B, T)``: numpy batch transform.
        cheap: True when ``apply`` is vectorised over the batch (under 0.6 ms a view on a
            CPU core); False for the phase-vocoder augmentations (1-1.5 ms a view), which
            placement by cost (:mod:`clar_ray.augment.placement`) moves to a GPU.
        cpu_ms_per_view: CPU time per view of ``apply`` (numpy, one core, a 1-s clip at
            16 kHz, p = 1, 128-row batches; measured by ``benchmarks/augment_costs.py`` on
            the 2-core development machine: read them as relative costs). Scale with the
            clip's samples.
        torch_function: ``(waves (B, T) tensor, draws as (B,) tensors) -> (B, T)``, the
            batched torch version, or None when there is none (it then runs on the CPU).
        preset_overrides: Per preset, the values that differ from ``params_type``'s defaults.
        host_draws: Whether ``torch_function`` takes its draws as CPU tensors whatever the
            device of the waves: functions that pick rows or size their grids from the draws
            read them there without a device sync and send only index tensors over.
    """

    name: str
    params_type: type
    draw: Callable[[np.random.Generator, int, int, Any], Draw]
    apply: Callable[[np.ndarray, Draws, int], np.ndarray]
    cheap: bool
    cpu_ms_per_view: float
    torch_function: Callable[..., Any] | None
    preset_overrides: Mapping[str, Mapping[str, Any]]
    host_draws: bool = False

    @property
    def param_names(self) -> tuple[str, ...]:
        """The parameter keys a job may set."""
        return tuple(field.name for field in dataclasses.fields(self.params_type))

    def defaults(self, preset: str) -> dict[str, Any]:
        """The full parameter dict of a preset (a preset without overrides is the defaults)."""
        params = dataclasses.asdict(self.params_type())
        params.update(self.preset_overrides.get(preset, {}))
        return params

    @functools.cached_property
    def function(self) -> Callable[..., np.ndarray]:
        """The per-clip function ``(wave (T,), rng, *, sample_rate, **params) -> (T,)``.

        It reads as ``<name>`` of the module that defines ``params_type``, where each module
        of :mod:`clar_ray.augment.ops` binds it (``fade = SPEC.function``), so it pickles by
        reference like a plain function.
        """
        return _per_clip_function(self)

    def __getstate__(self) -> dict[str, Any]:
        # The cached per-clip function is rebuilt on demand, not pickled with the spec.
        return {key: value for key, value in self.__dict__.items() if key != "function"}


def _per_clip_function(spec: AugmentationSpec) -> Callable[..., np.ndarray]:
    summary = (spec.params_type.__doc__ or spec.name).strip().splitlines()[0]

    def function(wave: np.ndarray, rng: np.random.Generator, *, sample_rate: int,
                 **params: Any) -> np.ndarray:
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1:
            raise ValueError(f"wave must have shape (T,), got {wave.shape}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
        allowed = list(spec.param_names)
        for key in params:
            if key not in allowed:
                raise ValueError(f"unknown parameter {key!r}; allowed: {allowed}")
        config = spec.params_type(**params)
        drawn = stack_draws([spec.draw(rng, wave.shape[0], sample_rate, config)])
        return spec.apply(wave[None, :], drawn, sample_rate)[0]

    function.__name__ = function.__qualname__ = spec.name
    function.__module__ = spec.params_type.__module__
    function.__doc__ = f"""{summary}

    Args:
        wave: (T,) float32 clip (not modified).
        rng: The only source of randomness.
        sample_rate: Samples per second.
        **params: Fields of :class:`{spec.params_type.__module__}.{spec.params_type.__name__}`.

    Returns:
        (T,) float32, a new array.
    """
    return function


# --------------------------------------------------------------------------- draws


def stack_draws(draws: Sequence[Draw]) -> Draws:
    """Stack per-clip draws into arrays of shape (B,) per key."""
    if not draws:
        raise ValueError("stack_draws needs at least one draw")
    return {key: np.asarray([draw[key] for draw in draws]) for key in draws[0]}


def uniform(rng: np.random.Generator, low: float, high: float, step: float = 0.0) -> float:
    """A uniform draw in [low, high], on the grid ``low + step * i`` when step > 0."""
    if step > 0.0:
        count = math.floor((high - low) / step + 1e-9)
        return float(low + step * int(rng.integers(0, count + 1)))
    return float(rng.uniform(low, high))


def samples_between(rng: np.random.Generator, low: float, high: float, n_samples: int) -> int:
    """A whole number of samples drawn uniformly in [round(low * T), round(high * T)]."""
    return int(rng.integers(round(low * n_samples), round(high * n_samples) + 1))


def noise_key(rng: np.random.Generator) -> int:
    """A 32-bit key of a counter-based noise stream (:mod:`clar_ray.augment.noise`)."""
    return int(rng.integers(0, 2**32))


def as_batch(waves: np.ndarray) -> np.ndarray:
    """``waves`` as a float32 (B, T) array, or a ValueError."""
    waves = np.asarray(waves, dtype=np.float32)
    if waves.ndim != 2:
        raise ValueError(f"waves must have shape (B, T), got {waves.shape}")
    return waves


def applied_rows(draws: Draws) -> np.ndarray:
    """Indices of the rows whose coin came up."""
    return np.flatnonzero(np.asarray(draws["applied"], dtype=bool))


# --------------------------------------------------------------------------- parameter checks


def check_probability(name: str, value: float) -> None:
    """Raise unless ``value`` is in [0, 1]."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def check_range(low_name: str, low: float, high_name: str, high: float) -> None:
    """Raise unless ``low <= high``."""
    if low > high:
        raise ValueError(f"{low_name} must be <= {high_name}, got {low} > {high}")


def check_interval(name: str, value: float, low: float, high: float) -> None:
    """Raise unless ``value`` is in [low, high]."""
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")


def check_non_negative(name: str, value: float) -> None:
    """Raise unless ``value >= 0``."""
    if not value >= 0.0:
        raise ValueError(f"{name} must be >= 0, got {value}")


def check_choices(name: str, values: Sequence[str], allowed: Sequence[str]) -> None:
    """Raise unless ``values`` is a non-empty list of ``allowed`` names."""
    if isinstance(values, str) or not values:
        raise ValueError(f"{name} must be a non-empty list of {list(allowed)}, got {values!r}")
    for value in values:
        if value not in allowed:
            raise ValueError(f"{name}: unknown value {value!r}; allowed: {list(allowed)}")
