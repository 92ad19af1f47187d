"""LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg 2017, arXiv:1708.03888).

Each parameter tensor w (a "layer") gets a local learning rate from the trust ratio
``eta * ||w|| / (||g|| + beta * ||w|| + eps)`` (the paper's Algorithm 1, with ``eta`` the trust
coefficient and ``beta`` the weight decay); the update direction ``g + beta * w`` is scaled by it
and fed to heavy-ball momentum, and the global learning rate multiplies the momentum buffer
(PyTorch's SGD convention, so a scheduler that changes ``lr`` acts at once).

Groups flagged ``exclude_from_lars=True`` (biases and normalisation parameters, chosen by
:func:`param_groups`) get plain momentum SGD with neither weight decay nor trust ratio, as in
SimCLR.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

__all__ = ["LARS", "NORM_LAYERS", "param_groups"]

#: Module types whose parameters are normalisation parameters (excluded from WD and LARS).
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split a model's trainable parameters into a LARS group and an excluded group.

    Excluded (``weight_decay=0``, ``exclude_from_lars=True``): every parameter of a
    normalisation module (any type in :data:`NORM_LAYERS`, chosen by module type, whatever the
    module is called) and every parameter registered as ``bias`` on its module. Everything else
    gets ``weight_decay`` and trust-ratio adaptation. Shared parameters appear once; frozen
    ones (``requires_grad=False``) are left out; empty groups are dropped.

    Args:
        model: The model to optimise.
        weight_decay: Weight decay of the LARS group (>= 0).

    Returns:
        Optimizer parameter groups.
    """
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    seen: set[int] = set()
    adapted: list[nn.Parameter] = []
    excluded: list[nn.Parameter] = []
    for module in model.modules():
        is_norm = isinstance(module, NORM_LAYERS)
        for local_name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (excluded if is_norm or local_name == "bias" else adapted).append(p)
    groups: list[dict[str, Any]] = []
    if adapted:
        groups.append({"params": adapted, "weight_decay": weight_decay, "exclude_from_lars": False})
    if excluded:
        groups.append({"params": excluded, "weight_decay": 0.0, "exclude_from_lars": True})
    return groups


class LARS(Optimizer):
    """LARS with heavy-ball momentum.

    Per parameter w with gradient g, in a group that is not excluded:
    ``d = g + wd * w``; ``d *= eta * ||w|| / (||g|| + wd * ||w|| + eps)`` when ``||w|| > 0``
    and ``||g|| > 0`` (else the ratio is 1); ``buf = momentum * buf + d``; ``w -= lr * buf``.
    In an excluded group ``d = g``.

    Args:
        params: Parameters or groups (see :func:`param_groups`); a group may set
            ``exclude_from_lars``, ``weight_decay``, ``lr``, ``momentum``.
        lr: Learning rate (the schedule's value, e.g. from ``lr_at``).
        momentum: Heavy-ball momentum.
        weight_decay: Default weight decay.
        trust_coefficient: eta of the paper.
        eps: Keeps the trust ratio finite.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
    ) -> None:
        for name, value in (
            ("lr", lr),
            ("momentum", momentum),
            ("weight_decay", weight_decay),
            ("trust_coefficient", trust_coefficient),
            ("eps", eps),
        ):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
            "eps": eps,
            "exclude_from_lars": False,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one optimisation step.

        Args:
            closure: Optional closure that re-evaluates the model and returns the loss.

        Returns:
            The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            exclude = bool(group["exclude_from_lars"])
            wd = 0.0 if exclude else float(group["weight_decay"])
            eta, eps = float(group["trust_coefficient"]), float(group["eps"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                d = p.grad.clone()
                if not exclude:
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(d)
                    ratio = eta * w_norm / (g_norm + wd * w_norm + eps)
                    ratio = torch.where((w_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio))
                    if wd:
                        d.add_(p, alpha=wd)
                    d.mul_(ratio)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = d
                else:
                    buf.mul_(group["momentum"]).add_(d)
                p.add_(buf, alpha=-group["lr"])
        return loss
