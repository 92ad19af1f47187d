"""Linear evaluation of a frozen encoder: feature extraction, linear probe, kNN, ``result.json``.

Legend: N clips, T samples, D features, C classes.

    prepared split (int16 pcm, label) ──extract_features──▶ features (N, D) float32
        ├─ linear_probe: standardise (train statistics) → linear layer, Adam, all train labels
        └─ knn_accuracy: cosine similarity, k nearest train clips, similarity-weighted vote

The test side is always the raw clips of the eval split: no augmentation is ever applied here,
and the probe trains on *every* labelled training clip, whatever ``data.label_fraction`` the
encoder's training saw. ``Probe`` does this during training (learning curves); ``evaluate_run``
does it once for a finished run and writes ``RUN_DIR/result.json``. Embedding export with Ray
Data lives in :mod:`clar_ray.embed`.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from clar_ray import artifacts, storage
from clar_ray.config import JobConfig
from clar_ray.data.manifest import Manifest, load_split

__all__ = [
    "KNN_TEMPERATURE",
    "PROBE_BATCH_SIZE",
    "Probe",
    "check_compatible",
    "default_device",
    "embed_run",
    "evaluate_run",
    "extract_features",
    "feature_size",
    "knn_accuracy",
    "linear_probe",
    "load_run_job",
    "result_from_training",
]

#: Temperature of the kNN vote weights ``exp(cos / t)`` (Wu et al. 2018; DINO, solo-learn).
KNN_TEMPERATURE = 0.07
#: Rows per Adam step of the linear probe.
PROBE_BATCH_SIZE = 256
#: Elements of one test-by-train similarity block in ``knn_accuracy`` (bounds its memory).
_KNN_BLOCK_ELEMENTS = 1 << 24
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
                     device: torch.device | str = "cpu") -> np.ndarray:
    """Encode clips with a frozen extractor, in batches, without gradients or augmentation.

    Args:
        extractor: ``(B, T)`` float32 waves → ``(B, D)`` features. An ``nn.Module`` is moved to
            ``device`` and run in eval mode, then put back in the mode it had; any other callable
            is called as is (put its modules in eval mode yourself).
        pcm: Clips ``(N, T)``: int16 PCM (scaled by 1/32768) or float32 waves.
        batch_size: Clips per forward pass.
        device: Where the extractor runs.

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
    finally:
        if module is not None:
            module.train(was_training)
    return torch.cat(chunks).numpy()


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
                 batch_size: int = PROBE_BATCH_SIZE) -> dict[str, float]:
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

    def features(self, extractor: Extractor) -> tuple[np.ndarray, np.ndarray]:
        """Features of the raw train and eval clips: ``(N, D)`` and ``(M, D)`` float32."""
        size = self.job.eval.batch_size
        return (extract_features(extractor, self.train_pcm, batch_size=size, device=self.device),
                extract_features(extractor, self.test_pcm, batch_size=size, device=self.device))

    def score(self, train_x: np.ndarray, test_x: np.ndarray) -> dict[str, float]:
        """Linear-probe and kNN accuracy of given features (rows in split order)."""
        ev = self.job.eval
        result = linear_probe(train_x, self.train_y, test_x, self.test_y,
                              epochs=ev.probe_epochs, lr=ev.probe_lr,
                              weight_decay=ev.probe_weight_decay, seed=self.job.train.seed,
                              device=self.device)
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
    device = default_device()
    started = time.perf_counter()
    probe = Probe(job, device=device, data=path)
    scores = probe.score(*probe.features(extractor))
    return _write_result(run_dir, job, scores, data=path, epoch=int(info["epoch"]),
                         rows=(probe.train_rows, probe.test_rows),
                         num_features=feature_size(extractor),
                         seconds=time.perf_counter() - started, source="evaluate")


def result_from_training(run_dir: str) -> dict[str, Any] | None:
    """Write ``result.json`` from the probe training ran on its last epoch, if it ran one.

    Training probes the final encoder on its own data at its last epoch (``eval.every_epochs``
    > 0), on the training device; probing it again would give the same numbers. Returns what
    :func:`evaluate_run` returns, or None when the last epoch was not probed.
    """
    path = artifacts.run_file(run_dir, artifacts.METRICS_FILE)
    if not storage.exists(path):
        return None
    lines = [line for line in storage.read_text(path).splitlines() if line.strip()]
    last = json.loads(lines[-1]) if lines else {}
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
    """Write ``result.json`` and the ``eval/*`` scalars (at the last epoch's index)."""
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
    # TensorBoard's x axis of epoch/* is the epoch index: the encoder of `epoch` trained
    # epochs is the one at index epoch - 1.
    _log_scalars(run_dir, {"eval/linear_top1": result["linear_top1"],
                           "eval/knn_top1": result["knn_top1"]}, step=max(epoch - 1, 0))
    return result


def _log_scalars(run_dir: str, values: dict[str, float], step: int) -> None:
    """Add scalars to the run's TensorBoard folder (through a local folder for URIs)."""
    from tensorboardX import SummaryWriter

    target = artifacts.run_file(run_dir, artifacts.TENSORBOARD_DIR)
    remote = storage.is_uri(run_dir)
    folder = tempfile.mkdtemp(prefix="clar-ray-tb-") if remote else target
    writer = SummaryWriter(folder)
    try:
        for tag, value in values.items():
            writer.add_scalar(tag, value, step)
    finally:
        writer.close()
    if remote:
        storage.upload_dir(folder, target)


def embed_run(run_dir: str, data: str, out: str, *, split: str | None = None,
              batch_size: int = 256) -> int:
    """Write one embedding per clip with Ray Data; see :func:`clar_ray.embed.embed_run`."""
    from clar_ray.embed import embed_run as _embed_run

    return _embed_run(run_dir, data, out, split=split, batch_size=batch_size)
