"""Heads on top of encoder features.

Legend: B batch, D encoder features (``in_dim``), H hidden size, P projection size,
K classes or clusters.

- ``ProjectionHead``: ``(B, D) -> (B, out_dim)``, fully connected layers with ReLU between
  them (the CLAR/SimCLR projection head; with ``out_dim = K`` it is the supervised classifier).
- ``ClarHead``: ``(B, D) -> (z: (B, P), logits: (B, K))``, CLAR's three-layer head: NT-Xent on
  the second layer's output ``z``, cross-entropy on the third layer's ``logits``.
- ``ClusterHead``: ``(B, D) -> (B, K)`` softmax probabilities over K clusters (SLICER's
  cluster projection; its instance projection is a ``ProjectionHead``).
"""

from __future__ import annotations

import torch
from torch import nn


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last).

    ``num_layers=1``: ``D -> out``; otherwise ``D -> H``, ``num_layers - 2`` times ``H -> H``,
    then ``H -> out``.

    Args:
        in_dim: Input features D.
        hidden_dim: Hidden size H.
        out_dim: Output size.
        num_layers: Number of linear layers (>= 1).

    Returns:
        The network ``(B, in_dim) -> (B, out_dim)``.
    """
    _check_sizes(in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim, num_layers=num_layers)
    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        if i > 0:
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Linear(d_in, d_out))
    return nn.Sequential(*layers)


class ProjectionHead(nn.Module):
    """Fully connected projection: ``(B, in_dim) -> (B, out_dim)``.

    Sizes: input ``in_dim`` (D, the encoder's features), hidden ``hidden_dim`` (H) for the
    ``num_layers - 1`` inner layers, output ``out_dim``; ReLU between layers, none at the end.
    The CLAR paper's head is ``num_layers=3`` with ``out_dim=128``; for supervised training
    ``out_dim`` is the number of classes.

    Args:
        in_dim: Input features D.
        hidden_dim: Hidden size H.
        out_dim: Output size.
        num_layers: Number of linear layers (>= 1).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 3) -> None:
        super().__init__()
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
        self.net = mlp(in_dim, hidden_dim, out_dim, num_layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Project ``(B, in_dim)`` features to ``(B, out_dim)``."""
        return self.net(h)


class ClarHead(nn.Module):
    """CLAR's head: ``(B, in_dim) -> (z: (B, proj_dim), logits: (B, num_classes))``.

    Sizes: input ``in_dim`` (D) -> hidden ``hidden_dim`` (H) -> ``proj_dim`` (P, 128 in the
    paper) -> ``num_classes`` (K). Three linear layers with ReLU between them:
    ``z = fc2(relu(fc1(h)))`` is taken before the ReLU (a pre-activation, so cosine
    similarities can be negative) and feeds the contrastive loss; ``logits = fc3(relu(z))``
    feeds the cross-entropy on the labelled part of the batch.

    Args:
        in_dim: Input features D.
        hidden_dim: Hidden size H.
        proj_dim: Contrastive embedding size P.
        num_classes: Number of classes K.
    """

    def __init__(self, in_dim: int, hidden_dim: int, proj_dim: int, num_classes: int) -> None:
        super().__init__()
        _check_sizes(
            in_dim=in_dim, hidden_dim=hidden_dim, proj_dim=proj_dim, num_classes=num_classes
        )
        self.in_dim, self.hidden_dim = in_dim, hidden_dim
        self.proj_dim, self.num_classes = proj_dim, num_classes
        self.projection = mlp(in_dim, hidden_dim, proj_dim, num_layers=2)  # D -> H -> P
        self.classifier = nn.Linear(proj_dim, num_classes)  # P -> K

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``z: (B, proj_dim)`` and ``logits: (B, num_classes)``."""
        z = self.projection(h)  # (B, P)
        logits = self.classifier(torch.relu(z))  # (B, K)
        return z, logits


class ClusterHead(nn.Module):
    """Cluster projection: ``(B, in_dim) -> (B, num_clusters)`` probabilities (rows sum to 1).

    Sizes: input ``in_dim`` (D) -> hidden ``hidden_dim`` (H) -> ``num_clusters`` (K), ReLU
    between the two linear layers, softmax over K at the end (computed in float32).

    Args:
        in_dim: Input features D.
        hidden_dim: Hidden size H.
        num_clusters: Number of clusters K.
    """

    def __init__(self, in_dim: int, hidden_dim: int, num_clusters: int) -> None:
        super().__init__()
        _check_sizes(in_dim=in_dim, hidden_dim=hidden_dim, num_clusters=num_clusters)
        self.in_dim, self.hidden_dim, self.num_clusters = in_dim, hidden_dim, num_clusters
        self.net = mlp(in_dim, hidden_dim, num_clusters, num_layers=2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Return cluster probabilities ``(B, num_clusters)``."""
        return torch.softmax(self.net(h).float(), dim=1)
