"""Learning-rate schedule: linear warmup then cosine decay, per step.

:func:`lr_at` is the pure function; :func:`warmup_cosine` wraps it in a ``LambdaLR`` for
optimizers whose groups have their own base learning rates. :func:`scaled_lr` is the linear
scaling rule (Goyal et al. 2017) that SimCLR and CLAR use: lr = 1.0 at batch 1024.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["lr_at", "scaled_lr", "warmup_cosine"]


def lr_at(
    step: int,
    *,
    base_lr: float,
    warmup_steps: int,
    total_steps: int,
    final_lr: float = 0.0,
) -> float:
    """Return the learning rate for optimizer step ``step`` (0-based).

    Warmup: ``base_lr * (step + 1) / warmup_steps`` for ``step < warmup_steps`` (the first
    step already moves; ``warmup_steps - 1`` reaches ``base_lr``). Then cosine from ``base_lr``
    at ``step == warmup_steps`` to ``final_lr`` at ``step == total_steps``; later steps stay at
    ``final_lr``.

    Args:
        step: Step index, >= 0.
        base_lr: Peak learning rate, >= 0.
        warmup_steps: Steps of linear warmup, in ``[0, total_steps]``.
        total_steps: Length of the schedule, > 0.
        final_lr: Learning rate at the end, in ``[0, base_lr]``.

    Returns:
        The learning rate.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"warmup_steps must lie in [0, total_steps={total_steps}], got {warmup_steps}"
        )
    if not base_lr >= 0:
        raise ValueError(f"base_lr must be >= 0, got {base_lr}")
    if not 0 <= final_lr <= base_lr:
        raise ValueError(f"final_lr must lie in [0, base_lr={base_lr}], got {final_lr}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return final_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return final_lr + 0.5 * (base_lr - final_lr) * (1.0 + math.cos(math.pi * progress))


def scaled_lr(lr: float, batch_size: int, reference_batch: int = 1024) -> float:
    """Linear scaling rule: ``lr * batch_size / reference_batch``.

    Args:
        lr: Learning rate at ``reference_batch`` (SimCLR/CLAR: 1.0 at 1024 for LARS).
        batch_size: Global batch size (clips, not views), > 0.
        reference_batch: Batch size at which ``lr`` was tuned, > 0.

    Returns:
        The scaled learning rate.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    if reference_batch <= 0:
        raise ValueError(f"reference_batch must be > 0, got {reference_batch}")
    if not lr >= 0:
        raise ValueError(f"lr must be >= 0, got {lr}")
    return lr * batch_size / reference_batch


def warmup_cosine(
    optimizer: Optimizer,
    *,
    warmup_steps: int,
    total_steps: int,
    final_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Wrap :func:`lr_at` in a ``LambdaLR``: each group's lr follows the schedule from its own base.

    Call ``scheduler.step()`` once after every ``optimizer.step()``.

    Args:
        optimizer: Optimizer whose groups' ``lr`` are the peak learning rates.
        warmup_steps: As in :func:`lr_at`.
        total_steps: As in :func:`lr_at`.
        final_lr_ratio: Final lr as a fraction of each group's peak, in [0, 1].

    Returns:
        The scheduler (already applied for step 0).
    """
    if not 0.0 <= final_lr_ratio <= 1.0:
        raise ValueError(f"final_lr_ratio must lie in [0, 1], got {final_lr_ratio}")
    lr_at(0, base_lr=1.0, warmup_steps=warmup_steps, total_steps=total_steps)  # validate early

    def factor(step: int) -> float:
        return lr_at(
            step,
            base_lr=1.0,
            warmup_steps=warmup_steps,
            total_steps=total_steps,
            final_lr=final_lr_ratio,
        )

    return LambdaLR(optimizer, factor)
