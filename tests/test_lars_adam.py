"""LARS over Adam against a hand-written copy of the released code's optimiser.

The reference below is Lightning Bolts 0.2.2's ``LARSWrapper`` step (eta 0.02, clip, eps 1e-8)
around ``torch.optim.Adam``, written out per parameter: rescale every gradient, hide the
weight decay from Adam, step, restore it.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clar_ray.optim import LarsAdam, param_groups


def _reference_step(adam: torch.optim.Adam, eta: float = 0.02, eps: float = 1e-8) -> None:
    decays = []
    with torch.no_grad():
        for group in adam.param_groups:
            decays.append(group.get("weight_decay", 0))
            group["weight_decay"] = 0
            for p in group["params"]:
                if p.grad is None:
                    continue
                p_norm, g_norm = torch.norm(p.data), torch.norm(p.grad.data)
                if p_norm != 0 and g_norm != 0:
                    new_lr = (eta * p_norm) / (g_norm + p_norm * decays[-1] + eps)
                    new_lr = min(new_lr / group["lr"], 1)
                    p.grad.data += decays[-1] * p.data
                    p.grad.data *= new_lr
    adam.step()
    for group, decay in zip(adam.param_groups, decays):
        group["weight_decay"] = decay


def _net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, 3))


def _loss(net: nn.Module, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    x, y = torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)
    return nn.functional.cross_entropy(net(x), y)


@pytest.mark.parametrize("lrs", [[0.0, 0.3, 1.0, 1.0, 0.5], [1e-3] * 5])
def test_lars_adam_equals_the_released_wrapper_over_adam(lrs: list[float]) -> None:
    ours, reference = _net(), _net()
    opt = LarsAdam(param_groups(ours, 1e-6), lr=lrs[0])
    ref = torch.optim.Adam(param_groups(reference, 1e-6), lr=lrs[0])
    for step, lr in enumerate(lrs):  # a warmup from 0, then clip active (lr=1) and not (1e-3)
        for optimizer in (opt, ref):
            for group in optimizer.param_groups:
                group["lr"] = lr
        for net, optimizer in ((ours, opt), (reference, ref)):
            optimizer.zero_grad()
            _loss(net, step).backward()
        opt.step()
        _reference_step(ref)
        for a, b in zip(ours.parameters(), reference.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-6, 0.0]  # restored
    assert any(float(p.detach().abs().sum()) > 0 for p in ours.parameters())


def test_lars_adam_differs_from_plain_adam() -> None:
    # The rescaling is not a no-op: with the clip active (lr=1) Adam on scaled gradients
    # takes other steps than Adam on the raw ones once the ratios change between steps.
    ours, plain = _net(), _net()
    opt = LarsAdam(param_groups(ours, 1e-6), lr=1.0)
    adam = torch.optim.Adam(param_groups(plain, 1e-6), lr=1.0)
    for step in range(4):
        for net, optimizer in ((ours, opt), (plain, adam)):
            optimizer.zero_grad()
            _loss(net, step).backward()
            optimizer.step()
    diffs = [float((a - b).detach().abs().max())
             for a, b in zip(ours.parameters(), plain.parameters())]
    assert max(diffs) > 1e-3


def test_lars_adam_loss_falls() -> None:
    net = _net()
    opt = LarsAdam(param_groups(net, 1e-6), lr=0.01)
    x = torch.randn(32, 5, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    first = nn.functional.cross_entropy(net(x), y).item()
    for _ in range(50):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    assert nn.functional.cross_entropy(net(x), y).item() < 0.5 * first


def test_lars_adam_rejects_a_bad_trust_coefficient() -> None:
    with pytest.raises(ValueError, match="trust_coefficient"):
        LarsAdam(_net().parameters(), lr=0.1, trust_coefficient=0.0)
