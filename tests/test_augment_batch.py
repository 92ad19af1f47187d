"""The torch batch augmentations, against the numpy ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clar_ray.augment import AUGMENTATIONS, PRESETS, Augmenter, batch_noise, build_params, noise
from clar_ray.augment import batch as B
from clar_ray.augment.seeding import draw_step
from clar_ray.augment.spec import Draws

SR = 8000
CHEAP = sorted(name for name, spec in AUGMENTATIONS.items() if spec.cheap)


def _waves(b: int = 5, t: int = 1000, seed: int = 0) -> torch.Tensor:
    return 0.2 * torch.randn(b, t, generator=torch.Generator().manual_seed(seed))


def _draws(name: str, preset: str, n: int, t: int, **overrides: object) -> Draws:
    spec = AUGMENTATIONS[name]
    params = build_params(name, preset, {"p": 1.0, **overrides})
    return draw_step(spec, params, seed=0, epoch=0, view=0, step=0,
                     sample_ids=np.arange(n), n_samples=t, sample_rate=SR)


def _tensors(draws: Draws) -> dict[str, torch.Tensor]:
    return B._to_tensors(draws, torch.device("cpu"))


# ----------------------------------------------------------------- against numpy


def test_hash_is_bit_identical_to_numpy() -> None:
    keys = np.array([0, 1, 12345, 2**32 - 1])
    np.testing.assert_array_equal(batch_noise.hash_uniform(torch.tensor(keys), 300, 7).numpy(),
                                  noise.hash_uniform(keys, 300, 7))


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", CHEAP)
def test_torch_function_equals_numpy_apply(name: str, preset: str) -> None:
    waves = _waves(8).abs() if preset == "clar-code" else _waves(8)
    draws = _draws(name, preset, 8, waves.shape[1])
    expected = AUGMENTATIONS[name].apply(waves.numpy(), draws, SR)
    got = AUGMENTATIONS[name].torch_function(waves, _tensors(draws))  # type: ignore[misc]
    assert got.dtype == torch.float32 and got.shape == waves.shape
    np.testing.assert_allclose(got.numpy(), expected, atol=2e-6)


@pytest.mark.parametrize("preset", PRESETS)
def test_batch_augmenter_equals_augmenter(preset: str) -> None:
    waves, ids = _waves(6), torch.tensor([3, 1, 4, 1, 5, 9])
    batch = B.BatchAugmenter(CHEAP, sample_rate=SR, preset=preset, seed=2)
    cpu = Augmenter(CHEAP, sample_rate=SR, preset=preset, seed=2)
    np.testing.assert_allclose(batch(waves, ids, epoch=3, view=1).numpy(),
                               cpu(waves.numpy(), ids.numpy(), epoch=3, view=1), atol=2e-6)


def test_cpu_then_device_split_equals_the_whole_sequence() -> None:
    sequence = ["fade", "time_stretch", "time_mask", "white_noise", "time_shift"]
    waves, ids = _waves(4, 2000), np.array([10, 20, 30, 40])
    whole = Augmenter(sequence, sample_rate=SR, seed=9)
    cpu, device = whole.split()  # every augmentation has a batched version: all on the device
    assert cpu.sequence == () and device.sequence == tuple(sequence)
    assert device.first_step == 0
    expected = whole(waves.numpy(), ids, epoch=1, view=0)
    out = device(waves, torch.from_numpy(ids), epoch=1, view=0)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-4)
    # Any cut: the device part keeps its step indices.
    first = Augmenter(sequence[:2], sample_rate=SR, seed=9)
    rest = B.BatchAugmenter(sequence[2:], sample_rate=SR, seed=9, first_step=2)
    middle = first(waves.numpy(), ids, epoch=1, view=0)
    out = rest(torch.from_numpy(middle), torch.from_numpy(ids), epoch=1, view=0)
    np.testing.assert_allclose(out.numpy(), expected, atol=2e-6)
    same = B.BatchAugmenter.device_part(sequence, sample_rate=SR, seed=9)
    assert same.sequence == device.sequence and same.first_step == 0


# ----------------------------------------------------------------- batch properties


def test_fixed_shift_is_torch_roll_and_fixed_fade_is_the_ramp() -> None:
    waves = _waves(3, 40)
    shift = B.BatchAugmenter(["time_shift"], sample_rate=SR, params={
        "time_shift": {"min_shift_fraction": 0.1, "max_shift_fraction": 0.1}})
    np.testing.assert_array_equal(shift(waves, torch.arange(3), epoch=0, view=0),
                                  torch.roll(waves, 4, dims=1))
    fade = B.BatchAugmenter(["fade"], sample_rate=SR, params={"fade": {
        "shapes": ["linear"], "min_fade_in_fraction": 0.1, "max_fade_in_fraction": 0.1,
        "max_fade_out_fraction": 0.0}})
    out = fade(torch.ones(2, 40), torch.arange(2), epoch=0, view=0)
    np.testing.assert_allclose(out[:, :4].numpy(), [[0, 1 / 3, 2 / 3, 1]] * 2, atol=1e-7)
    assert torch.all(out[:, 4:] == 1)


@pytest.mark.parametrize("name", CHEAP)
def test_p_zero_is_identity_and_input_is_untouched(name: str) -> None:
    waves = _waves()
    before = waves.clone()
    off = B.BatchAugmenter([name], sample_rate=SR, params={name: {"p": 0.0}})
    assert torch.equal(off(waves, torch.arange(5), epoch=0, view=0), waves)
    B.BatchAugmenter([name], sample_rate=SR)(waves, torch.arange(5), epoch=0, view=0)
    assert torch.equal(waves, before)


def test_parameters_differ_across_rows_and_follow_ids_not_positions() -> None:
    row = _waves(1)
    waves = row.repeat(6, 1)
    augmenter = B.BatchAugmenter(["time_shift", "white_noise"], sample_rate=SR, seed=5)
    out = augmenter(waves, torch.arange(6), epoch=0, view=0)
    assert all(not torch.allclose(out[i], out[j]) for i in range(6) for j in range(i))
    halves = torch.cat([augmenter(waves[3:], torch.arange(3, 6), epoch=0, view=0),
                        augmenter(waves[:3], torch.arange(3), epoch=0, view=0)])
    assert torch.equal(halves, torch.cat([out[3:], out[:3]]))
    assert not torch.allclose(augmenter(waves, torch.arange(6), epoch=1, view=0), out)
    assert not torch.allclose(augmenter(waves, torch.arange(6), epoch=0, view=1), out)


def test_dtype_is_kept() -> None:
    waves = _waves().double()
    out = B.BatchAugmenter(["fade", "white_noise"], sample_rate=SR)(
        waves, torch.arange(5), epoch=0, view=0)
    assert out.dtype == torch.float64 and out.shape == waves.shape


def test_every_augmentation_is_batched_and_unknown_names_are_refused() -> None:
    assert B.BatchAugmenter(list(AUGMENTATIONS), sample_rate=SR).sequence == tuple(AUGMENTATIONS)
    with pytest.raises(ValueError, match=r"unknown augmentation 'reverb'"):
        B.BatchAugmenter(["reverb"], sample_rate=SR)


@pytest.mark.gpu
def test_cuda_gives_the_cpu_result() -> None:
    waves, ids = _waves(16, 4000), torch.arange(16)
    augmenter = B.BatchAugmenter(CHEAP, sample_rate=SR, seed=1)
    on_cpu = augmenter(waves, ids, epoch=0, view=0)
    on_gpu = augmenter(waves.cuda(), ids, epoch=0, view=0)
    assert on_gpu.is_cuda
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-5, rtol=1e-5)
