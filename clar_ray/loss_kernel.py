"""The masked contrastive kernel every loss of :mod:`clar_ray.objectives` reduces to.

:func:`soft_target_cross_entropy` is cross-entropy over temperature-scaled cosine logits with
positives where integer keys match (one positive: NT-Xent; several: SupCon), the anchor itself
left out. Around it, the distributed bookkeeping: :func:`gather_rows` normalises the local rows
and gathers rows and keys from every worker (:mod:`clar_ray.dist`), and :func:`global_mean`
scales a worker's sum so that the mean over workers is the mean over the global batch. The
argument checks the losses share sit here too. Nothing here reads a config.

Legend: n = anchors (local rows), M = candidates (the gathered global batch), D = embedding size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from clar_ray import dist

__all__ = [
    "MASKED",
    "check_keys",
    "check_rows",
    "check_temperature",
    "gather_rows",
    "global_mean",
    "no_autocast",
    "soft_target_cross_entropy",
]

MASKED = torch.finfo(torch.float32).min  # logit of excluded (self) pairs; finite, so 0*x == 0


def no_autocast(t: Tensor) -> torch.autocast:
    """A context that turns autocast off on ``t``'s device: the losses compute in float32."""
    return torch.autocast(device_type=t.device.type, enabled=False)


def check_temperature(name: str, value: float) -> None:
    """Raise a ValueError naming ``name`` unless ``value > 0``."""
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def check_rows(name: str, x: Tensor, ndim: int, rows: int | None = None) -> None:
    """Raise a ValueError naming ``name`` unless ``x`` has ``ndim`` dims (and ``rows`` rows)."""
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(x.shape)}")
    if rows is not None and x.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows, got shape {tuple(x.shape)}")


def global_mean(local_sum: Tensor, n_global: int) -> Tensor:
    """Per-worker share of a mean over the global batch: mean over workers == global mean."""
    if n_global == 0:
        return local_sum * 0.0
    return local_sum * (dist.world_size() / n_global)


def soft_target_cross_entropy(
    anchors: Tensor,
    anchor_keys: Tensor,
    candidates: Tensor,
    candidate_keys: Tensor,
    temperature: float,
    self_offset: int | None,
) -> Tensor:
    """Per-anchor contrastive loss with positives where keys match.

    ``loss_i = -1/|P(i)| sum_{p in P(i)} log softmax_j(a_i . c_j / T)[p]``, the softmax over all
    candidates except the anchor itself; computed as cross-entropy with soft targets.

    Args:
        anchors: ``(n, D)`` L2-normalised float32 rows.
        anchor_keys: ``(n,)`` integer keys.
        candidates: ``(M, D)`` L2-normalised float32 rows.
        candidate_keys: ``(M,)`` integer keys.
        temperature: Softmax temperature.
        self_offset: If the anchors are also candidates, the candidate index of anchor 0
            (anchor i is candidate ``self_offset + i``); None if they are not.

    Returns:
        ``(n,)`` per-anchor losses.
    """
    logits = anchors @ candidates.T / temperature  # (n, M)
    positives = anchor_keys[:, None] == candidate_keys[None, :]  # (n, M)
    if self_offset is not None:
        n = anchors.shape[0]
        rows = torch.arange(n, device=anchors.device)
        is_self = torch.zeros_like(positives)
        is_self[rows, rows + self_offset] = True
        positives = positives & ~is_self
        logits = logits.masked_fill(is_self, MASKED)
    n_pos = positives.sum(dim=1)  # (n,)
    n_missing = dist.all_reduce_sum((n_pos == 0).sum())
    if int(n_missing.item()) > 0:
        bad = anchor_keys[n_pos == 0]
        raise ValueError(
            f"{int(n_missing.item())} anchor(s) in the global batch have no positive; "
            f"local keys without a partner: {bad[:8].tolist()} (each key needs >= 2 rows)"
        )
    if bool((n_pos == 1).all()):  # one positive per row (NT-Xent): class-index targets
        return F.cross_entropy(logits, positives.byte().argmax(dim=1), reduction="none")
    targets = positives.float() / n_pos[:, None].float()
    return F.cross_entropy(logits, targets, reduction="none")


def gather_rows(z: Tensor, keys: Tensor) -> tuple[Tensor, Tensor, Tensor, int, int]:
    """Normalise local rows and gather rows and keys from all workers.

    Returns:
        ``(z_local (n, D), z_all (M, D), keys_all (M,), offset, M)`` with ``offset`` the index
        of the first local row in the gathered batch.
    """
    n = z.shape[0]
    z = F.normalize(z.float(), dim=1)
    sizes = dist.all_gather_sizes(n, z.device)
    z_all = dist.gather_with_grad(z, sizes)
    keys_all = dist.all_gather(keys, sizes)
    return z, z_all, keys_all, sum(sizes[: dist.rank()]), sum(sizes)


def check_keys(name: str, z: Tensor, keys: Tensor) -> None:
    """Check ``z (n, D)`` and its integer ``keys (n,)``; errors name ``name``."""
    check_rows("z", z, 2)
    check_rows(name, keys, 1, z.shape[0])
    if keys.is_floating_point():
        raise ValueError(f"{name} must be an integer tensor, got dtype {keys.dtype}")
