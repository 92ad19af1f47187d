"""LARS over Adam: the optimiser of CLAR's released code.

The authors' code trains with ``LARSWrapper(Adam(params, lr=1.0))`` from Lightning Bolts 0.2.2
(``pl_bolts.optimizers.lars_scheduling``). Before Adam's step the wrapper rescales each
parameter tensor's gradient ``g`` (w its weights, lr the group's current learning rate, wd the
group's weight decay)::

    if ||w|| > 0 and ||g|| > 0:
        r = eta * ||w|| / (||g|| + wd * ||w|| + eps)
        r = min(r / lr, 1)                       # clip=True
        g = (g + wd * w) * r

and hides ``weight_decay`` from Adam for that step (decay enters only through ``g``). Every
parameter gets the rescaling, the ones excluded from weight decay (biases and normalisation,
chosen by :func:`clar_ray.optim.lars.param_groups`) too, with ``wd = 0``; the ``exclude_from_lars``
flag of those groups only removes their weight decay here, as in the released code. Defaults are
the wrapper's: ``eta = 0.02``, ``eps = 1e-8``; Adam's betas and epsilon are PyTorch's.

Since Adam divides by a running root mean square of what it is given, the rescaled gradient is
close to ``eta * ||w|| * g / ||g||`` per layer: the update size follows the learning rate and the
direction follows the layer's normalised gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["LarsAdam", "lars_scale_"]


@torch.no_grad()
def lars_scale_(p: Tensor, lr: float, weight_decay: float, eta: float, eps: float) -> None:
    """Rescale ``p.grad`` in place by the wrapper's clipped trust ratio (see the module doc).

    Args:
        p: A parameter with a gradient.
        lr: The group's learning rate of this step (the clip divides by it).
        weight_decay: The group's weight decay (added to the gradient before scaling).
        eta: Trust coefficient.
        eps: Keeps the ratio finite.
    """
    assert p.grad is not None
    w_norm = torch.linalg.vector_norm(p)
    g_norm = torch.linalg.vector_norm(p.grad)
    if not (bool(w_norm != 0) and bool(g_norm != 0)):
        return
    ratio = eta * w_norm / (g_norm + w_norm * weight_decay + eps)
    ratio = torch.clamp(ratio / lr, max=1.0) if lr > 0 else torch.ones_like(ratio)
    p.grad.add_(p, alpha=weight_decay).mul_(ratio)


class LarsAdam(torch.optim.Adam):
    """Adam whose gradients are rescaled by LARS's clipped trust ratio before each step.

    Args:
        params: Parameters or groups; a group's ``weight_decay`` is applied through the
            gradient as the wrapper does (Adam's own L2 term stays off).
        lr: Learning rate (the schedule's value of the step).
        trust_coefficient: eta of the wrapper (0.02).
        eps: The trust ratio's epsilon (1e-8).
        betas: Adam's betas.
        adam_eps: Adam's epsilon.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float,
                 trust_coefficient: float = 0.02, eps: float = 1e-8,
                 betas: tuple[float, float] = (0.9, 0.999), adam_eps: float = 1e-8) -> None:
        if not trust_coefficient > 0:
            raise ValueError(f"trust_coefficient must be > 0, got {trust_coefficient}")
        self.trust_coefficient, self.trust_eps = trust_coefficient, eps
        super().__init__(params, lr=lr, betas=betas, eps=adam_eps)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Rescale every gradient, then take Adam's step with its weight decay hidden."""
        decays = []
        for group in self.param_groups:
            decays.append(group["weight_decay"])
            group["weight_decay"] = 0.0
            for p in group["params"]:
                if p.grad is not None:
                    lars_scale_(p, float(group["lr"]), float(decays[-1]),
                                self.trust_coefficient, self.trust_eps)
        try:
            return super().step(closure)
        finally:
            for group, decay in zip(self.param_groups, decays):
                group["weight_decay"] = decay
