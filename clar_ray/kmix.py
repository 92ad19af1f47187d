"""SLICER's k-mix: label-free mixup of log-mel spectrograms with partners from far clusters.

k-mix is SLICER's input transform (Seth et al., ICASSP 2023): :class:`clar_ray.methods.Slicer`
applies it to the student's log-power input during training (``objective.kmix``). It acts on
spectrograms inside the model step, not on waveforms in the stream, so it is not one of the
augmentations of :mod:`clar_ray.augment`. See :func:`kmix`.

Legend: B examples in a batch, T frames, M memory items, K clusters, D embedding size.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor


def kmix_embedding(x: Tensor) -> Tensor:
    """The features k-mix clusters on: the mean over time, flattened: (B, ..., T) → (B, D)."""
    return x.mean(dim=-1).flatten(1)


def spherical_kmeans(features: Tensor, num_clusters: int, generator: torch.Generator, *,
                     iterations: int = 20) -> Tensor:
    """Spherical k-means (cosine similarity), as SLICER clusters its dataset before training.

    Args:
        features: (N, D) embeddings, e.g. :func:`kmix_embedding` of the whole training set.
        num_clusters: K (SLICER's configuration: 4).
        generator: Chooses the initial centroids (K distinct rows).
        iterations: Assignment/update rounds (SLICER: 20).

    Returns:
        (K, D) unit-norm centroids.
    """
    if not 0 < num_clusters <= features.shape[0]:
        raise ValueError(f"num_clusters must be in [1, {features.shape[0]}], got {num_clusters}")
    points = torch.nn.functional.normalize(features.float(), dim=1)
    first = torch.randperm(points.shape[0], generator=generator,
                           device=generator.device)[:num_clusters].to(points.device)
    centroids = points[first].clone()
    for _ in range(iterations):
        assign = (points @ centroids.T).argmax(dim=1)  # (N,)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=num_clusters)[:, None]
        centroids = torch.where(counts > 0, torch.nn.functional.normalize(sums, dim=1),
                                centroids)
    return centroids


def kmix_partners(
    x_embedding: Tensor,
    pool_embedding: Tensor,
    generator: torch.Generator,
    *,
    max_ratio: float = 0.4,
    centroids: Tensor | None = None,
    top_k: int | None = 128,
    exclude_self: bool = True,
) -> tuple[Tensor, Tensor]:
    """Choose each example's mixing partner in the pool and its mixing weight.

    Args:
        x_embedding: (B, D) embeddings of the batch.
        pool_embedding: (M, D) embeddings of the candidates (the batch itself, or a memory).
        generator: Source of the weights and of the choice among candidates.
        max_ratio: alpha; weights are drawn from U(0, alpha).
        centroids: (K, D) cluster centroids; None picks partners uniformly (BYOL-A mixup).
        top_k: Choose among the first ``top_k`` candidates (pool order) only; None for all.
        exclude_self: Row i of the batch is pool item i and is not its own partner.

    Returns:
        ``(partners (B,) int64, weights (B,) float32)``; a row without any candidate gets
        itself as partner and weight 0.
    """
    if not 0.0 <= max_ratio <= 1.0:
        raise ValueError(f"max_ratio must be in [0, 1], got {max_ratio}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    batch, pool = x_embedding.shape[0], pool_embedding.shape[0]
    device = x_embedding.device
    weights = max_ratio * torch.rand(batch, generator=generator, device=generator.device)
    choice = torch.rand(batch, generator=generator, device=generator.device)
    weights, choice = weights.to(device), choice.to(device)
    not_self = torch.ones(batch, pool, dtype=torch.bool, device=device)
    if exclude_self:
        not_self &= torch.arange(pool, device=device)[None, :] != torch.arange(
            batch, device=device)[:, None]
    if centroids is None:
        candidates = not_self
    else:
        unit = torch.nn.functional.normalize(centroids.float().to(device), dim=1)  # (K, D)
        cluster_x = (torch.nn.functional.normalize(x_embedding.float(), dim=1) @ unit.T).argmax(1)
        cluster_pool = (torch.nn.functional.normalize(pool_embedding.float(), dim=1)
                        @ unit.T).argmax(1)
        in_cluster = cluster_pool[None, None, :] == torch.arange(
            unit.shape[0], device=device)[None, :, None]  # (1, K, M)
        available = (in_cluster & not_self[:, None, :]).sum(dim=2)  # (B, K)
        distance = torch.cdist(unit, unit)[cluster_x]  # (B, K): from each row's own cluster
        score = torch.where(available > 0, distance, torch.full_like(distance, -1.0))
        target = score.argmax(dim=1)  # the farthest cluster that has a candidate
        candidates = (cluster_pool[None, :] == target[:, None]) & not_self
    rank = candidates.cumsum(dim=1)  # 1-based rank among candidates, pool order
    if top_k is not None:
        candidates = candidates & (rank <= top_k)
    count = candidates.sum(dim=1)
    pick = (choice * count).floor().to(torch.int64).clamp_max((count - 1).clamp_min(0)) + 1
    partners = (candidates & (rank == pick[:, None])).to(torch.int64).argmax(dim=1)
    has = count > 0
    partners = torch.where(has, partners, torch.arange(batch, device=device).clamp_max(pool - 1))
    return partners, torch.where(has, weights, torch.zeros_like(weights))


def kmix(
    x: Tensor,
    generator: torch.Generator,
    *,
    max_ratio: float = 0.4,
    centroids: Tensor | None = None,
    memory: Tensor | None = None,
    top_k: int | None = 128,
    scale: Literal["log", "db", "linear"] = "log",
) -> Tensor:
    """SLICER's k-mix: mix each spectrogram with one from the farthest cluster.

    With ``x_i`` a log-mel spectrogram (natural log of power), k-mix draws
    ``lambda_i ~ U(0, alpha)`` (alpha = ``max_ratio`` = 0.4) and a partner ``x_j``, and returns
    the log-mixup-exp of BYOL-A::

        x~_i = log((1 - lambda_i) * exp(x_i) + lambda_i * exp(x_j))

    The partner is what makes it k-mix: before training, the time-averaged log-mel spectra of
    the dataset are clustered with spherical k-means (:func:`spherical_kmeans`; SLICER: 4
    clusters, 20 iterations); ``x_j`` is drawn uniformly among the first ``top_k`` (128)
    candidates whose cluster centroid is farthest from the centroid of ``x_i``'s cluster (the
    nearest such cluster that has candidates). Without centroids the partner is uniform: plain
    BYOL-A mixup. Labels are not needed.

    SLICER draws partners from a FIFO memory of 2048 past inputs and uses the clusters once it
    holds 128 items; here the pool is ``memory`` when given (e.g. the last batches,
    ``torch.cat([memory, x])[-2048:]``) and otherwise the batch itself, without the example.
    The reference code assigns ``x_i`` to a cluster from its un-normalised mean; here both
    sides are normalised, as its k-means is spherical.

    Args:
        x: (B, ..., T) spectrograms, time last, e.g. (B, F, T) or (B, C, F, T).
        generator: The only source of randomness (weights and partners).
        max_ratio: alpha, the largest weight of the partner.
        centroids: (K, D) centroids over :func:`kmix_embedding` features, or None.
        memory: (M, ..., T) candidate partners shaped like ``x``'s examples, or None.
        top_k: Candidates considered in the chosen cluster (pool order); None for all.
        scale: ``log`` (natural log of power), ``db`` (10 log10 of power) or ``linear``
            (plain mixup ``(1 - lambda) x_i + lambda x_j``).

    Returns:
        A new tensor shaped like ``x``.
    """
    if x.ndim < 2:
        raise ValueError(f"x must have shape (B, ..., T), got {tuple(x.shape)}")
    pool = x if memory is None else memory.to(x.device, x.dtype)
    if pool.shape[1:] != x.shape[1:]:
        raise ValueError(f"memory items must be shaped like x's, got {tuple(pool.shape[1:])} "
                         f"and {tuple(x.shape[1:])}")
    if pool.shape[0] == 0:
        return x.clone()
    partners, weights = kmix_partners(
        kmix_embedding(x), kmix_embedding(pool), generator, max_ratio=max_ratio,
        centroids=centroids, top_k=top_k, exclude_self=memory is None)
    partner = pool[partners]
    lam = weights.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    if scale == "linear":
        return (1.0 - lam) * x + lam * partner
    if scale not in ("log", "db"):
        raise ValueError(f"scale must be 'log', 'db' or 'linear', got {scale!r}")
    to_natural = 1.0 if scale == "log" else math.log(10.0) / 10.0
    mixed = torch.logaddexp(x * to_natural + torch.log1p(-lam),
                            partner * to_natural + torch.log(lam))
    return mixed / to_natural


__all__ = ["kmix", "kmix_embedding", "kmix_partners", "spherical_kmeans"]
