"""Scores of frozen features: a linear probe and a k-nearest-neighbour vote.

Legend: N training clips, M test clips, D features, C classes.

    train (N, D), labels (N,) ─┬─ linear_probe: standardise (train statistics) → linear layer,
    test (M, D), labels (M,)   │                 Adam on every training row → top-1 on test
                               └─ knn_accuracy: cosine similarity, k nearest training rows,
                                                similarity-weighted vote → top-1 on test

Pure functions of arrays: no run, no job, no Ray (:mod:`clar_ray.evaluate` feeds them features
of a run's encoder).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

__all__ = ["KNN_TEMPERATURE", "PROBE_BATCH_SIZE", "knn_accuracy", "linear_probe"]

#: Temperature of the kNN vote weights ``exp(cos / t)`` (Wu et al. 2018; DINO, solo-learn).
KNN_TEMPERATURE = 0.07
#: Rows per Adam step of the linear probe.
PROBE_BATCH_SIZE = 256
#: Elements of one test-by-train similarity block in ``knn_accuracy`` (bounds its memory).
_KNN_BLOCK_ELEMENTS = 1 << 24


def _check_xy(x: np.ndarray, y: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name}_x must have shape (N, D) with N > 0, got {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"{name}_y must have shape ({x.shape[0]},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise ValueError(f"{name}_y must hold class indices >= 0 (no -1 'unlabelled' rows), "
                         f"got dtype {y.dtype}, min {y.min()}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}_x holds {int((~np.isfinite(x)).sum())} non-finite values")
    # writable, C-ordered arrays: torch.from_numpy warns on read-only ones (Arrow-backed)
    return (np.require(x, dtype=np.float32, requirements=["C", "W"]),
            np.require(y, dtype=np.int64, requirements=["C", "W"]))


def _check_pair(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                test_y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    train_x, train_y = _check_xy(train_x, train_y, "train")
    test_x, test_y = _check_xy(test_x, test_y, "test")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train and test features differ in size: {train_x.shape[1]} != "
                         f"{test_x.shape[1]}")
    return train_x, train_y, test_x, test_y


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one CPU thread: the probe's steps are too small to repay thread syncs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, *, epochs: int = 100, lr: float = 0.01,
                 weight_decay: float = 1e-4, seed: int = 0, device: torch.device | str = "cpu",
                 batch_size: int = PROBE_BATCH_SIZE,
                 progress: Callable[[int], None] | None = None) -> dict[str, float]:
    """Top-1 accuracy of a linear classifier trained on frozen features.

    Features are standardised with the training rows' mean and standard deviation (constant
    dimensions keep scale 1), so one learning rate fits any encoder's feature scale. The layer
    starts at zero and is trained with Adam (L2 ``weight_decay``) on shuffled mini-batches with
    a cosine-decayed learning rate; the final layer is scored (no early stopping on the test
    split). The problem is convex, so the zero start and the decay to 0 make the result depend
    on the seed only through the mini-batch order. On the CPU the steps run on one thread: a
    step (``batch_size`` x D by D x C) is too small to repay the synchronisation of several.

    Why mini-batch Adam: with standardised inputs one learning rate works for every encoder;
    a step costs microseconds, so FSDD-sized probes (2,700 x 512, 100 epochs = 1,100 steps)
    take about a second on one CPU core; and it uses the job's ``probe_lr``, ``probe_epochs``
    and ``probe_weight_decay`` as they read. Full-batch L-BFGS to the optimum of the weakly
    regularised problem was no more accurate on 512-d features (it overfits the way Adam's
    finite schedule does not) and needs every row on the device at once.

    Args:
        train_x: Training features ``(N, D)``; every row is used.
        train_y: Training labels ``(N,)``, class indices >= 0.
        test_x: Test features ``(M, D)``.
        test_y: Test labels ``(M,)``.
        epochs: Passes over the training rows.
        lr: Peak Adam learning rate.
        weight_decay: L2 penalty of Adam.
        seed: Seed of the mini-batch order.
        device: Where the classifier trains.
        batch_size: Rows per step.
        progress: Called with 1 after each epoch (a progress bar's ``update``).

    Returns:
        ``{"linear_top1": accuracy in [0, 1]}``.

    Raises:
        ValueError: Bad shapes, labels < 0, non-finite features, or bad hyper-parameters.
    """
    train_x, train_y, test_x, test_y = _check_pair(train_x, train_y, test_x, test_y)
    if epochs < 1 or batch_size < 1 or lr <= 0 or weight_decay < 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0 and weight_decay >= 0, got "
                         f"{epochs}, {batch_size}, {lr}, {weight_decay}")
    device = torch.device(device)
    mean = train_x.mean(axis=0, dtype=np.float64)
    std = train_x.std(axis=0, dtype=np.float64)
    std[std < 1e-8 * np.maximum(1.0, np.abs(mean))] = 1.0
    x = torch.from_numpy(((train_x - mean) / std).astype(np.float32)).to(device)  # (N, D)
    xt = torch.from_numpy(((test_x - mean) / std).astype(np.float32)).to(device)  # (M, D)
    y = torch.from_numpy(train_y).to(device)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    layer = nn.Linear(x.shape[1], num_classes).to(device)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    optimizer = torch.optim.Adam(layer.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    total = epochs * math.ceil(n / batch_size)
    step = 0
    threads = _one_thread() if device.type == "cpu" else contextlib.nullcontext()
    with threads, torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator).to(device)
            for start in range(0, n, batch_size):
                rows = order[start:start + batch_size]
                for group in optimizer.param_groups:
                    group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
                loss = nn.functional.cross_entropy(layer(x[rows]), y[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
            if progress is not None:
                progress(1)
    with torch.no_grad():
        predicted = layer(xt).argmax(dim=1).cpu().numpy()
    return {"linear_top1": float(np.mean(predicted == test_y))}


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                 test_y: np.ndarray, *, k: int = 20, temperature: float = KNN_TEMPERATURE,
                 device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy of a k-nearest-neighbour classifier on cosine similarity.

    Each test clip's ``k`` most similar training clips vote for their class with weight
    ``exp(cos / temperature)`` (the weighted vote of Wu et al. 2018, used by DINO and
    solo-learn): a closer neighbour counts more, and ties between classes practically never
    happen. ``k`` larger than the training set uses every training clip.

    Args:
        train_x: Training features ``(N, D)``.
        train_y: Training labels ``(N,)``.
        test_x: Test features ``(M, D)``.
        test_y: Test labels ``(M,)``.
        k: Neighbours per test clip (>= 1).
        temperature: Vote temperature (> 0).
        device: Where the similarities are computed.

    Returns:
        The accuracy, in [0, 1].

    Raises:
        ValueError: Bad shapes or labels, ``k`` < 1 or ``temperature`` <= 0.
    """
    train_x, train_y, test_x, test_y = _check_pair(train_x, train_y, test_x, test_y)
    if k < 1 or temperature <= 0:
        raise ValueError(f"need k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    device = torch.device(device)
    bank = nn.functional.normalize(torch.from_numpy(train_x).to(device), dim=1)  # (N, D)
    bank_y = torch.from_numpy(train_y).to(device)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    k = min(k, bank.shape[0])
    block = max(1, _KNN_BLOCK_ELEMENTS // bank.shape[0])
    correct = 0
    for start in range(0, test_x.shape[0], block):
        query = torch.from_numpy(test_x[start:start + block]).to(device)
        sims = nn.functional.normalize(query, dim=1) @ bank.T  # (b, N)
        top_sims, top_rows = sims.topk(k, dim=1)  # (b, k)
        # exp((s - 1) / t): the same vote as exp(s / t), without overflow
        weights = torch.exp((top_sims - 1.0) / temperature)
        votes = torch.zeros(query.shape[0], num_classes, device=device)
        votes.scatter_add_(1, bank_y[top_rows], weights)  # (b, C)
        predicted = votes.argmax(dim=1).cpu().numpy()
        correct += int(np.sum(predicted == test_y[start:start + block]))
    return correct / test_x.shape[0]
