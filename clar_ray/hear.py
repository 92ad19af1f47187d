"""The HEAR 2021 common API over a run directory or a file from ``clar-ray export``.

Legend: B sounds (``n_sounds``), T samples, D features, N timestamps.

    load_model(path)                          → HearModel (sample_rate, scene_embedding_size,
                                                timestamp_embedding_size), on a GPU if any
    get_scene_embeddings(audio (B, T), model) → (B, D) float32: the pooled encoder output
    get_timestamp_embeddings(audio, model)    → (B, N, D) float32 frames of the encoder's time
                                                axis, (B, N) float32 their centres in ms

``path`` is a run directory (or its ``encoder.pt``), local or a URI, or an exported file. Audio
is float in [-1, 1] at ``model.sample_rate``, of any length (shorter than ``min_samples`` is
right-padded with silence); the frontend runs inside the model. Outputs are on the model's
device. The frames, their hop and how they pool into the scene embedding are described in
``clar_ray.export``. With hear-eval-kit: ``python3 -m heareval.embeddings.runner clar_ray.hear
--model FILE --tasks-dir TASKS``.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import Tensor, nn

from clar_ray import artifacts, export, storage

__all__ = [
    "HEAR_SAMPLE_RATES",
    "HearModel",
    "get_scene_embeddings",
    "get_timestamp_embeddings",
    "load_model",
]

#: The sample rates the HEAR 2021 tasks come in (what hear-validator accepts).
HEAR_SAMPLE_RATES = (16000, 22050, 44100, 48000)


class HearModel(nn.Module):
    """A clar-ray encoder behind the HEAR API: an ``EmbeddingModel``, eager or TorchScript.

    Args:
        core: ``export.EmbeddingModel`` or its exported TorchScript module.
        metadata: The model's metadata (``export.export_run`` lists the keys).

    Attributes:
        sample_rate: Hz of the audio the model takes.
        scene_embedding_size: D.
        timestamp_embedding_size: D (the frames have the scene embedding's size).
        metadata: The metadata dict.
    """

    def __init__(self, core: export.EmbeddingModel | torch.jit.ScriptModule,
                 metadata: dict[str, Any]) -> None:
        super().__init__()
        self.core: export.EmbeddingModel | torch.jit.ScriptModule = core
        self.metadata = dict(metadata)
        self.sample_rate = int(metadata["sample_rate"])
        self.scene_embedding_size = int(metadata["embedding_size"])
        self.timestamp_embedding_size = int(metadata["embedding_size"])

    @property
    def device(self) -> torch.device:
        """Where the model's tensors are."""
        for tensor in self.core.buffers():
            return tensor.device
        return next(self.core.parameters()).device

    def forward(self, audio: Tensor) -> Tensor:
        """Scene embeddings ``(B, D)`` of audio ``(B, T)``."""
        return get_scene_embeddings(audio, self)


def load_model(model_file_path: str = "", *, device: torch.device | str | None = None
               ) -> HearModel:
    """Load a run's encoder, or an exported file, as a HEAR model in eval mode.

    Args:
        model_file_path: A run directory, its ``encoder.pt``, or a file from ``clar-ray export``
            (local paths or URIs).
        device: Where to put the model (default: the first GPU if there is one, else the CPU).

    Returns:
        The model.

    Raises:
        FileNotFoundError: Nothing at the path, or a run directory without ``encoder.pt``.
        ValueError: No path, or a file that is neither ``encoder.pt`` nor an export.
    """
    path = str(model_file_path)
    if not path:
        raise ValueError("load_model needs a run directory or a file from clar-ray export; "
                         "clar-ray has no default model")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    is_file = storage.exists(path) and not _is_dir(path)
    if is_file and path.rstrip("/").rsplit("/", 1)[-1] != artifacts.ENCODER_FILE:
        core, metadata = export.load_exported(path, device=device)
        return HearModel(core, metadata).eval()
    extractor, info = artifacts.load_encoder(path)  # FileNotFoundError names encoder.pt
    run_dir = path.rstrip("/").rsplit("/", 1)[0] if is_file else path
    config = artifacts.run_file(run_dir, artifacts.CONFIG_FILE)
    digest = export.config_hash(run_dir) if storage.exists(config) else ""
    model = export.build_embedding_model(extractor, info, config_sha256=digest)
    return HearModel(model, json.loads(model.metadata)).to(device).eval()


def _is_dir(path: str) -> bool:
    import pyarrow.fs as pafs

    fs, inner = storage.resolve_filesystem(path)
    return fs.get_file_info(inner).type == pafs.FileType.Directory


def _check_audio(audio: Any, model: HearModel, sample_rate: int | None) -> Tensor:
    """The audio as float32 ``(B, T)`` on the model's device, or a one-line ValueError."""
    if not isinstance(model, HearModel):
        raise ValueError(f"model must come from clar_ray.hear.load_model, got "
                         f"{type(model).__name__}")
    if sample_rate is not None and int(sample_rate) != model.sample_rate:
        raise ValueError(f"audio at {sample_rate} Hz, but the model takes {model.sample_rate} "
                         f"Hz: resample it first")
    if not isinstance(audio, Tensor):
        raise ValueError(f"audio must be a torch.Tensor (n_sounds, n_samples), got "
                         f"{type(audio).__name__}")
    if audio.dim() != 2:
        raise ValueError(f"audio must be (n_sounds, n_samples), got shape {tuple(audio.shape)}")
    if not audio.is_floating_point():
        raise ValueError(f"audio must be float samples in [-1, 1], got {audio.dtype}")
    if audio.shape[0] == 0 or audio.shape[1] == 0:
        raise ValueError(f"audio must hold at least one sound of one sample, got shape "
                         f"{tuple(audio.shape)}")
    return audio.to(device=model.device, dtype=torch.float32)


def get_scene_embeddings(audio: Tensor, model: HearModel, *, sample_rate: int | None = None
                         ) -> Tensor:
    """One embedding per sound: the encoder's pooled output.

    Args:
        audio: ``(n_sounds, n_samples)`` float in [-1, 1] at ``model.sample_rate``.
        model: From ``load_model``.
        sample_rate: The audio's rate, if known: checked against ``model.sample_rate``.

    Returns:
        ``(n_sounds, model.scene_embedding_size)`` float32 on the model's device.

    Raises:
        ValueError: Audio of the wrong type, shape, dtype or sample rate.
    """
    audio = _check_audio(audio, model, sample_rate)
    with torch.no_grad():
        return model.core(audio).float()


def get_timestamp_embeddings(audio: Tensor, model: HearModel, *,
                             sample_rate: int | None = None) -> tuple[Tensor, Tensor]:
    """Embeddings of the frames of the encoder's time axis, with their centres.

    Args:
        audio: ``(n_sounds, n_samples)`` float in [-1, 1] at ``model.sample_rate``.
        model: From ``load_model``.
        sample_rate: The audio's rate, if known: checked against ``model.sample_rate``.

    Returns:
        ``(n_sounds, n_timestamps, model.timestamp_embedding_size)`` float32 embeddings and
        ``(n_sounds, n_timestamps)`` float32 timestamps (frame centres, in milliseconds, the
        same for every sound), both on the model's device.

    Raises:
        ValueError: Audio of the wrong type, shape, dtype or sample rate.
    """
    audio = _check_audio(audio, model, sample_rate)
    with torch.no_grad():
        frames, timestamps = model.core.timestamp_embeddings(audio)
    return frames.float(), timestamps
