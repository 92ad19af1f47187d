"""Batched torch augmentations for the training device, and SLICER's k-mix.

:class:`BatchAugmenter` runs any of the seven augmentations as tensor ops over a batch with
per-example parameters: the cheap ones here, pitch shift and time stretch by the batched phase
vocoder of :mod:`clar_ray.augment.batch_vocoder`. It is meant for CUDA, where it takes a
job's sequence, or its tail, off the CPU actors (:mod:`clar_ray.augment.placement`); it also
runs on CPU tensors (the tests use that), but there the numpy ``Augmenter`` costs less CPU.
Its parameters are drawn on the CPU by the same per-row rule as
:class:`clar_ray.augment.compose.Augmenter` (one ``SeedSequence`` child per row and step) and
its noise comes from the same counter-based integer hash (``clar_ray.augment.noise``), so a
clip's view does not depend on the batch it is in or on the device, and equals the numpy
result to float32 rounding (~1e-7; a batched CUDA FFT, used for pink and brown noise, may
also round differently with the batch size).

:func:`kmix` is the label-free mixup of SLICER (Seth et al., ICASSP 2023) on log-mel
spectrograms (see its docstring).

Legend: B examples in a batch, T samples (or frames), M memory items, K clusters,
D embedding size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from clar_ray.augment import signal
from clar_ray.augment.batch_vocoder import pitch_shift, time_stretch
from clar_ray.augment.compose import (
    check_augmenter_args,
    check_batch_ids,
    draw_step,
    resolve_sequence,
    seed_entropy,
    split_for_device,
)
from clar_ray.augment.presets import AUGMENTATIONS

_MASK32 = 0xFFFFFFFF


# --------------------------------------------------------------------------- hashed noise


def _mul32(x: Tensor, constant: int) -> Tensor:
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK32


def _mix32(x: Tensor) -> Tensor:
    """The integer hash of ``clar_ray.augment.signal`` on int64 tensors (bit-identical)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def hash_uniform(keys: Tensor, n: int, offset: int = 0) -> Tensor:
    """Uniform numbers in (0, 1]: (B,) int64 keys → (B, n) float32, bit-identical to numpy."""
    counters = _mix32(torch.arange(offset, offset + n, device=keys.device, dtype=torch.int64))
    bits = _mix32(counters[None, :] ^ keys.to(torch.int64)[:, None])
    return ((bits >> 8).to(torch.float32) + 0.5) * 2.0**-24


def hash_normal(keys: Tensor, n: int) -> Tensor:
    """Standard normal numbers, position t from counters 2t and 2t + 1: (B,) → (B, n) float32."""
    u = hash_uniform(keys, 2 * n, 0)
    return torch.sqrt(-2.0 * torch.log(u[:, 0::2])) * torch.cos(2.0 * math.pi * u[:, 1::2])


def _unit_rms(x: Tensor) -> Tensor:
    return x / x.square().mean(dim=-1, keepdim=True).sqrt().clamp_min(1e-12)


def colored_noise(keys: Tensor, n: int, exponents: Tensor) -> Tensor:
    """Unit-RMS noise with power ∝ 1/f**beta per row (beta 0 white, 1 pink, 2 brown): (B, n)."""
    white = hash_normal(keys, n)
    k = torch.arange(n // 2 + 1, device=keys.device, dtype=torch.float32)  # (F,)
    beta = exponents.to(torch.float32)[:, None]  # (B, 1)
    gain = torch.where(k > 0, k.clamp_min(1.0) ** (-0.5 * beta), torch.zeros_like(beta))
    shaped = torch.fft.irfft(torch.fft.rfft(white, dim=-1) * gain, n=n, dim=-1)
    return _unit_rms(torch.where(beta > 0, shaped, white))


# --------------------------------------------------------------------------- transforms


def _applied(draws: Mapping[str, Tensor]) -> Tensor:
    return draws["applied"].to(torch.bool)[:, None]


def _rms(waves: Tensor) -> Tensor:
    return waves.square().mean(dim=1, keepdim=True).sqrt()


def _fade_curve(shape: str, t: Tensor, fade_in: bool) -> Tensor:
    if shape == "linear":
        gain = t if fade_in else 1.0 - t
    elif shape == "exponential":
        gain = 2.0 ** (t - 1.0) * t if fade_in else 2.0 ** (-t) * (1.0 - t)
    elif shape == "logarithmic":
        gain = torch.log10(0.1 + t) + 1.0 if fade_in else torch.log10(1.1 - t) + 1.0
    elif shape == "quarter_sine":
        gain = torch.sin(t * math.pi / 2) if fade_in else torch.sin(t * math.pi / 2 + math.pi / 2)
    else:  # half_sine
        phase = t * math.pi - math.pi / 2 if fade_in else t * math.pi + math.pi / 2
        gain = torch.sin(phase) / 2 + 0.5
    return gain.clamp(0.0, 1.0)


def fade(waves: Tensor, draws: Mapping[str, Tensor]) -> Tensor:
    """Fade in and out per row: (B, T) → (B, T).

    Draw keys (each (B,)): ``applied``, ``shape`` (index of ``signal.FADE_SHAPES``),
    ``fade_in_samples``, ``fade_out_samples``.
    """
    n_samples = waves.shape[1]
    t = torch.arange(n_samples, device=waves.device, dtype=torch.float32)[None, :]  # (1, T)
    fade_in = draws["fade_in_samples"].to(torch.float32)[:, None]  # (B, 1)
    fade_out = draws["fade_out_samples"].to(torch.float32)[:, None]
    shape = draws["shape"].to(torch.int64)[:, None]
    ramp_in = (t / (fade_in - 1).clamp_min(1)).clamp(0, 1)
    start_out = n_samples - fade_out
    ramp_out = ((t - start_out) / (fade_out - 1).clamp_min(1)).clamp(0, 1)
    gain_in = torch.ones_like(ramp_in)
    gain_out = torch.ones_like(ramp_out)
    for shape_id, name in enumerate(signal.FADE_SHAPES):
        rows = shape == shape_id
        gain_in = torch.where(rows, _fade_curve(name, ramp_in, True), gain_in)
        gain_out = torch.where(rows, _fade_curve(name, ramp_out, False), gain_out)
    gain = torch.where(t < fade_in, gain_in, 1.0) * torch.where(t >= start_out, gain_out, 1.0)
    return torch.where(_applied(draws), waves * gain, waves)


def time_mask(waves: Tensor, draws: Mapping[str, Tensor]) -> Tensor:
    """Replace ``[start, start + length)`` of each row by noise or a constant: (B, T) → (B, T).

    Draw keys: ``applied``, ``start``, ``length``, ``fill_noise``, ``noise_std``,
    ``constant_value``, ``key``.
    """
    n_samples = waves.shape[1]
    t = torch.arange(n_samples, device=waves.device)[None, :]
    start = draws["start"].to(torch.int64)[:, None]
    inside = (t >= start) & (t < start + draws["length"].to(torch.int64)[:, None])
    noise = hash_normal(draws["key"], n_samples) * draws["noise_std"].to(torch.float32)[:, None]
    fill = torch.where(draws["fill_noise"].to(torch.bool)[:, None], noise,
                       draws["constant_value"].to(torch.float32)[:, None])
    return torch.where(inside & _applied(draws), fill, waves)


def time_shift(waves: Tensor, draws: Mapping[str, Tensor]) -> Tensor:
    """Circular shift of each row by ``shift_samples`` (``torch.roll`` per row): (B, T) → (B, T).

    Draw keys: ``applied``, ``shift_samples``.
    """
    n_samples = waves.shape[1]
    t = torch.arange(n_samples, device=waves.device)[None, :]
    index = torch.remainder(t - draws["shift_samples"].to(torch.int64)[:, None], n_samples)
    return torch.where(_applied(draws), torch.gather(waves, 1, index), waves)


def white_noise(waves: Tensor, draws: Mapping[str, Tensor]) -> Tensor:
    """Add white noise of RMS ``rms(row) * 10**(-snr_db / 20)``: (B, T) → (B, T).

    Draw keys: ``applied``, ``snr_db``, ``key``.
    """
    noise = _unit_rms(hash_normal(draws["key"], waves.shape[1]))
    scale = _rms(waves) * 10.0 ** (-draws["snr_db"].to(torch.float32)[:, None] / 20)
    return torch.where(_applied(draws), waves + noise * scale, waves)


def mixed_noise(waves: Tensor, draws: Mapping[str, Tensor]) -> Tensor:
    """Add white, pink or brown noise, or none, per row: (B, T) → (B, T).

    As ``signal.apply_mixed_noise``: ``snr`` rows add noise at their SNR, ``clar_code`` rows
    mix pink and brown noise as the official code does and clip to [0, 1].
    Draw keys: ``applied``, ``color`` (index of ``signal.NOISE_COLORS``), ``snr_db``, ``key``,
    ``clar_code``.
    """
    n_samples = waves.shape[1]
    color = draws["color"].to(torch.int64)
    exponents = torch.tensor(signal.NOISE_EXPONENTS, device=waves.device)[color]
    noise = colored_noise(draws["key"], n_samples, exponents)
    scale = _rms(waves) * 10.0 ** (-draws["snr_db"].to(torch.float32)[:, None] / 20)
    mixed = waves + noise * scale
    peak = noise.abs().amax(dim=1, keepdim=True)
    signal_gain = 0.5 + 0.7 * hash_uniform(draws["key"], n_samples, 2 * n_samples)
    noise_gain = 0.9 * hash_uniform(draws["key"], n_samples, 3 * n_samples)
    clar = (waves * signal_gain + noise / peak * noise_gain).clamp(0.0, 1.0)
    clar_rows = (draws["clar_code"].to(torch.bool) & (color != 0))[:, None]
    mixed = torch.where(clar_rows, clar, mixed)
    none_rows = (color == signal.NOISE_COLORS.index("none"))[:, None]
    return torch.where(_applied(draws) & ~none_rows, mixed, waves)


def _to_tensors(draws: signal.Draws, device: torch.device) -> dict[str, Tensor]:
    out = {}
    for key, values in draws.items():
        dtype = (torch.bool if values.dtype == np.bool_ else
                 torch.int64 if np.issubdtype(values.dtype, np.integer) else torch.float32)
        out[key] = torch.as_tensor(values).to(device=device, dtype=dtype)
    return out


class BatchAugmenter:
    """Apply a sequence of augmentations to a batch of tensors (meant for CUDA).

    The same seed rule as :class:`clar_ray.augment.compose.Augmenter`: row ``i`` of a batch
    gets parameters from ``step_rng(seed, epoch, sample_ids[i], view, first_step + k)``,
    drawn on the host by the same code, so a view's parameters do not depend on the device.

    Args:
        sequence: Augmentation names (every one has a batched version); empty is the
            identity.
        sample_rate: Samples per second.
        preset: ``paper`` or ``clar-code``.
        params: Per-augmentation overrides, as for ``Augmenter``.
        seed: The run's seed.
        first_step: Index of ``sequence[0]`` in the job's full sequence; use
            :meth:`device_part` to get it right for the tail of a sequence.

    Raises:
        ValueError: A name without a batched version, or an unknown name, preset or
            parameter.
    """

    def __init__(
        self,
        sequence: Sequence[str],
        *,
        sample_rate: int,
        preset: str = "paper",
        params: Mapping[str, Mapping[str, object]] | None = None,
        seed: int = 0,
        first_step: int = 0,
    ) -> None:
        check_augmenter_args(sample_rate=sample_rate, seed=seed, first_step=first_step)
        self._steps = resolve_sequence(sequence, preset, params)
        batched = [name for name, spec in AUGMENTATIONS.items() if spec.torch_name is not None]
        for spec, _ in self._steps:
            if spec.torch_name is None:
                raise ValueError(
                    f"augmentation {spec.name!r} has no batched torch version (it runs per clip "
                    f"on CPU: use Augmenter, or split_for_device); batched: {batched}")
        self._functions = [spec.torch_function for spec, _ in self._steps]
        self.sequence = tuple(sequence)
        self.sample_rate = int(sample_rate)
        self.seed = int(seed)
        self.first_step = int(first_step)

    @classmethod
    def device_part(
        cls,
        sequence: Sequence[str],
        *,
        sample_rate: int,
        preset: str = "paper",
        params: Mapping[str, Mapping[str, object]] | None = None,
        seed: int = 0,
    ) -> BatchAugmenter:
        """The augmenter of the device suffix of a job's full ``sequence``.

        Run ``Augmenter(cpu_part, ...)`` on CPU first, with ``split_for_device(sequence)``.
        """
        cpu_part, device_part = split_for_device(sequence)
        return cls(device_part, sample_rate=sample_rate, preset=preset, params=params,
                   seed=seed, first_step=len(cpu_part))

    def __repr__(self) -> str:
        return (f"BatchAugmenter({list(self.sequence)}, sample_rate={self.sample_rate}, "
                f"seed={self.seed}, first_step={self.first_step})")

    def __call__(self, waves: Tensor, sample_ids: Tensor, *, epoch: int, view: int) -> Tensor:
        """Augment a batch on its device.

        Args:
            waves: (B, T) floating tensor on any device (not modified).
            sample_ids: (B,) non-negative integer ids; keep them on the CPU to avoid a
                device sync.
            epoch: Epoch number.
            view: View index.

        Returns:
            (B, T) tensor of ``waves``' dtype and device.
        """
        if waves.ndim != 2 or not waves.is_floating_point():
            raise ValueError(f"waves must be a floating (B, T) tensor, got {waves.dtype} "
                             f"{tuple(waves.shape)}")
        ids = check_batch_ids(torch.as_tensor(sample_ids).detach().cpu().numpy(), waves.shape[0])
        seed_entropy(self.seed, epoch, 0, view)
        if waves.shape[0] == 0 or not self._steps:
            return waves.clone()
        out = waves.to(torch.float32)
        for k, ((spec, params), function) in enumerate(zip(self._steps, self._functions)):
            draws = draw_step(spec, params, seed=self.seed, epoch=epoch, view=view,
                              step=self.first_step + k, sample_ids=ids,
                              n_samples=waves.shape[1], sample_rate=self.sample_rate)
            assert function is not None
            # The phase-vocoder steps size their grids from the draws: they stay on the host.
            on = waves.device if spec.cheap else torch.device("cpu")
            out = function(out, _to_tensors(draws, on))
        return out.to(waves.dtype)


# --------------------------------------------------------------------------- k-mix


def kmix_embedding(x: Tensor) -> Tensor:
    """The features k-mix clusters on: the mean over time, flattened: (B, ..., T) → (B, D)."""
    return x.mean(dim=-1).flatten(1)


def spherical_kmeans(features: Tensor, num_clusters: int, generator: torch.Generator, *,
                     iterations: int = 20) -> Tensor:
    """Spherical k-means (cosine similarity), as SLICER clusters its dataset before training.

    Args:
        features: (N, D) embeddings, e.g. :func:`kmix_embedding` of the whole training set.
        num_clusters: K (SLICER's configuration: 4).
        generator: Chooses the initial centroids (K distinct rows).
        iterations: Assignment/update rounds (SLICER: 20).

    Returns:
        (K, D) unit-norm centroids.
    """
    if not 0 < num_clusters <= features.shape[0]:
        raise ValueError(f"num_clusters must be in [1, {features.shape[0]}], got {num_clusters}")
    points = torch.nn.functional.normalize(features.float(), dim=1)
    first = torch.randperm(points.shape[0], generator=generator,
                           device=generator.device)[:num_clusters].to(points.device)
    centroids = points[first].clone()
    for _ in range(iterations):
        assign = (points @ centroids.T).argmax(dim=1)  # (N,)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=num_clusters)[:, None]
        centroids = torch.where(counts > 0, torch.nn.functional.normalize(sums, dim=1),
                                centroids)
    return centroids


def kmix_partners(
    x_embedding: Tensor,
    pool_embedding: Tensor,
    generator: torch.Generator,
    *,
    max_ratio: float = 0.4,
    centroids: Tensor | None = None,
    top_k: int | None = 128,
    exclude_self: bool = True,
) -> tuple[Tensor, Tensor]:
    """Choose each example's mixing partner in the pool and its mixing weight.

    Args:
        x_embedding: (B, D) embeddings of the batch.
        pool_embedding: (M, D) embeddings of the candidates (the batch itself, or a memory).
        generator: Source of the weights and of the choice among candidates.
        max_ratio: alpha; weights are drawn from U(0, alpha).
        centroids: (K, D) cluster centroids; None picks partners uniformly (BYOL-A mixup).
        top_k: Choose among the first ``top_k`` candidates (pool order) only; None for all.
        exclude_self: Row i of the batch is pool item i and is not its own partner.

    Returns:
        ``(partners (B,) int64, weights (B,) float32)``; a row without any candidate gets
        itself as partner and weight 0.
    """
    if not 0.0 <= max_ratio <= 1.0:
        raise ValueError(f"max_ratio must be in [0, 1], got {max_ratio}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    batch, pool = x_embedding.shape[0], pool_embedding.shape[0]
    device = x_embedding.device
    weights = max_ratio * torch.rand(batch, generator=generator, device=generator.device)
    choice = torch.rand(batch, generator=generator, device=generator.device)
    weights, choice = weights.to(device), choice.to(device)
    not_self = torch.ones(batch, pool, dtype=torch.bool, device=device)
    if exclude_self:
        not_self &= torch.arange(pool, device=device)[None, :] != torch.arange(
            batch, device=device)[:, None]
    if centroids is None:
        candidates = not_self
    else:
        unit = torch.nn.functional.normalize(centroids.float().to(device), dim=1)  # (K, D)
        cluster_x = (torch.nn.functional.normalize(x_embedding.float(), dim=1) @ unit.T).argmax(1)
        cluster_pool = (torch.nn.functional.normalize(pool_embedding.float(), dim=1)
                        @ unit.T).argmax(1)
        in_cluster = cluster_pool[None, None, :] == torch.arange(
            unit.shape[0], device=device)[None, :, None]  # (1, K, M)
        available = (in_cluster & not_self[:, None, :]).sum(dim=2)  # (B, K)
        distance = torch.cdist(unit, unit)[cluster_x]  # (B, K): from each row's own cluster
        score = torch.where(available > 0, distance, torch.full_like(distance, -1.0))
        target = score.argmax(dim=1)  # the farthest cluster that has a candidate
        candidates = (cluster_pool[None, :] == target[:, None]) & not_self
    rank = candidates.cumsum(dim=1)  # 1-based rank among candidates, pool order
    if top_k is not None:
        candidates = candidates & (rank <= top_k)
    count = candidates.sum(dim=1)
    pick = (choice * count).floor().to(torch.int64).clamp_max((count - 1).clamp_min(0)) + 1
    partners = (candidates & (rank == pick[:, None])).to(torch.int64).argmax(dim=1)
    has = count > 0
    partners = torch.where(has, partners, torch.arange(batch, device=device).clamp_max(pool - 1))
    return partners, torch.where(has, weights, torch.zeros_like(weights))


def kmix(
    x: Tensor,
    generator: torch.Generator,
    *,
    max_ratio: float = 0.4,
    centroids: Tensor | None = None,
    memory: Tensor | None = None,
    top_k: int | None = 128,
    scale: Literal["log", "db", "linear"] = "log",
) -> Tensor:
    """SLICER's k-mix: mix each spectrogram with one from the farthest cluster.

    With ``x_i`` a log-mel spectrogram (natural log of power), k-mix draws
    ``lambda_i ~ U(0, alpha)`` (alpha = ``max_ratio`` = 0.4) and a partner ``x_j``, and returns
    the log-mixup-exp of BYOL-A::

        x~_i = log((1 - lambda_i) * exp(x_i) + lambda_i * exp(x_j))

    The partner is what makes it k-mix: before training, the time-averaged log-mel spectra of
    the dataset are clustered with spherical k-means (:func:`spherical_kmeans`; SLICER: 4
    clusters, 20 iterations); ``x_j`` is drawn uniformly among the first ``top_k`` (128)
    candidates whose cluster centroid is farthest from the centroid of ``x_i``'s cluster (the
    nearest such cluster that has candidates). Without centroids the partner is uniform: plain
    BYOL-A mixup. Labels are not needed.

    SLICER draws partners from a FIFO memory of 2048 past inputs and uses the clusters once it
    holds 128 items; here the pool is ``memory`` when given (e.g. the last batches,
    ``torch.cat([memory, x])[-2048:]``) and otherwise the batch itself, without the example.
    The reference code assigns ``x_i`` to a cluster from its un-normalised mean; here both
    sides are normalised, as its k-means is spherical.

    Args:
        x: (B, ..., T) spectrograms, time last, e.g. (B, F, T) or (B, C, F, T).
        generator: The only source of randomness (weights and partners).
        max_ratio: alpha, the largest weight of the partner.
        centroids: (K, D) centroids over :func:`kmix_embedding` features, or None.
        memory: (M, ..., T) candidate partners shaped like ``x``'s examples, or None.
        top_k: Candidates considered in the chosen cluster (pool order); None for all.
        scale: ``log`` (natural log of power), ``db`` (10 log10 of power) or ``linear``
            (plain mixup ``(1 - lambda) x_i + lambda x_j``).

    Returns:
        A new tensor shaped like ``x``.
    """
    if x.ndim < 2:
        raise ValueError(f"x must have shape (B, ..., T), got {tuple(x.shape)}")
    pool = x if memory is None else memory.to(x.device, x.dtype)
    if pool.shape[1:] != x.shape[1:]:
        raise ValueError(f"memory items must be shaped like x's, got {tuple(pool.shape[1:])} "
                         f"and {tuple(x.shape[1:])}")
    if pool.shape[0] == 0:
        return x.clone()
    partners, weights = kmix_partners(
        kmix_embedding(x), kmix_embedding(pool), generator, max_ratio=max_ratio,
        centroids=centroids, top_k=top_k, exclude_self=memory is None)
    partner = pool[partners]
    lam = weights.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    if scale == "linear":
        return (1.0 - lam) * x + lam * partner
    if scale not in ("log", "db"):
        raise ValueError(f"scale must be 'log', 'db' or 'linear', got {scale!r}")
    to_natural = 1.0 if scale == "log" else math.log(10.0) / 10.0
    mixed = torch.logaddexp(x * to_natural + torch.log1p(-lam),
                            partner * to_natural + torch.log(lam))
    return mixed / to_natural


__all__ = [
    "BatchAugmenter",
    "colored_noise",
    "fade",
    "hash_normal",
    "hash_uniform",
    "kmix",
    "kmix_embedding",
    "kmix_partners",
    "mixed_noise",
    "pitch_shift",
    "spherical_kmeans",
    "time_mask",
    "time_shift",
    "time_stretch",
    "white_noise",
]
