"""The trained encoder saved for downstream use, and torch files of a run directory.

``encoder.pt`` holds only tensors and plain values, and is loaded with ``weights_only=True``.
The names of a run directory's files are :mod:`clar_ray.rundir`'s (re-exported here).
"""

from __future__ import annotations

import io
from typing import Any

import torch
from torch import nn

from clar_ray import storage
from clar_ray.config import JobConfig, ModelConfig
from clar_ray.rundir import (
    CONFIG_FILE,
    ENCODER_FILE,
    METRICS_FILE,
    PLAN_FILE,
    RESULT_FILE,
    STATE_FILE,
    TENSORBOARD_DIR,
    run_file,
)

__all__ = ["CONFIG_FILE", "ENCODER_FILE", "METRICS_FILE", "PLAN_FILE", "RESULT_FILE",
           "STATE_FILE", "TENSORBOARD_DIR", "load_encoder", "load_torch", "run_file",
           "save_encoder", "save_torch"]

def save_torch(path: str, value: Any) -> None:
    """``torch.save`` to a local path or a URI."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    storage.write_bytes(path, buffer.getvalue())


def load_torch(path: str) -> Any:
    """``torch.load(weights_only=True)`` from a local path or a URI, onto the CPU."""
    return torch.load(io.BytesIO(storage.read_bytes(path)), map_location="cpu",
                      weights_only=True)


def save_encoder(run_dir: str, encoder: nn.Module, job: JobConfig, *, sample_rate: int,
                 clip_samples: int, epoch: int) -> str:
    """Write ``encoder.pt``: the model settings and the encoder's state dict."""
    path = run_file(run_dir, ENCODER_FILE)
    save_torch(path, {
        "model": job.to_dict()["model"],
        "sample_rate": int(sample_rate),
        "clip_samples": int(clip_samples),
        "epoch": int(epoch),
        "encoder": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
    })
    return path


def load_encoder(path: str) -> tuple[nn.Module, dict[str, Any]]:
    """Load a feature extractor (frontend + encoder, (B, T) → (B, D)) from ``encoder.pt``.

    Args:
        path: ``encoder.pt`` itself or the run directory holding it.

    Returns:
        The extractor in eval mode on the CPU, and the saved info (model settings,
        sample_rate, clip_samples, epoch).
    """
    from clar_ray.models import FeatureExtractor, build_encoder, build_frontend

    if not path.endswith(".pt"):
        path = run_file(path, ENCODER_FILE)
    if not storage.exists(path):
        raise FileNotFoundError(f"no trained encoder at {path}: has the run finished?")
    saved = load_torch(path)
    model = ModelConfig(**saved["model"])
    frontend = build_frontend(model.frontend, sample_rate=saved["sample_rate"],
                              preset=model.frontend_preset)
    encoder = build_encoder(model.encoder, in_channels=frontend.out_channels, width=model.width)
    encoder.load_state_dict(saved["encoder"])
    extractor = FeatureExtractor(frontend, encoder).eval()
    return extractor, saved
