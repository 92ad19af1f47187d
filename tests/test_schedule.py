"""Tests for clar_ray.optim.schedule: warmup + cosine values, monotonicity, scaling."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import pytest
import torch
from torch import nn

from clar_ray.optim import lr_at, scaled_lr, warmup_cosine

BASE, FINAL, WARMUP, TOTAL = 0.8, 0.01, 10, 50
sched = partial(lr_at, base_lr=BASE, warmup_steps=WARMUP, total_steps=TOTAL, final_lr=FINAL)


def test_values_at_start_warmup_end_middle_and_end() -> None:
    assert sched(0) == pytest.approx(BASE / WARMUP)
    assert sched(WARMUP - 1) == pytest.approx(BASE)
    assert sched(WARMUP) == pytest.approx(BASE)
    assert sched((WARMUP + TOTAL) // 2) == pytest.approx((BASE + FINAL) / 2)
    assert sched(TOTAL) == pytest.approx(FINAL)
    last_step = FINAL + 0.5 * (BASE - FINAL) * (1 + math.cos(math.pi * 39 / 40))
    assert sched(TOTAL - 1) == pytest.approx(last_step)
    assert FINAL < sched(TOTAL - 1) < FINAL + 0.002 * BASE
    assert sched(TOTAL + 100) == FINAL


def test_monotonic_in_each_phase() -> None:
    warm = [sched(s) for s in range(WARMUP)]
    decay = [sched(s) for s in range(WARMUP, TOTAL + 1)]
    assert all(a < b for a, b in zip(warm, warm[1:]))
    assert all(a > b for a, b in zip(decay, decay[1:]))
    assert min(warm + decay) > 0


def test_without_warmup_starts_at_base() -> None:
    f = partial(lr_at, base_lr=1.0, warmup_steps=0, total_steps=4)
    assert [f(s) for s in range(5)] == pytest.approx(
        [1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4)), 0.0]
    )


def test_warmup_over_the_whole_run() -> None:
    f = partial(lr_at, base_lr=1.0, warmup_steps=4, total_steps=4)
    assert [f(s) for s in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 0.0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"step": -1}, "step"),
        ({"total_steps": 0}, "total_steps"),
        ({"warmup_steps": 60}, "warmup_steps"),
        ({"base_lr": -1.0}, "base_lr"),
        ({"final_lr": 2.0}, "final_lr"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {
        "step": 0,
        "base_lr": 1.0,
        "warmup_steps": 5,
        "total_steps": 50,
        "final_lr": 0.0,
    }
    args.update(kwargs)
    step = args.pop("step")
    with pytest.raises(ValueError, match=match):
        lr_at(step, **args)


def test_scaled_lr_is_linear_in_batch() -> None:
    assert scaled_lr(1.0, 1024) == 1.0
    assert scaled_lr(1.0, 256) == 0.25
    assert scaled_lr(0.3, 512, reference_batch=256) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="0"):
        scaled_lr(1.0, 0)


def test_lambda_wrapper_follows_lr_at_for_each_group() -> None:
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    groups: list[dict[str, Any]] = [
        {"params": list(a.parameters()), "lr": 1.0},
        {"params": list(b.parameters())},
    ]
    opt = torch.optim.SGD(groups, lr=0.1)
    scheduler = warmup_cosine(opt, warmup_steps=3, total_steps=10, final_lr_ratio=0.1)
    for step in range(12):
        for group, base in zip(opt.param_groups, (1.0, 0.1)):
            expected = lr_at(
                step, base_lr=base, warmup_steps=3, total_steps=10, final_lr=0.1 * base
            )
            assert group["lr"] == pytest.approx(expected)
        opt.step()
        scheduler.step()
    with pytest.raises(ValueError, match="1.5"):
        warmup_cosine(opt, warmup_steps=1, total_steps=2, final_lr_ratio=1.5)
