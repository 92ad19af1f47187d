"""CLAR's cross-entropy term learns inside CLAR about as fast as supervised training.

On separable clips (four tone classes, fresh random phases and noise every step, all rows
labelled) the same encoder, head sizes, optimiser and schedule train the supervised and the
CLAR objective for the same steps; CLAR's accuracy on its labelled views must reach the
supervised run's. Without a working CE term (no gradient through the class layer, a class
layer that cannot learn) CLAR stays near chance and this fails.
"""

from __future__ import annotations

import math

import torch

from clar_ray.config import JobConfig
from clar_ray.methods import build_method
from clar_ray.models import build_frontend
from clar_ray.optim import schedule
from clar_ray.train_loop import _make_optimizer

SAMPLE_RATE = 8000
SAMPLES = 2000
CLASSES = 4
BATCH = 32
STEPS = 40


def _views(step: int) -> tuple[torch.Tensor, ...]:
    """Two noisy views of BATCH clips: class k is a tone at 300·(k+1) Hz with a harmonic."""
    g = torch.Generator().manual_seed(1000 + step)
    labels = torch.arange(BATCH) % CLASSES
    t = torch.arange(SAMPLES) / SAMPLE_RATE
    freq = 300.0 * (labels + 1).float()[:, None]

    def view() -> torch.Tensor:
        phase = 2 * math.pi * torch.rand(BATCH, 1, generator=g)
        tone = torch.sin(2 * math.pi * freq * t + phase) + 0.5 * torch.sin(4 * math.pi * freq * t)
        gain = 0.3 + 0.7 * torch.rand(BATCH, 1, generator=g)
        return gain * tone + 0.3 * torch.randn(BATCH, SAMPLES, generator=g)

    return view(), view(), torch.arange(BATCH) + step * BATCH, labels


def _train(objective: str, *overrides: str) -> list[float]:
    """Labelled-row accuracy of each step (both views) under the job's optimiser and schedule."""
    job = JobConfig().replace([
        f"objective.name={objective}", "model.frontend=raw", "model.encoder=resnet18_1d",
        "model.width=4", "model.hidden_dim=32", "model.projection_dim=16",
        f"train.batch_size={BATCH}", "optim.warmup_epochs=0", *overrides])
    torch.manual_seed(0)
    frontend = build_frontend("raw", sample_rate=SAMPLE_RATE)
    method = build_method(job.model, job.objective, in_channels=1, num_classes=CLASSES)
    base_lr = schedule.scaled_lr(job.optim.lr, BATCH, job.optim.reference_batch)
    optimizer = _make_optimizer(job, method, base_lr)
    accuracy = []
    for step in range(STEPS):
        for group in optimizer.param_groups:
            group["lr"] = schedule.lr_at(step, base_lr=base_lr, warmup_steps=0,
                                         total_steps=STEPS)
        view_a, view_b, ids, labels = _views(step)
        loss, metrics = method(frontend(view_a), frontend(view_b), ids, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        accuracy.append(float(metrics["acc"]))
    return accuracy


def _late(accuracy: list[float]) -> float:
    return sum(accuracy[-8:]) / 8


def test_clar_cross_entropy_learns_as_fast_as_supervised() -> None:
    # LARS at lr 1.0 for this batch: the paper's optimiser, a budget where both learn.
    supervised = _train("supervised", f"optim.reference_batch={BATCH}")
    clar = _train("clar", f"optim.reference_batch={BATCH}")
    assert _late(supervised) > 0.5, supervised  # the task is learnable at this budget
    assert _late(clar) > 0.5, clar  # chance is 0.25
    assert _late(clar) >= _late(supervised) - 0.1, (clar, supervised)
