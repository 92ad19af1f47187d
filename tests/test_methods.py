"""Every frontend × encoder × objective trains a few steps on a tiny batch; its loss falls."""

from __future__ import annotations

from typing import get_args

import pytest
import torch

from clar_ray.config import (
    DEFAULT_TEMPERATURES,
    FRONTEND_ENCODERS,
    LABEL_FREE_OBJECTIVES,
    ModelConfig,
    ObjectiveConfig,
    ObjectiveName,
)
from clar_ray.methods import METHODS, build_method
from clar_ray.models import build_frontend

SAMPLE_RATE = 16000
PAIRS = sorted(FRONTEND_ENCODERS.items())


def _batch(n: int = 8, samples: int = 4000) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(samples) / SAMPLE_RATE
    freqs = 200.0 + 150.0 * torch.arange(n)
    clean = torch.sin(2 * torch.pi * freqs[:, None] * t)  # (n, T): one tone per clip
    view_a = clean + 0.05 * torch.randn(n, samples, generator=generator)
    view_b = torch.roll(clean, 400, dims=1) + 0.05 * torch.randn(n, samples, generator=generator)
    ids = torch.arange(n) + 100
    labels = torch.tensor([0, 1, 2, -1, 0, 1, -1, 2])[:n]
    return view_a, view_b, ids, labels


@pytest.mark.parametrize("objective", sorted(METHODS))
@pytest.mark.parametrize(("frontend_name", "encoder"), PAIRS)
def test_loss_falls_in_a_few_steps(frontend_name: str, encoder: str, objective: str) -> None:
    torch.manual_seed(0)
    model = ModelConfig(frontend=frontend_name, encoder=encoder, width=4, hidden_dim=24,
                        projection_dim=12)
    cfg = ObjectiveConfig(name=objective, slicer_clusters=4, slicer_momentum=0.5,
                          kmix=frontend_name == "tf3")
    frontend = build_frontend(frontend_name, sample_rate=SAMPLE_RATE)
    method = build_method(model, cfg, in_channels=frontend.out_channels, num_classes=3)
    optimizer = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=3e-3)
    view_a, view_b, ids, labels = _batch()
    with torch.no_grad():
        x_a, x_b = frontend(view_a), frontend(view_b)
    losses = []
    for _ in range(12):
        method.train()
        loss, metrics = method(x_a, x_b, ids, labels)
        assert torch.isfinite(loss), (objective, metrics)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_step()
        losses.append(float(loss.detach()))
    assert min(losses[-3:]) < losses[0], losses


def test_clar_head_feeds_contrast_below_the_class_layer() -> None:
    frontend = build_frontend("raw", sample_rate=SAMPLE_RATE)
    method = build_method(ModelConfig(frontend="raw", encoder="resnet18_1d", width=4,
                                      hidden_dim=24, projection_dim=12),
                          ObjectiveConfig(name="clar"), in_channels=1, num_classes=3)
    view_a, view_b, ids, labels = _batch()
    _, metrics = method(frontend(view_a), frontend(view_b), ids, torch.full_like(labels, -1))
    assert float(metrics["cross_entropy"]) == 0.0
    assert float(metrics["nt_xent"]) > 0.0


def test_slicer_teacher_follows_the_student_only_through_ema() -> None:
    method = build_method(ModelConfig(frontend="raw", encoder="resnet18_1d", width=4,
                                      hidden_dim=24, projection_dim=12),
                          ObjectiveConfig(name="slicer", slicer_clusters=4, slicer_momentum=0.9,
                                          kmix=False),
                          in_channels=1, num_classes=3)
    assert not any(p.requires_grad for p in method.teacher.parameters())
    before = [p.clone() for p in method.teacher.parameters()]
    with torch.no_grad():
        for param in method.encoder.parameters():
            param.add_(1.0)
    method.after_step()
    moved = [not torch.equal(a, b) for a, b in zip(before, method.teacher.parameters())]
    assert any(moved)


def test_kmix_mixes_log_power_channels_and_keeps_phase() -> None:
    frontend = build_frontend("tf3", sample_rate=SAMPLE_RATE)
    method = build_method(ModelConfig(width=4, hidden_dim=24, projection_dim=12),
                          ObjectiveConfig(name="slicer", slicer_clusters=4), in_channels=3,
                          num_classes=3)
    view_a, view_b, _ids, _labels = _batch()
    x = torch.cat([frontend(view_a), frontend(view_b)])
    mixed = method._kmix(x)
    assert mixed.shape == x.shape
    torch.testing.assert_close(mixed[:, 1], x[:, 1])  # phase untouched
    assert not torch.allclose(mixed[:, 2], x[:, 2])  # log-mel mixed
    # log-mixup-exp never goes below the original log power by more than log(1 - 0.4)
    assert bool((mixed[:, 2] >= x[:, 2] + torch.log(torch.tensor(0.6)) - 1e-4).all())
    with pytest.raises(ValueError, match="k-mix needs tf3 input"):
        method._kmix(torch.zeros(4, 1, 100))


@pytest.mark.parametrize(("objective", "expected"), [
    ("simclr", 0.5), ("clar", 0.5), ("supcon", 0.1), ("acl", 0.2), ("slicer", 0.07)])
def test_each_objective_has_its_own_default_temperature(objective: str, expected: float) -> None:
    assert ObjectiveConfig(name=objective).tau == expected
    assert ObjectiveConfig(name=objective, temperature=0.3).tau == 0.3


@pytest.mark.parametrize("angular_input", ["encoder", "head"])
def test_acl_angular_term_reads_where_configured(angular_input: str) -> None:
    from clar_ray import objectives

    torch.manual_seed(0)
    cfg = ObjectiveConfig(name="acl", acl_angular_input=angular_input)
    method = build_method(ModelConfig(frontend="raw", encoder="resnet18_1d", width=4,
                                      hidden_dim=24, projection_dim=12),
                          cfg, in_channels=1, num_classes=3).eval()
    frontend = build_frontend("raw", sample_rate=SAMPLE_RATE)
    view_a, view_b, ids, labels = _batch()
    x_a, x_b = frontend(view_a), frontend(view_b)
    with torch.no_grad():
        loss, _ = method(x_a, x_b, ids, labels)
        h = method.encoder(torch.cat([x_a, x_b]))
        z = method.head(h)
        both = torch.cat([ids, ids])
        on_encoder = objectives.angular_contrastive_loss(z, both, 0.2, margin=cfg.acl_margin,
                                                         alpha=cfg.acl_alpha, z_angular=h)
        on_head = objectives.angular_contrastive_loss(z, both, 0.2, margin=cfg.acl_margin,
                                                      alpha=cfg.acl_alpha)
    assert float((on_encoder - on_head).abs()) > 1e-4  # the two placements differ
    expected = on_encoder if angular_input == "encoder" else on_head
    torch.testing.assert_close(loss, expected)


def test_the_config_names_exactly_the_registry_objectives() -> None:
    assert set(get_args(ObjectiveName)) == set(METHODS)
    assert set(LABEL_FREE_OBJECTIVES) <= set(METHODS)
    assert set(DEFAULT_TEMPERATURES) <= set(METHODS)


@pytest.mark.parametrize("objective", sorted(METHODS))
def test_an_objective_reads_labels_unless_it_is_label_free(objective: str) -> None:
    torch.manual_seed(0)
    method = build_method(ModelConfig(frontend="raw", encoder="resnet18_1d", width=4,
                                      hidden_dim=24, projection_dim=12),
                          ObjectiveConfig(name=objective, slicer_clusters=4, kmix=False),
                          in_channels=1, num_classes=3).eval()
    frontend = build_frontend("raw", sample_rate=SAMPLE_RATE)
    view_a, view_b, ids, labels = _batch()
    x_a, x_b = frontend(view_a), frontend(view_b)
    with torch.no_grad():
        with_labels, _ = method(x_a, x_b, ids, labels)
        without, _ = method(x_a, x_b, ids, torch.full_like(labels, -1))
    if objective in LABEL_FREE_OBJECTIVES:
        torch.testing.assert_close(with_labels, without)
    else:
        assert float((with_labels - without).abs()) > 1e-4, (with_labels, without)
