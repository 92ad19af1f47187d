"""The registry, the presets' validation, the seed rule and the ordered composition."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

from clar_ray.augment import (
    AUGMENTATIONS,
    CLAR_CODE_ORDER,
    PRESETS,
    Augmenter,
    resolve_params,
    split_for_device,
    step_rng,
    view_rng,
)
from clar_ray.augment.seeding import check_batch_ids

SR = 8000
EVERYTHING = ["pitch_shift", "time_stretch", "fade", "time_mask", "time_shift", "white_noise",
              "mixed_noise"]


def _batch(b: int = 6, t: int = 2000, seed: int = 0) -> np.ndarray:
    waves = 0.1 * np.random.default_rng(seed).standard_normal((b, t)).astype(np.float32)
    waves.flags.writeable = False
    return waves


# ----------------------------------------------------------------- registry and presets


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_every_augmentation_resolves_in_every_preset(name: str, preset: str) -> None:
    spec = AUGMENTATIONS[name]
    params = resolve_params(name, preset, {})
    assert set(params) == set(spec.param_names)
    assert spec.torch_function is not None  # every augmentation has a batched torch version
    assert callable(spec.torch_function)


def test_paper_preset_is_the_dataclass_defaults() -> None:
    for name, spec in AUGMENTATIONS.items():
        assert resolve_params(name, "paper") == dataclasses.asdict(spec.params_type())


def test_registry_names_and_costs() -> None:
    assert set(AUGMENTATIONS) == set(CLAR_CODE_ORDER) == {
        "pitch_shift", "white_noise", "mixed_noise", "fade", "time_mask", "time_shift",
        "time_stretch"}
    assert {n for n, s in AUGMENTATIONS.items() if not s.cheap} == {"pitch_shift",
                                                                    "time_stretch"}


def test_clar_code_preset_values() -> None:
    assert resolve_params("time_stretch", "clar-code")["restore_length"] == "resample"
    mask = resolve_params("time_mask", "clar-code")
    assert mask["min_mask_fraction"] == mask["max_mask_fraction"] == 0.125
    assert mask["p"] == 0.25
    assert len(resolve_params("fade", "clar-code")["shapes"]) == 5
    assert resolve_params("mixed_noise", "clar-code")["style"] == "clar-code"


def test_overrides_are_coerced_from_yaml_types() -> None:
    params = resolve_params("fade", "paper", {"shapes": ["linear"], "max_fade_in_fraction": 0})
    assert params["shapes"] == ("linear",) and params["max_fade_in_fraction"] == 0.0


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("pitch_shift", {"max_semitone": 3},
         r"unknown parameter 'max_semitone' for augmentation 'pitch_shift'; allowed: .*"
         r"'max_semitones'"),
        ("white_noise", {"min_snr_db": 30}, r"min_snr_db must be <= max_snr_db, got 30.0 > 20"),
        ("fade", {"p": 1.5}, r"p must be in \[0, 1\], got 1.5"),
        ("time_shift", {"max_shift_seconds": -0.1}, r"max_shift_seconds must be >= 0, got -0.1"),
        ("time_mask", {"max_mask_fraction": -0.5}, r"max_mask_fraction must be in .*-0.5"),
        ("time_stretch", {"min_rate": 0}, r"min_rate must be > 0, got 0.0"),
        ("mixed_noise", {"colors": ["blue"]}, r"unknown value 'blue'"),
        ("time_stretch", {"restore_length": 1}, r"time_stretch.restore_length must be a string"),
    ],
)
def test_bad_overrides_name_the_problem(name: str, overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_params(name, "paper", overrides)


def test_unknown_names_and_presets() -> None:
    with pytest.raises(ValueError, match=r"unknown augmentation 'reverb'; allowed"):
        resolve_params("reverb", "paper")
    with pytest.raises(ValueError, match=r"unknown augmentation preset 'code'"):
        resolve_params("fade", "code")


# ----------------------------------------------------------------- seed rule


def test_view_rng_is_a_pure_function_of_four_ints() -> None:
    first = view_rng(1, 2, 3, 0).random(4)
    np.testing.assert_array_equal(first, view_rng(1, 2, 3, 0).random(4))
    for other in [(1, 2, 3, 1), (1, 3, 3, 0), (2, 2, 3, 0), (1, 2, 4, 0), (1, 2, 2**32 + 3, 0)]:
        assert not np.array_equal(first, view_rng(*other).random(4))
    with pytest.raises(ValueError, match="sample_id must be in"):
        view_rng(0, 0, -1, 0)


def test_step_rng_is_the_views_spawned_child() -> None:
    parent = view_rng(5, 1, 9, 1).bit_generator.seed_seq
    assert isinstance(parent, np.random.SeedSequence)
    child = np.random.default_rng(parent.spawn(3)[2])
    np.testing.assert_array_equal(step_rng(5, 1, 9, 1, 2).random(3), child.random(3))


# ----------------------------------------------------------------- composition


@pytest.mark.parametrize("preset", PRESETS)
def test_same_views_whatever_the_batch_split_and_order(preset: str) -> None:
    augmenter = Augmenter(EVERYTHING, sample_rate=SR, preset=preset, seed=11)
    waves, ids = _batch(), np.array([4, 8, 15, 16, 23, 42])
    whole = augmenter(waves, ids, epoch=2, view=1)
    order = np.array([5, 2, 0, 3, 1, 4])
    parts = [augmenter(waves[order[:2]], ids[order[:2]], epoch=2, view=1),
             Augmenter(EVERYTHING, sample_rate=SR, preset=preset, seed=11)(
                 waves[order[2:]], ids[order[2:]], epoch=2, view=1)]
    np.testing.assert_array_equal(np.concatenate(parts), whole[order])


def test_views_differ_across_epochs_views_and_seeds() -> None:
    waves, ids = _batch(), np.arange(6)
    base = Augmenter(EVERYTHING, sample_rate=SR, seed=1)(waves, ids, epoch=0, view=0)
    others = [Augmenter(EVERYTHING, sample_rate=SR, seed=1)(waves, ids, epoch=1, view=0),
              Augmenter(EVERYTHING, sample_rate=SR, seed=1)(waves, ids, epoch=0, view=1),
              Augmenter(EVERYTHING, sample_rate=SR, seed=2)(waves, ids, epoch=0, view=0)]
    for other in others:
        assert all(not np.allclose(a, b) for a, b in zip(base, other))


def test_composition_is_the_per_clip_functions_in_order() -> None:
    sequence = ["time_stretch", "fade", "time_shift", "white_noise"]
    waves, ids = _batch(3), np.array([7, 1, 30])
    out = Augmenter(sequence, sample_rate=SR, seed=4)(waves, ids, epoch=5, view=0)
    for row, sample_id in enumerate(ids):
        wave = waves[row]
        for step, name in enumerate(sequence):
            wave = AUGMENTATIONS[name].function(wave, step_rng(4, 5, int(sample_id), 0, step),
                                                sample_rate=SR)
        np.testing.assert_allclose(out[row], wave, atol=1e-6)


def test_each_step_draws_from_its_own_stream() -> None:
    waves, ids = _batch(), np.arange(6)
    off = Augmenter(["fade", "time_shift"], sample_rate=SR, params={"fade": {"p": 0.0}})
    only_shift = Augmenter(["time_shift"], sample_rate=SR, first_step=1)
    np.testing.assert_array_equal(off(waves, ids, epoch=0, view=0),
                                  only_shift(waves, ids, epoch=0, view=0))


def test_output_is_new_float32_and_input_untouched() -> None:
    waves = np.asarray(_batch(), dtype=np.float64)
    before = waves.copy()
    out = Augmenter(["fade"], sample_rate=SR)(waves, np.arange(6), epoch=0, view=0)
    assert out.dtype == np.float32 and out.shape == waves.shape
    np.testing.assert_array_equal(waves, before)
    empty = Augmenter([], sample_rate=SR)(waves, np.arange(6), epoch=0, view=0)
    np.testing.assert_array_equal(empty, waves.astype(np.float32))


def test_parameters_of_other_augmentations_are_allowed_unknown_ones_are_not() -> None:
    Augmenter(["fade"], sample_rate=SR, params={"pitch_shift": {"p": 0.5}})
    with pytest.raises(ValueError, match="unknown augmentation 'echo'"):
        Augmenter(["fade"], sample_rate=SR, params={"echo": {}})
    with pytest.raises(ValueError, match="unknown augmentation 'echo'"):
        Augmenter(["echo"], sample_rate=SR)
    with pytest.raises(ValueError, match="sample_rate must be > 0, got 0"):
        Augmenter(["fade"], sample_rate=0)


def test_bad_batches_are_rejected() -> None:
    augmenter = Augmenter(["fade"], sample_rate=SR)
    with pytest.raises(ValueError, match=r"sample_ids must have shape \(6,\)"):
        augmenter(_batch(), np.arange(5), epoch=0, view=0)
    with pytest.raises(ValueError, match="sample_ids must be >= 0, got -3"):
        check_batch_ids(np.array([1, -3]), 2)
    with pytest.raises(ValueError, match="epoch must be in"):
        augmenter(_batch(), np.arange(6), epoch=-1, view=0)


@pytest.mark.parametrize(
    ("sequence", "cpu", "device"),
    [
        # Every augmentation has a batched version now: the suffix is the whole sequence
        # (clar_ray.augment.placement chooses other cuts).
        (["pitch_shift", "fade", "time_stretch", "white_noise", "time_shift"],
         (), ("pitch_shift", "fade", "time_stretch", "white_noise", "time_shift")),
        (["fade", "time_mask"], (), ("fade", "time_mask")),
        (["fade", "pitch_shift"], (), ("fade", "pitch_shift")),
        ([], (), ()),
    ],
)
def test_split_for_device_takes_the_longest_batched_suffix(sequence: list[str], cpu: tuple,
                                                           device: tuple) -> None:
    assert split_for_device(sequence) == (cpu, device)


def test_augmenter_and_per_clip_functions_pickle_with_the_standard_pickle() -> None:
    # DataLoader workers started with spawn, and Ray, hand the augmenter over by pickling.
    augmenter = Augmenter(EVERYTHING, sample_rate=SR, seed=3)
    waves, ids = _batch(), np.arange(6)
    copy = pickle.loads(pickle.dumps(augmenter))
    np.testing.assert_array_equal(copy(waves, ids, epoch=1, view=0),
                                  augmenter(waves, ids, epoch=1, view=0))
    for spec in AUGMENTATIONS.values():
        assert pickle.loads(pickle.dumps(spec.function)) is spec.function
        assert pickle.loads(pickle.dumps(spec)) == spec
