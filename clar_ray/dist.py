"""Distributed helpers that degrade to no-ops outside ``torch.distributed``.

Every function here works in a plain single process (rank 0 of a world of 1) and inside a
DDP process group (Ray Train sets one up with gloo on CPU, NCCL on GPU), so the training loop
and the losses never branch on whether they run distributed.

The gradient convention: DDP *averages* parameter gradients over the W workers. If every worker
computes a loss ``L_w`` whose mean over workers is the loss ``L`` of the concatenated global
batch, and the backward of :func:`gather_with_grad` hands each worker the *sum* over workers of
the gradients that reach its own rows, the averaged gradient is exactly ``dL/dtheta``:
``(1/W) sum_v sum_w dL_w/dz_v dz_v/dtheta = d(mean_w L_w)/dtheta``. The losses in
:mod:`clar_ray.objectives` are written to that contract.

Legend: n = rows on this worker, W = world size, D = feature size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as torch_dist
from torch import Tensor

__all__ = [
    "all_gather",
    "all_gather_sizes",
    "all_reduce_mean",
    "all_reduce_sum",
    "gather_with_grad",
    "global_count",
    "is_distributed",
    "local_offset",
    "rank",
    "world_size",
]


def is_distributed() -> bool:
    """Return True inside an initialised ``torch.distributed`` process group of any size."""
    return torch_dist.is_available() and torch_dist.is_initialized()


def rank() -> int:
    """Return this worker's rank, 0 outside a process group."""
    return torch_dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Return the number of workers, 1 outside a process group."""
    return torch_dist.get_world_size() if is_distributed() else 1


def all_gather_sizes(n: int, device: torch.device | str = "cpu") -> list[int]:
    """Return every worker's row count, in rank order.

    Args:
        n: Rows on this worker.
        device: Device of the small tensor used for the collective (CUDA under NCCL).

    Returns:
        ``[n_0, ..., n_{W-1}]``; ``[n]`` outside a process group.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not is_distributed():
        return [n]
    local = torch.tensor([n], dtype=torch.int64, device=device)
    out = [torch.zeros_like(local) for _ in range(world_size())]
    torch_dist.all_gather(out, local)
    return [int(t.item()) for t in out]


def local_offset(n: int, device: torch.device | str = "cpu") -> int:
    """Return the position of this worker's first row in the gathered global batch.

    Args:
        n: Rows on this worker.
        device: Device for the collective.

    Returns:
        ``sum(n_r for r < rank)``; 0 outside a process group.
    """
    return sum(all_gather_sizes(n, device)[: rank()])


def global_count(n: int, device: torch.device | str = "cpu") -> int:
    """Return the sum over workers of ``n`` (e.g. labelled rows in the global batch)."""
    return sum(all_gather_sizes(n, device))


def _gather_padded(x: Tensor, sizes: list[int]) -> Tensor:
    """All-gather rows of possibly unequal count: pad to the largest, gather, strip."""
    max_n = max(sizes)
    if x.shape[0] != max_n:
        pad = x.new_zeros((max_n - x.shape[0], *x.shape[1:]))
        x = torch.cat([x, pad], dim=0)
    parts = [torch.empty_like(x) for _ in sizes]
    torch_dist.all_gather(parts, x.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes)], dim=0)


def _check_sizes(x: Tensor, sizes: list[int] | None) -> list[int]:
    if x.dim() < 1:
        raise ValueError(f"expected a tensor with a row dimension, got shape {tuple(x.shape)}")
    if sizes is None:
        return all_gather_sizes(x.shape[0], x.device)
    if len(sizes) != world_size() or sizes[rank()] != x.shape[0]:
        raise ValueError(
            f"sizes {sizes} do not match world size {world_size()} and this worker's "
            f"{x.shape[0]} rows at rank {rank()}"
        )
    return sizes


def all_gather(x: Tensor, sizes: list[int] | None = None) -> Tensor:
    """Concatenate every worker's rows in rank order, without gradient.

    For labels, ids and other tensors that need no gradient. Workers may hold different row
    counts; the trailing dimensions must agree.

    Args:
        x: ``(n, ...)`` rows on this worker.
        sizes: Every worker's row count if already known (saves one collective).

    Returns:
        ``(sum_r n_r, ...)``; ``x`` itself outside a process group.
    """
    if not is_distributed():
        return x
    sizes = _check_sizes(x, sizes)
    with torch.no_grad():
        return _gather_padded(x.detach(), sizes)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums the incoming gradients over workers and keeps own rows."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, sizes: list[int]) -> Tensor:
        ctx.start = sum(sizes[: rank()])
        ctx.n = x.shape[0]
        return _gather_padded(x, sizes)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        grad = grad_output.contiguous().clone()
        torch_dist.all_reduce(grad, op=torch_dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.start + ctx.n], None


def gather_with_grad(x: Tensor, sizes: list[int] | None = None) -> Tensor:
    """All-gather rows from every worker, keeping the autograd graph to the local rows.

    The backward pass returns to each worker the sum over workers of the gradients that reach
    its own slice, as a proper autograd all-gather must (see the module docstring for why this,
    together with DDP's gradient averaging, gives the gradient of the global-batch loss).
    Workers may hold different row counts.

    Args:
        x: ``(n, D)`` rows on this worker (any trailing shape).
        sizes: Every worker's row count if already known (saves one collective).

    Returns:
        ``(sum_r n_r, D)`` rows in rank order; ``x`` itself outside a process group.
    """
    if not is_distributed():
        return x
    sizes = _check_sizes(x, sizes)
    out: Tensor = _GatherWithGrad.apply(x, sizes)
    return out


def all_reduce_sum(x: Tensor) -> Tensor:
    """Return the elementwise sum of ``x`` over workers (a new tensor, no gradient)."""
    out = x.detach().clone()
    if is_distributed():
        torch_dist.all_reduce(out, op=torch_dist.ReduceOp.SUM)
    return out


def all_reduce_mean(x: Tensor) -> Tensor:
    """Return the elementwise mean of ``x`` over workers (a new tensor, no gradient).

    For logging a metric averaged over workers; integer tensors are averaged as float.
    """
    out = all_reduce_sum(x if x.is_floating_point() else x.float())
    return out / world_size()


def all_finite(x: Tensor) -> bool:
    """True when ``x`` is finite on every worker (the same answer on all of them)."""
    bad = (~torch.isfinite(x.detach())).any().to(torch.float32)
    return bool(all_reduce_sum(bad.reshape(1)).item() == 0)
