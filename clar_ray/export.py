"""A trained encoder as one self-contained TorchScript file: raw audio in, embeddings out.

Legend: B clips, T samples, D features, N frames of the encoder's time axis, F' its frequency
rows (tf3 only).

    EmbeddingModel                         frontend → ResNet18 stem → stages → feature map
      forward(audio (B, T))              → (B, D)   the pooled encoder output (the scene)
      timestamp_embeddings(audio (B, T)) → (B, N, D) frames, (B, N) their centres in ms

``clar-ray export RUN_DIR --out FILE`` writes the model as TorchScript. ``torch.jit.load(FILE)``
runs it with torch alone (no clar-ray, no nnAudio): ``model(audio)`` at ``model.sample_rate``;
the metadata is both on the module (``model.sample_rate``, ``model.embedding_size``, ...) and in
the file as ``extra/clar_ray.json`` (``torch.jit.load(FILE, _extra_files={"clar_ray.json": ""})``).

Why TorchScript by tracing: ``torch.jit.script`` cannot compile nnAudio's STFT (its forward builds
an ``nn.ReflectionPad1d`` and sets an attribute), and ``torch.export`` with a dynamic time axis
guards on the length (the 1D stem specialises T to the example's 16000; the 2D path needs
``T // 256`` even, or a batch above 1), so an exported program would not take any length.
``torch.jit.trace`` records the frontend and encoder as length-generic tensor ops; the small
wrapper around them (padding, pooling, timestamps) is scripted, and ``export_run`` checks the
traced model against the eager one at two lengths before writing the file.

Frame geometry. Frame n of the final feature map is centred on input sample
``first_frame_samples + n * hop_samples``, found by walking the strides, kernels and paddings of
the frontend and of the encoder's main path (``frame_geometry``): raw audio, hop 128 samples
(stem stride 16, three stride-2 stages) starting at 7.5; tf3, hop 32 STFT frames (4096 samples
at 16 kHz with the paper's 8 ms hop) starting at 0. A tf3 frame averages its F' frequency rows,
so the mean of the frames is the scene embedding. Audio shorter than ``min_samples`` (the least
length that gives every layer one output; tf3 also needs ``n_fft // 2 + 1`` samples for its
reflect padding) is right-padded with zeros to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clar_ray import __version__, artifacts, storage

if TYPE_CHECKING:
    from clar_ray.models import ResNet18

__all__ = [
    "EXPORT_FORMAT",
    "METADATA_FILE",
    "EmbeddingModel",
    "ExportError",
    "FrameGeometry",
    "build_embedding_model",
    "config_hash",
    "export_run",
    "frame_geometry",
    "is_exported",
    "load_exported",
    "read_metadata",
]

#: Version of the exported file's layout (bumped when its methods or metadata change).
EXPORT_FORMAT = 1
#: The metadata file inside the TorchScript archive (``extra/clar_ray.json``).
METADATA_FILE = "clar_ray.json"

_POOLS = (nn.MaxPool1d, nn.MaxPool2d)
_CONVS = (nn.Conv1d, nn.Conv2d)


class ExportError(RuntimeError):
    """The traced model does not reproduce the run's encoder (nothing is written)."""


@dataclass(frozen=True)
class FrameGeometry:
    """Where the frames of a feature map lie in the input audio, in samples.

    Attributes:
        hop_samples: Samples between the centres of adjacent frames.
        first_frame_samples: Centre of frame 0 (frame n: ``first + n * hop``).
        min_samples: The shortest input that gives every layer at least one output.
    """

    hop_samples: int
    first_frame_samples: float
    min_samples: int


def _time_axis(value: int | tuple[int, ...]) -> int:
    """The time-axis (last) entry of a kernel size, stride or padding."""
    return int(value[-1]) if isinstance(value, tuple) else int(value)


def _encoder_layers(encoder: ResNet18) -> list[tuple[int, int, int]]:
    """(kernel, stride, padding) on the time axis of every layer on the encoder's main path."""
    from clar_ray.models.resnet import BasicBlock

    modules: list[nn.Module] = list(encoder.stem)
    for stage in encoder.stages:
        for block in stage.children():
            if not isinstance(block, BasicBlock):
                raise ValueError(f"frame_geometry: unknown block {type(block).__name__}")
            modules += [block.conv1, block.conv2]
    layers = []
    for m in modules:
        if isinstance(m, _CONVS + _POOLS):
            if (isinstance(m.padding, str) or _time_axis(m.dilation) != 1
                    or getattr(m, "ceil_mode", False)):
                raise ValueError(f"frame_geometry: {m} has string padding, dilation or "
                                 f"ceil_mode, not supported")
            layers.append((_time_axis(m.kernel_size), _time_axis(m.stride),
                           _time_axis(m.padding)))
    return layers


def _frontend_time(frontend: nn.Module) -> tuple[int, float, int]:
    """(hop, centre of frame 0, least samples) of a frontend's output time axis."""
    from clar_ray.models import RawFrontend, TF3Frontend

    if isinstance(frontend, TF3Frontend):
        # Centred frames: frame t is centred on sample t * hop; reflect padding needs
        # more than n_fft // 2 samples.
        return frontend.params.hop_length, 0.0, frontend.params.n_fft // 2 + 1
    if isinstance(frontend, RawFrontend):
        return 1, 0.0, 1
    raise ValueError(f"frame_geometry: no time axis known for {type(frontend).__name__}")


def frame_geometry(frontend: nn.Module, encoder: ResNet18) -> FrameGeometry:
    """The frame geometry of ``encoder``'s feature map over ``frontend``'s input audio.

    An output position j of a layer (kernel k, stride s, padding p) is centred on input
    position ``s * j + (k - 1) / 2 - p``; composing the layers gives an affine map.

    Args:
        frontend: A frontend from ``clar_ray.models.build_frontend``.
        encoder: A ``clar_ray.models.ResNet18``.

    Returns:
        The hop, the centre of frame 0 and the least input length, in samples.
    """
    fe_hop, fe_first, fe_min = _frontend_time(frontend)
    layers = _encoder_layers(encoder)
    scale, offset = 1, 0.0  # frame j of the feature map ↦ position scale * j + offset
    for kernel, stride, padding in reversed(layers):
        offset = stride * offset + (kernel - 1) / 2 - padding
        scale *= stride
    min_positions = 1  # the least frontend frames that leave every layer one output
    while True:
        n = min_positions
        for kernel, stride, padding in layers:
            n = (n + 2 * padding - kernel) // stride + 1 if n + 2 * padding >= kernel else 0
        if n >= 1:
            break
        min_positions += 1
    min_samples = max(fe_min, (min_positions - 1) * fe_hop + 1)
    return FrameGeometry(hop_samples=fe_hop * scale, first_frame_samples=fe_first + fe_hop * offset,
                         min_samples=min_samples)


class EmbeddingModel(nn.Module):
    """Raw audio ``(B, T)`` to scene embeddings ``(B, D)`` and timestamped frames (scriptable).

    Args:
        features: Audio ``(B, T)`` → feature map ``(B, D, N)`` or ``(B, D, F', N)`` (frontend,
            stem and stages; eager or traced).
        pool: The encoder's global pooling (``(B, D, ...) → (B, D, 1...)``).
        sample_rate: Hz of the audio the model takes.
        embedding_size: D.
        geometry: Where the frames lie (``frame_geometry``).
        metadata: What the file records (JSON text; see ``export_run``).
    """

    def __init__(self, features: nn.Module, pool: nn.Module, *, sample_rate: int,
                 embedding_size: int, geometry: FrameGeometry, metadata: str = "{}") -> None:
        super().__init__()
        self.features = features
        self.pool = pool
        self.sample_rate = int(sample_rate)
        self.embedding_size = int(embedding_size)
        self.hop_samples = int(geometry.hop_samples)
        self.first_frame_samples = float(geometry.first_frame_samples)
        self.min_samples = int(geometry.min_samples)
        self.metadata = metadata

    @torch.jit.export
    def feature_map(self, audio: Tensor) -> Tensor:
        """Audio ``(B, T)`` → the encoder's feature map ``(B, D, N)`` or ``(B, D, F', N)``."""
        if audio.dim() != 2:
            raise ValueError("audio must be (batch, samples), got " + str(audio.dim())
                             + " dimensions")
        if not audio.is_floating_point():
            raise ValueError("audio must be floating point in [-1, 1], got " + str(audio.dtype))
        audio = audio.float()
        if audio.shape[1] < self.min_samples:  # right-pad short audio with silence
            audio = F.pad(audio, [0, self.min_samples - audio.shape[1]])
        return self.features(audio)

    def forward(self, audio: Tensor) -> Tensor:
        """Audio ``(B, T)`` → scene embeddings ``(B, D)``: the pooled encoder output."""
        return torch.flatten(self.pool(self.feature_map(audio)), 1)  # (B, D)

    @torch.jit.export
    def timestamp_embeddings(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """Audio ``(B, T)`` → frames ``(B, N, D)`` and their centres ``(B, N)`` in ms."""
        h = self.feature_map(audio)  # (B, D, N) or (B, D, F', N)
        if h.dim() == 4:
            h = h.mean(dim=2)  # average the frequency rows: (B, D, N)
        frames = h.transpose(1, 2).contiguous()  # (B, N, D)
        index = torch.arange(frames.shape[1], device=h.device, dtype=torch.float64)
        centres = (self.first_frame_samples + self.hop_samples * index) * 1000.0
        ms = (centres / self.sample_rate).to(torch.float32)  # (N,), no drift over long audio
        return frames, ms.unsqueeze(0).expand(frames.shape[0], -1).contiguous()


def build_embedding_model(extractor: nn.Module, info: dict[str, Any], *,
                          config_sha256: str = "") -> EmbeddingModel:
    """The eager ``EmbeddingModel`` of a loaded encoder (``artifacts.load_encoder``).

    Args:
        extractor: The ``FeatureExtractor`` (frontend + encoder), in eval mode.
        info: The saved info of ``encoder.pt`` (model settings, sample_rate, clip_samples, ...).
        config_sha256: The run's config hash (``config_hash``), recorded in the metadata.

    Returns:
        The model in eval mode on the CPU.
    """
    from clar_ray.models import FeatureExtractor

    if not isinstance(extractor, FeatureExtractor):
        raise ValueError(f"build_embedding_model needs a FeatureExtractor, got "
                         f"{type(extractor).__name__}")
    frontend, encoder = extractor.frontend, extractor.encoder
    geometry = frame_geometry(frontend, encoder)
    model_settings = dict(info["model"])
    sample_rate = int(info["sample_rate"])
    metadata = {
        "format": EXPORT_FORMAT,
        "sample_rate": sample_rate,
        "clip_samples": int(info["clip_samples"]),
        "clip_seconds": int(info["clip_samples"]) / sample_rate,
        "embedding_size": int(encoder.num_features),
        "frontend": model_settings.get("frontend"),
        "frontend_preset": model_settings.get("frontend_preset"),
        "encoder": model_settings.get("encoder"),
        "width": model_settings.get("width"),
        "epoch": int(info.get("epoch", -1)),
        "config_sha256": config_sha256,
        "hop_samples": geometry.hop_samples,
        "first_frame_samples": geometry.first_frame_samples,
        "min_samples": geometry.min_samples,
        "clar_ray_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
    }
    features = nn.Sequential(frontend, encoder.stem, encoder.stages)
    return EmbeddingModel(features, encoder.pool, sample_rate=sample_rate,
                          embedding_size=int(encoder.num_features), geometry=geometry,
                          metadata=json.dumps(metadata, sort_keys=True)).eval()


def config_hash(run_dir: str) -> str:
    """SHA-256 (hex) of ``RUN_DIR/config.yaml`` as written, so ``sha256sum`` gives it too."""
    path = artifacts.run_file(run_dir, artifacts.CONFIG_FILE)
    if not storage.exists(path):
        raise FileNotFoundError(f"no {artifacts.CONFIG_FILE} in {run_dir}: not a run directory")
    return hashlib.sha256(storage.read_bytes(path)).hexdigest()


@contextlib.contextmanager
def _torchscript_quiet() -> Iterator[None]:
    """Silence the warnings TorchScript gives for what ``export_run`` does on purpose.

    torch 2.11 marks ``torch.jit`` deprecated (see the module docstring for why it is still the
    format that takes any length); the tracer warns that the frontend's shape checks become
    constants (the wrapper pads short audio before them).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def _trace(model: EmbeddingModel, example: Tensor) -> torch.jit.ScriptModule:
    """Trace the features (nnAudio is not scriptable), then script the wrapper around them."""
    with _torchscript_quiet():
        traced = torch.jit.trace(model.features, example, check_trace=False)
        wrapper = EmbeddingModel(traced, model.pool, sample_rate=model.sample_rate,
                                 embedding_size=model.embedding_size,
                                 geometry=FrameGeometry(model.hop_samples,
                                                        model.first_frame_samples,
                                                        model.min_samples),
                                 metadata=model.metadata)
        return torch.jit.script(wrapper.eval())


def _check_same(eager: EmbeddingModel, scripted: torch.jit.ScriptModule, lengths: list[int],
                *, atol: float = 1e-4) -> None:
    """Raise if the scripted model differs from the eager one at any of ``lengths``."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for length in lengths:
            audio = torch.rand(2, length, generator=generator) * 2 - 1
            want = eager(audio)
            got = scripted(audio)
            error = float((want - got).abs().max())
            if got.shape != want.shape or not error <= atol * (1 + float(want.abs().max())):
                raise ExportError(f"the traced model differs from the encoder at {length} "
                                   f"samples (max error {error:.3g}): not exported")


def export_run(run_dir: str, out: str) -> dict[str, Any]:
    """Write a run's encoder as a TorchScript file that maps audio ``(B, T)`` to ``(B, D)``.

    Args:
        run_dir: A run directory with ``config.yaml`` and ``encoder.pt`` (local path or URI).
        out: The file to write (local path or URI; ``.pt`` by convention).

    Returns:
        The metadata written into the file (``extra/clar_ray.json``): format, sample_rate,
        clip_samples, clip_seconds, embedding_size, frontend, frontend_preset, encoder,
        width, epoch, config_sha256, hop_samples, first_frame_samples, min_samples,
        clar_ray_version, torch_version.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``config.yaml`` or no ``encoder.pt``.
        ExportError: The traced model does not reproduce the encoder.
    """
    digest = config_hash(run_dir)
    extractor, info = artifacts.load_encoder(run_dir)
    eager = build_embedding_model(extractor, info, config_sha256=digest)
    clip = int(info["clip_samples"])
    example = torch.rand(2, max(clip, eager.min_samples),
                         generator=torch.Generator().manual_seed(1)) * 2 - 1
    scripted = _trace(eager, example)
    # Other lengths than the traced one (odd, shorter, longer), and shorter than min_samples.
    _check_same(eager, scripted, [clip // 2 + 7, clip + clip // 2 + 3,
                                  eager.min_samples // 2 + 1])
    buffer = io.BytesIO()
    with _torchscript_quiet():
        torch.jit.save(scripted, buffer, _extra_files={METADATA_FILE: eager.metadata})
    storage.write_bytes(out, buffer.getvalue())
    return dict(json.loads(eager.metadata))


def _archive_metadata(data: bytes) -> dict[str, Any] | None:
    """The metadata of a TorchScript archive written by ``export_run``, or None."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = [n for n in archive.namelist() if n.endswith(f"/extra/{METADATA_FILE}")]
            return dict(json.loads(archive.read(names[0]))) if names else None
    except zipfile.BadZipFile:
        return None


def is_exported(path: str) -> bool:
    """True if ``path`` is a file written by ``export_run``."""
    return storage.exists(path) and _archive_metadata(storage.read_bytes(path)) is not None


def read_metadata(path: str) -> dict[str, Any]:
    """The metadata of an exported file (without loading the model).

    Raises:
        FileNotFoundError: No file at ``path``.
        ValueError: ``path`` is not a file written by ``clar-ray export``.
    """
    if not storage.exists(path):
        raise FileNotFoundError(f"no exported model at {path}")
    metadata = _archive_metadata(storage.read_bytes(path))
    if metadata is None:
        raise ValueError(f"{path} is not a file written by clar-ray export (no "
                         f"extra/{METADATA_FILE} in it)")
    return metadata


def load_exported(path: str, device: torch.device | str = "cpu"
                  ) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """Load an exported file (``torch.jit.load``) and its metadata.

    Raises:
        FileNotFoundError: No file at ``path``.
        ValueError: ``path`` is not a file written by ``clar-ray export``, or of a newer format.
    """
    metadata = read_metadata(path)
    if int(metadata.get("format", 0)) > EXPORT_FORMAT:
        raise ValueError(f"{path} has export format {metadata['format']}, newer than this "
                         f"clar-ray's {EXPORT_FORMAT}: upgrade clar-ray")
    with _torchscript_quiet():
        model = torch.jit.load(io.BytesIO(storage.read_bytes(path)), map_location=device)
    return model.eval(), metadata
