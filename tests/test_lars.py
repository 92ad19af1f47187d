"""Tests for clar_ray.optim.lars: groups by module type, hand-computed steps, zero norms."""

from __future__ import annotations

import math
from collections.abc import Iterable

import pytest
import torch
from torch import nn

from clar_ray.optim import LARS, param_groups


class Scale(nn.Module):
    """A custom layer whose parameter names merely contain 'bias' and 'norm'."""

    def __init__(self) -> None:
        super().__init__()
        self.bias_scale = nn.Parameter(torch.ones(4))
        self.norm_weight = nn.Parameter(torch.ones(4, 4))


class Misnamed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj_weight = nn.BatchNorm1d(4)  # a norm layer with a misleading name
        self.bn = nn.Linear(4, 4)  # a linear layer called "bn"
        self.shared = self.bn  # the same parameters reached twice
        self.gn = nn.GroupNorm(2, 4)
        self.ln = nn.LayerNorm(4)
        self.inorm = nn.InstanceNorm1d(4, affine=True)
        self.conv = nn.Conv1d(4, 4, 3, bias=False)
        self.scale = Scale()
        self.frozen = nn.Linear(4, 4).requires_grad_(False)


def ids(params: Iterable[torch.Tensor]) -> set[int]:
    return {id(p) for p in params}


def test_param_groups_exclude_by_module_type_not_by_name() -> None:
    m = Misnamed()
    groups = param_groups(m, weight_decay=1e-6)
    assert len(groups) == 2
    adapted, excluded = groups
    assert adapted["weight_decay"] == 1e-6 and adapted["exclude_from_lars"] is False
    assert excluded["weight_decay"] == 0.0 and excluded["exclude_from_lars"] is True
    expected_adapted = [m.bn.weight, m.conv.weight, m.scale.bias_scale, m.scale.norm_weight]
    expected_excluded = [
        m.proj_weight.weight,
        m.proj_weight.bias,
        m.bn.bias,
        m.gn.weight,
        m.gn.bias,
        m.ln.weight,
        m.ln.bias,
        m.inorm.weight,
        m.inorm.bias,
    ]
    assert ids(adapted["params"]) == ids(expected_adapted)
    assert ids(excluded["params"]) == ids(expected_excluded)
    # Each parameter once; frozen ones left out.
    assert len(adapted["params"]) + len(excluded["params"]) == len(ids(expected_adapted)) + len(
        ids(expected_excluded)
    )


def test_param_groups_drop_empty_groups_and_reject_negative_decay() -> None:
    groups = param_groups(nn.Linear(3, 2, bias=False), 0.1)
    assert len(groups) == 1 and groups[0]["exclude_from_lars"] is False
    with pytest.raises(ValueError, match="-0.1"):
        param_groups(nn.Linear(3, 2), -0.1)


def test_two_lars_steps_match_hand_computation() -> None:
    lr, wd, eta, mom = 0.5, 0.1, 0.001, 0.9
    w = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    g = [0.6, 0.8]
    opt = LARS([{"params": [w]}], lr=lr, momentum=mom, weight_decay=wd, trust_coefficient=eta)

    def hand_d(wv: list[float]) -> list[float]:
        w_norm = math.hypot(*wv)
        ratio = eta * w_norm / (math.hypot(*g) + wd * w_norm + 1e-8)
        return [(gi + wd * wi) * ratio for gi, wi in zip(g, wv)]

    w0 = [3.0, 4.0]
    d1 = hand_d(w0)  # ratio = 0.005 / 1.5; d1 = [0.003, 0.004]
    assert d1 == pytest.approx([0.003, 0.004])
    w1 = [wi - lr * di for wi, di in zip(w0, d1)]
    d2 = hand_d(w1)
    buf = [mom * a + b for a, b in zip(d1, d2)]
    w2 = [wi - lr * bi for wi, bi in zip(w1, buf)]
    for expected in (w1, w2):
        w.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        assert w.detach().tolist() == pytest.approx(expected, rel=1e-12)


def test_excluded_group_is_plain_momentum_sgd_without_decay() -> None:
    b = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = LARS(
        [{"params": [b], "exclude_from_lars": True, "weight_decay": 0.1}], lr=0.1, momentum=0.9
    )
    b.grad = torch.tensor([0.5, 0.5], dtype=torch.float64)
    opt.step()
    assert b.detach().tolist() == pytest.approx([0.95, -2.05])
    opt.step()  # buf = 0.9 * g + g
    assert b.detach().tolist() == pytest.approx([0.95 - 0.1 * 0.95, -2.05 - 0.1 * 0.95])


def test_zero_norm_parameter_gets_no_nan() -> None:
    w = nn.Parameter(torch.zeros(3))
    still = nn.Parameter(torch.zeros(2))
    opt = LARS([w, still], lr=0.1, weight_decay=0.01)
    w.grad = torch.tensor([1.0, 2.0, 2.0])
    still.grad = torch.zeros(2)
    opt.step()
    # ||w|| = 0: trust ratio 1, so the zero-initialised weight still moves.
    torch.testing.assert_close(w.detach(), torch.tensor([-0.1, -0.2, -0.2]))
    torch.testing.assert_close(still.detach(), torch.zeros(2))
    assert torch.isfinite(w).all() and torch.isfinite(still).all()


def test_bad_hyperparameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="momentum"):
        LARS(nn.Linear(2, 2).parameters(), lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError, match="lr"):
        LARS(nn.Linear(2, 2).parameters(), lr=-1.0)


def test_lars_with_param_groups_reduces_a_regression_loss() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
    x = torch.randn(64, 5)
    y = x @ torch.randn(5, 1)
    opt = LARS(param_groups(model, 1e-6), lr=0.2)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
