"""Heads on top of encoder features, in two styles.

Legend: B batch, D encoder features (``in_dim``), H hidden size, P projection size,
K classes or clusters.

``style="code"`` (the default) builds the heads of CLAR's released code; ``style="paper"`` the
paper's text (fully connected layers with ReLU between them, no normalisation):

| head                | ``code``                                    | ``paper``                 |
|---------------------|---------------------------------------------|---------------------------|
| ``ProjectionHead``  | (Linear, BN, ReLU) × (layers − 1), Linear   | Linear, ReLU, …, Linear   |
|                     | without a bias                              |                           |
| ``ClarHead`` z      | Linear, BN, ReLU, Linear                    | Linear, ReLU, Linear      |
| ``ClarHead`` logits | BN(z), ReLU, Linear(P → K) without a bias   | ReLU(z), Linear(P → K)    |

The batch norm before CLAR's class layer matters: NT-Xent reads z only through its direction,
so the scale of z is free, and a class layer on ``relu(z)`` starts from whatever scale the
contrastive term left; normalising z gives the class layer a fixed input scale.
Batch norm layers become SyncBatchNorm under DDP on GPUs like the encoder's.

- ``ProjectionHead``: ``(B, D) -> (B, out_dim)`` (the SimCLR/SupCon/ACL projection; with
  ``out_dim = K`` the supervised classifier).
- ``ClarHead``: ``(B, D) -> (z: (B, P), logits: (B, K))``, NT-Xent on ``z`` and cross-entropy on
  ``logits``.
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


#: Head styles: the released code's (batch norm) and the paper text's (plain).
HEAD_STYLES = ("code", "paper")


def _check_style(style: str) -> None:
    if style not in HEAD_STYLES:
        raise ValueError(f"head style must be one of {', '.join(HEAD_STYLES)}, got {style!r}")


def mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, *,
        batch_norm: bool = False, last_bias: bool = True) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last).

    ``num_layers=1``: ``D -> out``; otherwise ``D -> H``, ``num_layers - 2`` times ``H -> H``,
    then ``H -> out``.

    Args:
        in_dim: Input features D.
        hidden_dim: Hidden size H.
        out_dim: Output size.
        num_layers: Number of linear layers (>= 1).
        batch_norm: Put a BatchNorm1d between each hidden linear layer and its ReLU.
        last_bias: Give the last linear layer a bias.

    Returns:
        The network ``(B, in_dim) -> (B, out_dim)``.
    """
    _check_sizes(in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim, num_layers=num_layers)
    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == num_layers - 1
        layers.append(nn.Linear(d_in, d_out, bias=last_bias or not last))
        if not last:
            if batch_norm:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ProjectionHead(nn.Module):
    """Fully connected projection: ``(B, in_dim) -> (B, out_dim)``.

    Sizes: input ``in_dim`` (D, the encoder's features), hidden ``hidden_dim`` (H) for the
    ``num_layers - 1`` inner layers, output ``out_dim``; ReLU between layers, none at the end
    (``code`` style: batch norm before each ReLU and no bias on the last layer).
    The CLAR paper's head is ``num_layers=3`` with ``out_dim=128``; for supervised training
    ``out_dim`` is the number of classes.

    Args:
        in_dim: Input features D.
        hidden_dim: Hidden size H.
        out_dim: Output size.
        num_layers: Number of linear layers (>= 1).
        style: ``code`` or ``paper`` (see the module doc).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 3,
                 style: str = "code") -> None:
        super().__init__()
        _check_style(style)
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
        code = style == "code"
        self.net = mlp(in_dim, hidden_dim, out_dim, num_layers, batch_norm=code,
                       last_bias=not code)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Project ``(B, in_dim)`` features to ``(B, out_dim)``."""
        return self.net(h)


class ClarHead(nn.Module):
    """CLAR's head: ``(B, in_dim) -> (z: (B, proj_dim), logits: (B, num_classes))``.

    Sizes: input ``in_dim`` (D) -> hidden ``hidden_dim`` (H) -> ``proj_dim`` (P, 128 in the
    paper) -> ``num_classes`` (K). ``z = fc2(relu([bn](fc1(h))))`` is taken before any ReLU (a
    pre-activation, so cosine similarities can be negative) and feeds the contrastive loss;
    ``logits = fc3(relu([bn](z)))`` feeds the cross-entropy on the labelled part of the batch
    (``code`` style: with the batch norms, and fc3 without a bias).

    Args:
        in_dim: Input features D.
        hidden_dim: Hidden size H.
        proj_dim: Contrastive embedding size P.
        num_classes: Number of classes K.
        style: ``code`` or ``paper`` (see the module doc).
    """

    def __init__(self, in_dim: int, hidden_dim: int, proj_dim: int, num_classes: int,
                 style: str = "code") -> None:
        super().__init__()
        _check_sizes(
            in_dim=in_dim, hidden_dim=hidden_dim, proj_dim=proj_dim, num_classes=num_classes
        )
        _check_style(style)
        code = style == "code"
        self.in_dim, self.hidden_dim = in_dim, hidden_dim
        self.proj_dim, self.num_classes = proj_dim, num_classes
        self.projection = mlp(in_dim, hidden_dim, proj_dim, num_layers=2,
                              batch_norm=code)  # D -> H -> P
        self.classifier = nn.Sequential(  # P -> K
            *([nn.BatchNorm1d(proj_dim)] if code else []), nn.ReLU(),
            nn.Linear(proj_dim, num_classes, bias=not code))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``z: (B, proj_dim)`` and ``logits: (B, num_classes)``."""
        z = self.projection(h)  # (B, P)
        logits = self.classifier(z)  # (B, K)
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
