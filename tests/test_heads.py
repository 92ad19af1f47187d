"""Heads: sizes with unequal in/hidden/out dims (a swapped dimension fails), structure,
outputs and learning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clar_ray.models.heads import ClarHead, ClusterHead, ProjectionHead, mlp

IN, HIDDEN, PROJ, OUT = 12, 20, 7, 5  # all different
B = 6


def _h(batch: int = B, dim: int = IN, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed))


def _linear_shapes(module: nn.Module) -> list[tuple[int, int]]:
    """(in_features, out_features) of every Linear, in order."""
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


# ---------------------------------------------------------------- ProjectionHead


def test_projection_head_is_three_layers_by_default() -> None:
    head = ProjectionHead(IN, HIDDEN, OUT)
    assert _linear_shapes(head) == [(IN, HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, OUT)]
    assert head(_h()).shape == (B, OUT)


@pytest.mark.parametrize(
    ("num_layers", "shapes"),
    [
        (1, [(IN, OUT)]),
        (2, [(IN, HIDDEN), (HIDDEN, OUT)]),
        (4, [(IN, HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, OUT)]),
    ],
)
def test_projection_head_layer_sizes(num_layers: int, shapes: list[tuple[int, int]]) -> None:
    head = ProjectionHead(IN, HIDDEN, OUT, num_layers=num_layers)
    assert _linear_shapes(head) == shapes
    assert head(_h()).shape == (B, OUT)


def test_paper_projection_head_puts_relu_between_layers_and_not_at_the_end() -> None:
    head = ProjectionHead(IN, HIDDEN, OUT, style="paper")
    assert [type(m) for m in head.net] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert all(m.bias is not None for m in head.net if isinstance(m, nn.Linear))
    # No final ReLU: outputs can be negative.
    with torch.no_grad():
        assert float(head(_h(batch=64)).min()) < 0


def test_code_projection_head_is_the_released_codes() -> None:
    # main_unsupervised.py / main_supervised.py: (Linear, BN, ReLU) x 2, Linear without bias.
    head = ProjectionHead(IN, HIDDEN, OUT)
    assert [type(m) for m in head.net] == [nn.Linear, nn.BatchNorm1d, nn.ReLU,
                                           nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    linears = [m for m in head.net if isinstance(m, nn.Linear)]
    assert [m.bias is not None for m in linears] == [True, True, False]
    with torch.no_grad():
        assert float(head(_h(batch=64)).min()) < 0


def test_head_style_is_checked() -> None:
    with pytest.raises(ValueError, match="head style"):
        ProjectionHead(IN, HIDDEN, OUT, style="bn")


def test_projection_head_rejects_input_of_the_wrong_size() -> None:
    with pytest.raises(RuntimeError):
        ProjectionHead(IN, HIDDEN, OUT)(_h(dim=HIDDEN))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_dim": 0, "hidden_dim": 4, "out_dim": 2, "num_layers": 3},
        {"in_dim": 4, "hidden_dim": 4, "out_dim": 2, "num_layers": 0},
        {"in_dim": 4, "hidden_dim": -1, "out_dim": 2, "num_layers": 2},
    ],
)
def test_mlp_rejects_bad_sizes_naming_them(kwargs: dict[str, int]) -> None:
    bad = next(k for k, v in kwargs.items() if v < 1)
    with pytest.raises(ValueError, match=bad):
        mlp(**kwargs)


# ---------------------------------------------------------------- ClarHead


def test_clar_head_sizes() -> None:
    head = ClarHead(IN, HIDDEN, PROJ, OUT)
    assert _linear_shapes(head) == [(IN, HIDDEN), (HIDDEN, PROJ), (PROJ, OUT)]
    z, logits = head(_h())
    assert z.shape == (B, PROJ)
    assert logits.shape == (B, OUT)


def test_paper_clar_logits_are_the_third_layer_on_the_relu_of_z() -> None:
    head = ClarHead(IN, HIDDEN, PROJ, OUT, style="paper")
    with torch.no_grad():
        z, logits = head(_h(batch=64))
    fc3 = head.classifier[-1]
    torch.testing.assert_close(logits, fc3(torch.relu(z)))
    assert fc3.bias is not None
    assert float(z.min()) < 0  # z is taken before the ReLU


def test_code_clar_logits_read_batch_normed_z_without_a_bias() -> None:
    # semi_supervised.py: z = Linear, BN, ReLU, Linear; class_out = BN(z), ReLU, Linear(no bias).
    torch.manual_seed(0)
    head = ClarHead(IN, HIDDEN, PROJ, OUT).train()
    assert [type(m) for m in head.projection] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    h = _h(batch=64)
    with torch.no_grad():
        z, logits = head(h)
    fc3 = head.classifier[-1]
    assert fc3.bias is None
    expected = fc3(torch.relu(nn.functional.batch_norm(z, None, None, training=True)))
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    # The class layer sees z's batch-normalised values: scaling z leaves the logits alone.
    with torch.no_grad():
        assert torch.allclose(head.classifier(3.0 * z), logits, atol=1e-3)  # up to BN's eps
    assert float(z.min()) < 0


def test_clar_head_both_outputs_reach_the_encoder_side() -> None:
    head = ClarHead(IN, HIDDEN, PROJ, OUT)
    h = _h().requires_grad_()
    z, logits = head(h)
    (g_z,) = torch.autograd.grad(z.sum(), h, retain_graph=True)
    (g_logits,) = torch.autograd.grad(logits.sum(), h)
    assert float(g_z.abs().sum()) > 0 and float(g_logits.abs().sum()) > 0


def test_clar_head_loss_falls_under_sgd() -> None:
    torch.manual_seed(0)
    head = ClarHead(IN, HIDDEN, PROJ, OUT)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
    h, labels = _h(batch=16), torch.arange(16) % OUT
    losses = []
    for _ in range(20):
        z, logits = head(h)
        loss = nn.functional.cross_entropy(logits, labels) + z.square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


# ---------------------------------------------------------------- ClusterHead


def test_cluster_head_sizes_and_probabilities() -> None:
    head = ClusterHead(IN, HIDDEN, OUT)
    assert _linear_shapes(head) == [(IN, HIDDEN), (HIDDEN, OUT)]
    p = head(_h())
    assert p.shape == (B, OUT) and p.dtype == torch.float32
    assert bool((p >= 0).all())
    torch.testing.assert_close(p.sum(dim=1), torch.ones(B))


def test_cluster_head_is_float32_under_autocast() -> None:
    head = ClusterHead(IN, HIDDEN, OUT)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p = head(_h())
    assert p.dtype == torch.float32
    torch.testing.assert_close(p.sum(dim=1), torch.ones(B))


def test_cluster_head_rejects_zero_clusters() -> None:
    with pytest.raises(ValueError, match="num_clusters"):
        ClusterHead(IN, HIDDEN, 0)
