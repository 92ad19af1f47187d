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

    def __init__(self, frontend: nn.Module, encoder: nn.Module) -> None:
        super().__init__()
        f_ndim, f_channels = getattr(frontend, "ndim", None), getattr(frontend, "out_channels", None)
        e_ndim, e_channels = getattr(encoder, "ndim", None), getattr(encoder, "in_channels", None)
        if f_ndim != e_ndim or f_channels != e_channels:
            raise ValueError(
                f"frontend output (ndim={f_ndim}, channels={f_channels}) does not fit encoder "
                f"input (ndim={e_ndim}, channels={e_channels})"
            )
        self.frontend = frontend
        self.encoder = encoder
        self.num_features: int = int(encoder.num_features)  # type: ignore[arg-type]

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Map waveforms ``(B, T)`` to features ``(B, num_features)``."""
        return self.encoder(self.frontend(wave))
