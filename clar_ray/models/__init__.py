"""Models: frontends (waveform -> encoder input), ResNet18 encoders and heads.

Legend: B batch, T samples, D features.

``FeatureExtractor`` joins a frontend and an encoder into ``(B, T) -> (B, D)`` for evaluation.
During training the frontend stays outside the DDP-wrapped module (its kernels are buffers).
"""

from __future__ import annotations

import torch
from torch import nn

from clar_ray.models.frontends import (
    FRONTEND_PRESETS,
    FRONTENDS,
    Frontend,
    RawFrontend,
    TF3Frontend,
    build_frontend,
)
from clar_ray.models.heads import ClarHead, ClusterHead, ProjectionHead
from clar_ray.models.resnet import ENCODERS, ResNet18, build_encoder

__all__ = [
    "ENCODERS",
    "FRONTENDS",
    "FRONTEND_PRESETS",
    "ClarHead",
    "ClusterHead",
    "FeatureExtractor",
    "Frontend",
    "ProjectionHead",
    "RawFrontend",
    "ResNet18",
    "TF3Frontend",
    "build_encoder",
    "build_frontend",
]


class FeatureExtractor(nn.Module):
    """Waveforms to encoder features: ``(B, T) -> (B, num_features)``.

    Args:
        frontend: A frontend from ``build_frontend`` (has ``out_channels`` and ``ndim``).
        encoder: An encoder from ``build_encoder`` (has ``in_channels``, ``ndim`` and
            ``num_features``).

    Raises:
        ValueError: If the frontend's output does not fit the encoder's input.
    """

    def __init__(self, frontend: Frontend, encoder: ResNet18) -> None:
        super().__init__()
        if (frontend.ndim, frontend.out_channels) != (encoder.ndim, encoder.in_channels):
            raise ValueError(
                f"frontend output (ndim={frontend.ndim}, channels={frontend.out_channels}) does "
                f"not fit encoder input (ndim={encoder.ndim}, channels={encoder.in_channels})"
            )
        self.frontend = frontend
        self.encoder = encoder
        self.num_features = encoder.num_features

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Map waveforms ``(B, T)`` to features ``(B, num_features)``."""
        return self.encoder(self.frontend(wave))
