"""Linear evaluation of a frozen encoder: feature extraction, linear probe, kNN, ``result.json``.

Legend: N clips, T samples, D features, C classes.

    prepared split (int16 pcm, label) ──extract_features──▶ features (N, D) float32
        ├─ linear_probe: standardise (train statistics) → linear layer, Adam, all train labels
        └─ knn_accuracy: cosine similarity, k nearest train clips, similarity-weighted vote

The test side is always the raw clips of the eval split: no augmentation is ever applied here,
and the probe trains on *every* labelled training clip, whatever ``data.label_fraction`` the
encoder's training saw. ``Probe`` does this during training (learning curves); ``evaluate_run``
does it once for a finished run, with a progress bar on a terminal (:mod:`clar_ray.console`),
and writes ``RUN_DIR/result.json``. The scores themselves are :mod:`clar_ray.scoring`'s pure
functions (re-exported here); embedding export with Ray Data lives in :mod:`clar_ray.embed`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from clar_ray import artifacts, runlog, storage
from clar_ray.config import JobConfig
from clar_ray.data.manifest import Manifest, load_split
from clar_ray.scoring import KNN_TEMPERATURE, PROBE_BATCH_SIZE, knn_accuracy, linear_probe

__all__ = [
    "KNN_TEMPERATURE",
    "PROBE_BATCH_SIZE",
    "Probe",
    "check_compatible",
    "default_device",
    "evaluate_run",
    "extract_features",
    "feature_size",
    "knn_accuracy",
    "linear_probe",
    "load_run_job",
    "result_from_training",
]

_PCM_SCALE = 1.0 / 32768.0

Extractor = Callable[[Tensor], Tensor] | nn.Module


def _pcm_to_float(pcm: Tensor) -> Tensor:
    """int16 PCM → float32 in [-1, 1) (the same values as the training stream's conversion)."""
    return pcm.to(torch.float32) * _PCM_SCALE


def _check_pcm(pcm: np.ndarray) -> np.ndarray:
    pcm = np.asarray(pcm)
    if pcm.ndim != 2:
        raise ValueError(f"pcm must have shape (N, T), got {pcm.shape}")
    if pcm.dtype not in (np.int16, np.float32):
        raise TypeError(f"pcm must be int16 or float32, got {pcm.dtype}")
    if pcm.shape[0] == 0:
        raise ValueError("pcm holds no clips (N = 0): nothing to extract features from")
    return pcm


def extract_features(extractor: Extractor, pcm: np.ndarray, *, batch_size: int = 256,
                     device: torch.device | str = "cpu",
                     progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Encode clips with a frozen extractor, in batches, without gradients or augmentation.

    Args:
        extractor: ``(B, T)`` float32 waves → ``(B, D)`` features. An ``nn.Module`` is moved to
            ``device`` and run in eval mode, then put back in the mode it had; any other callable
            is called as is (put its modules in eval mode yourself).
        pcm: Clips ``(N, T)``: int16 PCM (scaled by 1/32768) or float32 waves.
        batch_size: Clips per forward pass.
        device: Where the extractor runs.
        progress: Called with the clips of each batch done (a progress bar's ``update``).

    Returns:
        Features ``(N, D)`` float32 on the CPU, in the order of ``pcm``.

    Raises:
        ValueError: ``pcm`` is not 2-D or empty, ``batch_size`` < 1, or the extractor's output
            is not ``(B, D)``.
        TypeError: ``pcm`` is neither int16 nor float32.
    """
    pcm = _check_pcm(pcm)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    module = extractor if isinstance(extractor, nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.to(device).eval()
    chunks: list[Tensor] = []
    try:
        with torch.no_grad():
            for start in range(0, pcm.shape[0], batch_size):
                chunk = np.require(pcm[start:start + batch_size], requirements=["C", "W"])
                batch = torch.from_numpy(chunk)
                batch = batch.to(device)  # int16 travels at half the bytes of float32
                wave = _pcm_to_float(batch) if batch.dtype == torch.int16 else batch  # (B, T)
                feats = extractor(wave)  # (B, D)
                if feats.dim() != 2 or feats.shape[0] != wave.shape[0]:
                    raise ValueError(f"the extractor must return (B, D) = ({wave.shape[0]}, D), "
                                     f"got {tuple(feats.shape)}")
                chunks.append(feats.float().cpu())
                if progress is not None:
                    progress(wave.shape[0])
    finally:
        if module is not None:
            module.train(was_training)
    return torch.cat(chunks).numpy()


class Probe:
    """Linear probe + kNN on one prepared dataset, for learning curves during training.

    The train and eval splits are read once, raw (never augmented), with every label: the
    probe trains on all training clips whatever ``data.label_fraction`` training used. Each
    :meth:`run` extracts features with the current encoder and scores them; only the linear
    layer trains, on the features.

    Args:
        job: The job (data path and splits, ``eval`` settings, ``train.seed``).
        device: Where features are extracted and the probe runs.
        data: Another prepared dataset to probe on instead of ``job.data.path``.

    Attributes:
        train_y: Labels of the training split ``(N,)``.
        test_y: Labels of the eval split ``(M,)``.
        last_seconds: Wall time of the last :meth:`run` (extraction + probe + kNN).
    """

    def __init__(self, job: JobConfig, *, device: torch.device | str = "cpu",
                 data: str | None = None) -> None:
        self.path = data or job.data.path
        if not self.path:
            raise ValueError("data.path is empty: the probe needs a prepared dataset")
        self.job = job
        self.device = torch.device(device)
        train = load_split(self.path, job.data.train_split, columns=["pcm", "label"])
        test = load_split(self.path, job.data.eval_split, columns=["pcm", "label"])
        self.train_pcm, self.train_y = train["pcm"], train["label"]
        self.test_pcm, self.test_y = test["pcm"], test["label"]
        self.last_seconds = 0.0

    @property
    def train_rows(self) -> int:
        """Training clips the probe learns from (the whole training split)."""
        return int(self.train_y.shape[0])

    @property
    def test_rows(self) -> int:
        """Eval clips the probe is scored on."""
        return int(self.test_y.shape[0])

    def features(self, extractor: Extractor, progress: Callable[[int], None] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Features of the raw train and eval clips: ``(N, D)`` and ``(M, D)`` float32.

        ``progress`` is called with the clips of each batch done (train, then eval clips).
        """
        size, device = self.job.eval.batch_size, self.device
        train_x = extract_features(extractor, self.train_pcm, batch_size=size, device=device,
                                   progress=progress)
        test_x = extract_features(extractor, self.test_pcm, batch_size=size, device=device,
                                  progress=progress)
        return train_x, test_x

    def score(self, train_x: np.ndarray, test_x: np.ndarray,
              progress: Callable[[int], None] | None = None) -> dict[str, float]:
        """Linear-probe and kNN accuracy of given features (rows in split order).

        ``progress`` is called with 1 after each epoch of the linear probe.
        """
        ev = self.job.eval
        result = linear_probe(train_x, self.train_y, test_x, self.test_y,
                              epochs=ev.probe_epochs, lr=ev.probe_lr,
                              weight_decay=ev.probe_weight_decay, seed=self.job.train.seed,
                              device=self.device, progress=progress)
        result["knn_top1"] = knn_accuracy(train_x, self.train_y, test_x, self.test_y,
                                          k=ev.knn_k, device=self.device)
        return result

    def run(self, frontend: nn.Module, encoder: nn.Module) -> dict[str, float]:
        """Probe the current encoder: ``{"linear_top1": ..., "knn_top1": ...}``.

        Both modules are put in eval mode for the extraction (batch norm uses its running
        statistics) and back in their previous modes afterwards. They stay on their device:
        pass the device they are on to the constructor.
        """
        started = time.perf_counter()
        modes = [(m, m.training) for m in (frontend, encoder)]
        try:
            for module, _ in modes:
                module.eval()
            train_x, test_x = self.features(lambda wave: encoder(frontend(wave)))
        finally:
            for module, mode in modes:
                module.train(mode)
        result = self.score(train_x, test_x)
        self.last_seconds = time.perf_counter() - started
        return result


def load_run_job(run_dir: str) -> JobConfig:
    """The job a run was trained with (``RUN_DIR/config.yaml``; local path or URI)."""
    path = artifacts.run_file(run_dir, artifacts.CONFIG_FILE)
    if not storage.exists(path):
        raise FileNotFoundError(f"no {artifacts.CONFIG_FILE} in {run_dir}: not a run directory")
    return JobConfig.from_dict(yaml.safe_load(storage.read_text(path)) or {})


def check_compatible(manifest: Manifest, info: dict[str, Any], data: str) -> None:
    """Refuse a dataset whose audio format differs from the one the encoder was trained on.

    Raises:
        ValueError: naming both sample rates or clip lengths.
    """
    want = (int(info["sample_rate"]), int(info["clip_samples"]))
    have = (manifest.sample_rate, manifest.clip_samples)
    if want != have:
        raise ValueError(
            f"{data} holds clips of {have[1]} samples at {have[0]} Hz, but the encoder was "
            f"trained on {want[1]} samples at {want[0]} Hz: prepare the data with "
            f"--sample-rate {want[0]} and a clip of {want[1] / want[0]:g} s")


def feature_size(extractor: nn.Module) -> int:
    """D, the features per clip of an extractor (its ``num_features``)."""
    size = getattr(extractor, "num_features", None)
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"{type(extractor).__name__} has no positive int num_features "
                         f"(got {size!r}): pass a clar_ray.models.FeatureExtractor")
    return size


def default_device() -> torch.device:
    """The first GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def evaluate_run(run_dir: str, data: str | None = None) -> dict[str, Any]:
    """Evaluate a finished run's encoder; write ``RUN_DIR/result.json`` and TensorBoard scalars.

    Args:
        run_dir: The run directory (local path or URI) with ``config.yaml`` and ``encoder.pt``.
        data: A prepared dataset to evaluate on instead of the job's ``data.path``; it must
            have the encoder's sample rate and clip length, and the job's split names.

    Returns:
        What ``result.json`` holds: ``linear_top1``, ``knn_top1`` (fractions), ``data``,
        ``train_split``, ``eval_split``, ``epoch`` (epochs the encoder trained),
        ``label_fraction`` (what training saw; the probe uses every label), ``objective``,
        ``train_rows``, ``test_rows``, ``knn_k``, ``num_features``, ``seconds`` and
        ``source`` (``"evaluate"``; ``"training"`` when :func:`result_from_training` wrote it).

    Raises:
        FileNotFoundError: No run or no trained encoder in ``run_dir``.
        ValueError: ``data`` does not match the encoder's audio format.
    """
    job = load_run_job(run_dir)
    extractor, info = artifacts.load_encoder(run_dir)
    path = data or job.data.path
    check_compatible(Manifest.read(path), info, path)
    started = time.perf_counter()
    probe = Probe(job, device=default_device(), data=path)
    scores = _probe_with_progress(probe, extractor)
    return _write_result(run_dir, job, scores, data=path, epoch=int(info["epoch"]),
                         rows=(probe.train_rows, probe.test_rows),
                         num_features=feature_size(extractor),
                         seconds=time.perf_counter() - started, source="evaluate")


def _probe_with_progress(probe: Probe, extractor: nn.Module) -> dict[str, float]:
    """``probe.score(*probe.features(extractor))`` with a bar per stage on a terminal."""
    from clar_ray.console import Progress

    with Progress("evaluate: features", probe.train_rows + probe.test_rows, unit="clip") as bar:
        train_x, test_x = probe.features(extractor, progress=bar.update)
    with Progress("evaluate: linear probe", probe.job.eval.probe_epochs, unit="epoch") as bar:
        return probe.score(train_x, test_x, progress=bar.update)


def result_from_training(run_dir: str) -> dict[str, Any] | None:
    """Write ``result.json`` from the probe training ran on its last epoch, if it ran one.

    Training probes the final encoder on its own data at its last epoch (``eval.every_epochs``
    > 0), on the training device; probing it again would give the same numbers. Returns what
    :func:`evaluate_run` returns, or None when the last epoch was not probed.
    """
    records = runlog.read_metrics(run_dir)
    last = records[-1] if records else {}
    if "linear_top1" not in last or "knn_top1" not in last:
        return None
    job = load_run_job(run_dir)
    extractor, info = artifacts.load_encoder(run_dir)
    if int(last["epoch"]) + 1 != int(info["epoch"]):
        return None
    manifest = Manifest.read(job.data.path)
    rows = (manifest.split(job.data.train_split).rows, manifest.split(job.data.eval_split).rows)
    return _write_result(run_dir, job, last, data=job.data.path, epoch=int(info["epoch"]),
                         rows=rows, num_features=feature_size(extractor),
                         seconds=float(last.get("probe_seconds", 0.0)), source="training")


def _write_result(run_dir: str, job: JobConfig, scores: dict[str, Any], *, data: str,
                  epoch: int, rows: tuple[int, int], num_features: int, seconds: float,
                  source: str) -> dict[str, Any]:
    """Write ``result.json`` and the ``eval/*`` scalars (:func:`clar_ray.runlog.eval_step`)."""
    result: dict[str, Any] = {
        "linear_top1": float(scores["linear_top1"]),
        "knn_top1": float(scores["knn_top1"]),
        "data": data,
        "train_split": job.data.train_split,
        "eval_split": job.data.eval_split,
        "epoch": epoch,
        "label_fraction": job.data.label_fraction,
        "objective": job.objective.name,
        "train_rows": rows[0],
        "test_rows": rows[1],
        "knn_k": job.eval.knn_k,
        "num_features": num_features,
        "seconds": round(seconds, 3),
        "source": source,  # "training" (its last epoch's probe) or "evaluate"
    }
    storage.write_json(artifacts.run_file(run_dir, artifacts.RESULT_FILE), result)
    with runlog.Board(run_dir) as board:
        board.scalars("eval", {"linear_top1": result["linear_top1"],
                               "knn_top1": result["knn_top1"]}, runlog.eval_step(epoch))
    return result
