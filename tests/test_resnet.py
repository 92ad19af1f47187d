"""ResNet18 encoders: contract, 1D/2D layers, encoder x frontend forward/backward, learning,
the registry and FeatureExtractor."""

from __future__ import annotations

from typing import get_args

import pytest
import torch
from torch import nn

from clar_ray.config import FRONTEND_ENCODERS, EncoderName, FrontendName
from clar_ray.models import FRONTENDS, FeatureExtractor, build_frontend
from clar_ray.models.resnet import ENCODERS, BasicBlock, ResNet18, build_encoder

SR = 16000
T = 4000  # 0.25 s clips
WIDTH = 8

# Every encoder with the frontends whose output it takes.
PAIRS = [
    ("resnet18_1d", "raw", "paper"),
    ("resnet18_2d", "tf3", "paper"),
    ("resnet18_2d", "tf3", "clar-code"),
]


def _waves(batch: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, T, generator=g) * 0.1


def _count(model: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize(("encoder_name", "frontend_name", "preset"), PAIRS)
def test_encoder_with_its_frontend_runs_forward_and_backward(
    encoder_name: str, frontend_name: str, preset: str
) -> None:
    torch.manual_seed(0)
    frontend = build_frontend(frontend_name, sample_rate=SR, preset=preset)
    encoder = build_encoder(encoder_name, in_channels=frontend.out_channels, width=WIDTH)
    h = encoder(frontend(_waves(batch=2)))
    assert h.shape == (2, 8 * WIDTH) == (2, encoder.num_features)
    h.square().mean().backward()
    grads = [p.grad for p in encoder.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads if g is not None)


@pytest.mark.parametrize(("ndim", "shape"), [(1, (3, 2, 999)), (2, (3, 5, 40, 37))])
def test_contract_any_input_size_maps_to_num_features(ndim: int, shape: tuple[int, ...]) -> None:
    encoder = ResNet18(ndim, in_channels=shape[1], width=4)
    assert encoder(torch.randn(shape)).shape == (3, 32)


def test_paper_width_gives_512_features() -> None:
    assert ResNet18(2, 3).num_features == 512
    assert ResNet18(1, 1, width=64).num_features == 512


@pytest.mark.parametrize("ndim", [1, 2])
def test_resnet18_has_eight_basic_blocks_and_only_layers_of_its_ndim(ndim: int) -> None:
    encoder = ResNet18(ndim, in_channels=1, width=4)
    assert _count(encoder, BasicBlock) == 8
    wrong = (
        (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d)
        if ndim == 1
        else (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d)
    )
    right = (nn.Conv1d, nn.BatchNorm1d) if ndim == 1 else (nn.Conv2d, nn.BatchNorm2d)
    assert all(_count(encoder, kind) == 0 for kind in wrong)
    # 1 stem + 16 block convs + 3 shortcut convs; as many batch norms.
    assert _count(encoder, right[0]) == 20
    assert _count(encoder, right[1]) == 20


def test_stage_widths_double() -> None:
    encoder = ResNet18(2, in_channels=3, width=6)
    blocks = [m for m in encoder.modules() if isinstance(m, BasicBlock)]
    widths = [block.conv2.out_channels for block in blocks[1::2]]
    assert widths == [6, 12, 24, 48]


def test_raw_stem_turns_one_second_into_1000_positions() -> None:
    encoder = ResNet18(1, in_channels=1, width=4)
    assert encoder.stem(torch.zeros(1, 1, SR)).shape == (1, 4, 1000)


def test_zero_init_residual_makes_blocks_start_as_identity_branches() -> None:
    encoder = build_encoder("resnet18_2d", in_channels=3, width=4, zero_init_residual=True)
    blocks = [m for m in encoder.modules() if isinstance(m, BasicBlock)]
    assert all(bool((b.bn2.weight == 0).all()) for b in blocks)
    plain = build_encoder("resnet18_2d", in_channels=3, width=4)
    plain_blocks = [m for m in plain.modules() if isinstance(m, BasicBlock)]
    assert all(bool((b.bn2.weight == 1).all()) for b in plain_blocks)


@pytest.mark.parametrize(
    ("ndim", "in_channels", "shape"),
    [(1, 1, (2, 1, 8, 100)), (2, 3, (2, 3, 100)), (2, 3, (2, 1, 16, 16))],
)
def test_wrong_input_shape_is_rejected_with_the_shape(
    ndim: int, in_channels: int, shape: tuple[int, ...]
) -> None:
    encoder = ResNet18(ndim, in_channels, width=2)
    with pytest.raises(ValueError, match=r"got shape"):
        encoder(torch.zeros(shape))


@pytest.mark.parametrize(("ndim", "in_channels", "width"), [(3, 1, 4), (1, 0, 4), (2, 3, 0)])
def test_bad_sizes_are_rejected(ndim: int, in_channels: int, width: int) -> None:
    with pytest.raises(ValueError):
        ResNet18(ndim, in_channels, width)


@pytest.mark.parametrize(("encoder_name", "frontend_name", "preset"), PAIRS[:2])
def test_a_few_sgd_steps_reduce_a_classification_loss(
    encoder_name: str, frontend_name: str, preset: str
) -> None:
    torch.manual_seed(0)
    extractor = FeatureExtractor(
        build_frontend(frontend_name, sample_rate=SR, preset=preset),
        build_encoder(encoder_name, in_channels=1 if frontend_name == "raw" else 3, width=WIDTH),
    )
    classifier = nn.Linear(extractor.num_features, 2)
    params = list(extractor.parameters()) + list(classifier.parameters())
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    waves, labels = _waves(batch=8, seed=1), torch.tensor([0, 1] * 4)
    losses = []
    for _ in range(8):
        loss = nn.functional.cross_entropy(classifier(extractor(waves)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


# ---------------------------------------------------------------- registry


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_encoder_registry_builds_every_entry(name: str) -> None:
    encoder = build_encoder(name, in_channels=2, width=4)
    assert isinstance(encoder, ResNet18)
    assert encoder.num_features == 32 and encoder.in_channels == 2
    shape = (2, 2, 500) if encoder.ndim == 1 else (2, 2, 20, 20)
    assert encoder(torch.randn(shape)).shape == (2, 32)


def test_unknown_encoder_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"allowed: \['resnet18_1d', 'resnet18_2d'\]"):
        build_encoder("resnet50", in_channels=1, width=4)


# ---------------------------------------------------------------- FeatureExtractor


@pytest.mark.parametrize(("encoder_name", "frontend_name", "preset"), PAIRS)
def test_feature_extractor_maps_waves_to_features(
    encoder_name: str, frontend_name: str, preset: str
) -> None:
    frontend = build_frontend(frontend_name, sample_rate=SR, preset=preset)
    encoder = build_encoder(encoder_name, in_channels=frontend.out_channels, width=WIDTH)
    extractor = FeatureExtractor(frontend, encoder).eval()
    waves = _waves(batch=3)
    with torch.no_grad():
        h = extractor(waves)
        assert h.shape == (3, extractor.num_features)
        torch.testing.assert_close(h, encoder(frontend(waves)))


@pytest.mark.parametrize(
    ("encoder_name", "frontend_name"), [("resnet18_2d", "raw"), ("resnet18_1d", "tf3")]
)
def test_feature_extractor_rejects_mismatched_parts(encoder_name: str, frontend_name: str) -> None:
    frontend = build_frontend(frontend_name, sample_rate=SR)
    encoder = build_encoder(encoder_name, in_channels=frontend.out_channels, width=2)
    with pytest.raises(ValueError, match="does not fit"):
        FeatureExtractor(frontend, encoder)


# ---------------------------------------------------------------- the frontend → encoder pairing


@pytest.mark.parametrize("frontend_name", sorted(FRONTENDS))
def test_every_frontend_is_paired_with_an_encoder_that_takes_its_output(frontend_name: str) -> None:
    frontend = build_frontend(frontend_name, sample_rate=SR)
    encoder = build_encoder(FRONTEND_ENCODERS[frontend_name], in_channels=frontend.out_channels,
                            width=WIDTH)
    extractor = FeatureExtractor(frontend, encoder)  # raises when the output does not fit
    assert extractor(_waves(batch=2)).shape == (2, encoder.num_features)


def test_the_pairing_names_every_frontend_and_encoder_the_config_allows() -> None:
    assert set(FRONTEND_ENCODERS) == set(FRONTENDS) == set(get_args(FrontendName))
    assert set(FRONTEND_ENCODERS.values()) == set(ENCODERS) == set(get_args(EncoderName))
