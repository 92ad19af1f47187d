"""Tests for clar_ray.objectives: slow references, analytic values, symmetry, descent, DDP."""

from __future__ import annotations

import copy
import math
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from clar_ray.objectives import (
    angular_contrastive_loss,
    clar_loss,
    cluster_contrastive_loss,
    contrastive_loss,
    ema_update,
    labelled_cross_entropy,
    nt_xent,
    slicer_loss,
    supcon,
    view_pair_ids,
)

# --------------------------------------------------------------------------------------------
# Slow references, written out with loops over rows and pairs (float64, plain math).


def _cos(u: Tensor, v: Tensor) -> float:
    return float(u.double() @ v.double() / (u.double().norm() * v.double().norm()))


def ref_contrastive(z: Tensor, keys: Tensor, t: float) -> float:
    """Khosla eq. 2 (L_out), loop form; one positive per row gives SimCLR eq. 1."""
    n = z.shape[0]
    total = 0.0
    for i in range(n):
        denominator = sum(math.exp(_cos(z[i], z[a]) / t) for a in range(n) if a != i)
        positives = [p for p in range(n) if p != i and keys[p] == keys[i]]
        total += -sum(
            math.log(math.exp(_cos(z[i], z[p]) / t) / denominator) for p in positives
        ) / len(positives)
    return total / n


def ref_acl(z: Tensor, ids: Tensor, t: float, margin: float, alpha: float) -> float:
    n = z.shape[0]
    angular = 0.0
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            d = math.acos(max(-1.0, min(1.0, _cos(z[i], z[j]))))
            angular += d**2 if ids[i] == ids[j] else max(0.0, margin - d) ** 2
    return alpha * ref_contrastive(z, ids, t) + (1 - alpha) * angular / n


def ref_cluster(c_a: Tensor, c_b: Tensor, t: float) -> float:
    k = c_a.shape[1]
    cols = [c_a[:, j] for j in range(k)] + [c_b[:, j] for j in range(k)]
    total = 0.0
    for i in range(2 * k):
        partner = (i + k) % (2 * k)
        denominator = sum(math.exp(_cos(cols[i], cols[a]) / t) for a in range(2 * k) if a != i)
        total += -math.log(math.exp(_cos(cols[i], cols[partner]) / t) / denominator)
    return total / (2 * k)


def ref_entropy_gap(c: Tensor) -> float:
    k = c.shape[1]
    total = float(c.double().sum())
    h = 0.0
    for j in range(k):
        p = float(c[:, j].double().sum()) / total
        h -= p * math.log(p) if p > 0 else 0.0
    return math.log(k) - h


def ref_slicer(
    sz: Tensor, tz: Tensor, sc: Tensor, tc: Tensor | None, ti: float, tcl: float, ew: float
) -> float:
    n = sz.shape[0] // 2
    instance = 0.0
    for q_view, k_view in ((0, 1), (1, 0)):
        for i in range(n):
            q = sz[q_view * n + i]
            logits = [_cos(q, tz[k_view * n + j]) / ti for j in range(n)]
            denominator = sum(math.exp(x) for x in logits)
            instance += -math.log(math.exp(logits[i]) / denominator) / n
    if tc is None:
        cluster = ref_cluster(sc[:n], sc[n:], tcl)
    else:
        cluster = 0.5 * (ref_cluster(sc[:n], tc[n:], tcl) + ref_cluster(sc[n:], tc[:n], tcl))
    entropy = ref_entropy_gap(sc[:n]) + ref_entropy_gap(sc[n:])
    return instance + cluster + ew * entropy


def two_views(n: int, d: int, seed: int = 0, noise: float = 0.3) -> Tensor:
    """(2n, d) rows [view a; view b], view b a noisy copy of view a."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g)
    return torch.cat([a, a + noise * torch.randn(n, d, generator=g)])


def assignments(rows: int, k: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(rows, k, generator=g), dim=1)


# --------------------------------------------------------------------------------------------
# Against the slow references.


def test_nt_xent_matches_loop_reference() -> None:
    z = two_views(5, 7)
    ids = torch.arange(5).repeat(2)
    assert nt_xent(z, ids, 0.5).item() == pytest.approx(ref_contrastive(z, ids, 0.5), rel=1e-5)


def test_supcon_matches_loop_reference_with_classes_and_unlabelled_rows() -> None:
    z = two_views(6, 5, seed=1)
    labels = torch.tensor([0, 1, 0, -1, 2, -1]).repeat(2)
    # Reference keys: the class, or the pair for unlabelled rows.
    keys = torch.tensor([0, 1, 0, 103, 2, 105]).repeat(2)
    expected = ref_contrastive(z, keys, 0.1)
    assert supcon(z, labels, 0.1).item() == pytest.approx(expected, rel=1e-5)


def test_acl_matches_loop_reference() -> None:
    z = two_views(4, 3, seed=2, noise=0.8)
    ids = torch.arange(4).repeat(2)
    # A margin above pi/2 makes every negative pair contribute to the hinge.
    for margin in (0.5, 2.0):
        got = angular_contrastive_loss(z, ids, temperature=0.2, margin=margin, alpha=0.3)
        assert got.item() == pytest.approx(ref_acl(z, ids, 0.2, margin, 0.3), rel=1e-4)


def test_cluster_loss_matches_loop_reference() -> None:
    c_a, c_b = assignments(6, 3, 0), assignments(6, 3, 1)
    got = cluster_contrastive_loss(c_a, c_b, 0.5)
    assert got.item() == pytest.approx(ref_cluster(c_a, c_b, 0.5), rel=1e-5)


@pytest.mark.parametrize("with_teacher_c", [False, True])
def test_slicer_matches_loop_reference(with_teacher_c: bool) -> None:
    sz, tz = two_views(4, 6, seed=3), two_views(4, 6, seed=4)
    sc, tc = assignments(8, 3, 5), assignments(8, 3, 6)
    tc_arg = tc if with_teacher_c else None
    total, parts = slicer_loss(sz, tz, sc, tc_arg, 0.1, 0.7, entropy_weight=0.5)
    expected = ref_slicer(sz, tz, sc, tc_arg, 0.1, 0.7, 0.5)
    assert total.item() == pytest.approx(expected, rel=1e-5)
    recombined = parts["instance"] + parts["cluster"] + 0.5 * parts["entropy"]
    assert recombined.item() == pytest.approx(total.item(), rel=1e-6)


# --------------------------------------------------------------------------------------------
# Analytic values.


def aligned(n: int) -> Tensor:
    """Orthogonal clips with identical views: rows i and i + n are both e_i."""
    eye = torch.eye(n)
    return torch.cat([eye, eye])


@pytest.mark.parametrize(("n", "t"), [(3, 0.5), (8, 0.1)])
def test_nt_xent_of_aligned_orthogonal_pairs(n: int, t: float) -> None:
    # Positive similarity 1, the 2n - 2 negatives 0: loss = log(1 + (2n - 2) e^{-1/t}).
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / t))
    got = nt_xent(aligned(n), torch.arange(n).repeat(2), t).item()
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_acl_of_aligned_orthogonal_pairs() -> None:
    n, t, alpha = 4, 0.5, 0.4
    z, ids = aligned(n), torch.arange(n).repeat(2)
    contrastive = math.log(1 + (2 * n - 2) * math.exp(-1 / t))
    # Negatives sit at pi/2: no hinge below it, (m - pi/2)^2 each above it. Positives at 0.
    small = angular_contrastive_loss(z, ids, t, margin=1.0, alpha=alpha)
    assert small.item() == pytest.approx(alpha * contrastive, abs=1e-4)
    big = angular_contrastive_loss(z, ids, t, margin=2.0, alpha=alpha)
    angular = (2 * n - 2) * (2.0 - math.pi / 2) ** 2
    assert big.item() == pytest.approx(alpha * contrastive + (1 - alpha) * angular, abs=1e-4)


def test_slicer_of_aligned_pairs_and_one_hot_balanced_clusters() -> None:
    n, ti, tc = 4, 0.2, 1.0
    z = aligned(n)
    c = aligned(n)  # K = n clusters, sample i in cluster i, both views: perfectly balanced
    total, parts = slicer_loss(z, z.clone(), c, None, ti, tc)
    assert parts["instance"].item() == pytest.approx(2 * math.log(1 + (n - 1) * math.exp(-1 / ti)))
    assert parts["cluster"].item() == pytest.approx(math.log(1 + (2 * n - 2) * math.exp(-1 / tc)))
    assert parts["entropy"].item() == pytest.approx(0.0, abs=1e-6)
    assert total.item() == pytest.approx((parts["instance"] + parts["cluster"]).item())


def test_entropy_term_penalises_collapsed_clusters() -> None:
    n, k = 4, 3
    z = two_views(n, 5)
    collapsed = torch.zeros(2 * n, k)
    collapsed[:, 0] = 1.0
    _, parts = slicer_loss(z, z, collapsed, None)
    assert parts["entropy"].item() == pytest.approx(2 * math.log(k))
    assert torch.isfinite(parts["cluster"])


# --------------------------------------------------------------------------------------------
# Symmetry and invariance.


def swap_views(x: Tensor) -> Tensor:
    n = x.shape[0] // 2
    return torch.cat([x[n:], x[:n]])


def test_contrastive_losses_are_symmetric_in_views_and_row_order() -> None:
    z = two_views(5, 4, seed=7)
    ids = torch.arange(5).repeat(2)
    labels = torch.tensor([0, 1, 1, -1, 0]).repeat(2)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    base = nt_xent(z, ids)
    assert nt_xent(swap_views(z), swap_views(ids)).item() == pytest.approx(base.item())
    assert nt_xent(z[perm], ids[perm]).item() == pytest.approx(base.item())
    sc = supcon(z, labels)
    assert supcon(swap_views(z), swap_views(labels)).item() == pytest.approx(sc.item())
    assert supcon(z[perm], labels[perm], ids=ids[perm]).item() == pytest.approx(sc.item())
    acl = angular_contrastive_loss(z, ids, margin=1.7)
    assert angular_contrastive_loss(z[perm], ids[perm], margin=1.7).item() == pytest.approx(
        acl.item()
    )


def test_slicer_is_symmetric_in_views_and_cluster_order() -> None:
    sz, tz = two_views(4, 6, seed=3), two_views(4, 6, seed=4)
    sc, tc = assignments(8, 3, 5), assignments(8, 3, 6)
    total, _ = slicer_loss(sz, tz, sc, tc)
    swapped, _ = slicer_loss(swap_views(sz), swap_views(tz), swap_views(sc), swap_views(tc))
    assert swapped.item() == pytest.approx(total.item(), rel=1e-6)
    cols = torch.tensor([2, 0, 1])
    relabelled, _ = slicer_loss(sz, tz, sc[:, cols], tc[:, cols])
    assert relabelled.item() == pytest.approx(total.item(), rel=1e-6)


def test_supcon_equals_nt_xent_when_every_pair_has_its_own_label() -> None:
    z = two_views(6, 5, seed=8)
    labels = torch.tensor([4, 0, 7, 2, 9, 1]).repeat(2)
    ids = torch.arange(6).repeat(2)
    assert supcon(z, labels, 0.3).item() == pytest.approx(nt_xent(z, ids, 0.3).item(), rel=1e-6)
    unlabelled = torch.full((12,), -1)
    assert supcon(z, unlabelled, 0.3).item() == pytest.approx(nt_xent(z, ids, 0.3).item(), rel=1e-6)


def test_acl_with_alpha_one_is_nt_xent() -> None:
    z, ids = two_views(5, 4, seed=9), torch.arange(5).repeat(2)
    got = angular_contrastive_loss(z, ids, temperature=0.2, margin=0.5, alpha=1.0)
    assert got.item() == pytest.approx(nt_xent(z, ids, 0.2).item(), rel=1e-6)


# --------------------------------------------------------------------------------------------
# CLAR's cross-entropy term.


def test_clar_ce_is_exactly_zero_without_labels_and_grads_stay_finite() -> None:
    z = two_views(4, 5).requires_grad_(True)
    logits = torch.randn(8, 3, requires_grad=True)
    total, parts = clar_loss(z, torch.arange(4).repeat(2), logits, torch.full((8,), -1))
    assert parts["cross_entropy"].item() == 0.0
    assert total.item() == pytest.approx(parts["nt_xent"].item())
    total.backward()
    assert logits.grad is not None and torch.equal(logits.grad, torch.zeros_like(logits))
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_labelled_cross_entropy_averages_over_labelled_rows_only() -> None:
    logits = torch.randn(6, 4)
    labels = torch.tensor([2, -1, 0, -1, -1, 3])
    keep = labels >= 0
    expected = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    torch.testing.assert_close(labelled_cross_entropy(logits, labels), expected)


def test_clar_ce_sums_the_two_views_means_like_the_released_code() -> None:
    # semi_supervised.py: F.cross_entropy(y_hat1, y) + F.cross_entropy(y_hat2, y) on the
    # labelled rows; the two views' logits differ, their labels are the same rows.
    logits = torch.randn(6, 4)
    labels = torch.tensor([2, -1, 0]).repeat(2)
    keep = labels[:3] >= 0
    ce = torch.nn.functional.cross_entropy
    expected = (ce(logits[:3][keep], labels[:3][keep])
                + ce(logits[3:][keep], labels[3:][keep]))
    z = two_views(3, 5)
    total, parts = clar_loss(z, torch.arange(3).repeat(2), logits, labels, 0.5, ce_weight=2.0)
    torch.testing.assert_close(parts["cross_entropy"], expected)
    assert total.item() == pytest.approx((parts["nt_xent"] + 2.0 * expected).item(), rel=1e-6)


# --------------------------------------------------------------------------------------------
# Numerics, validation and helpers.


def test_losses_compute_in_float32_under_autocast() -> None:
    z, ids = two_views(4, 8, seed=11), torch.arange(4).repeat(2)
    expected = nt_xent(z, ids, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = nt_xent(z, ids, 0.1)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_identical_rows_give_finite_acl_gradients() -> None:
    z = aligned(3).requires_grad_(True)
    angular_contrastive_loss(z, torch.arange(3).repeat(2), margin=2.0).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()


def test_row_without_positive_is_an_error_naming_the_key() -> None:
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"2 anchor.*no positive.*\[7, 5\]"):
        contrastive_loss(z, torch.tensor([0, 0, 7, 5]), 0.5)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: nt_xent(torch.randn(4, 3), torch.arange(2).repeat(2), 0.0), "temperature"),
        (lambda: nt_xent(torch.randn(4, 3), torch.arange(3), 0.5), "4 rows"),
        (lambda: nt_xent(torch.randn(4, 3), torch.zeros(4), 0.5), "integer"),
        (lambda: supcon(torch.randn(4, 3), torch.tensor([0, -2, 0, 1])), "-2"),
        (lambda: view_pair_ids(5), "5"),
        (lambda: angular_contrastive_loss(torch.randn(4, 3), torch.arange(4), alpha=1.5), "1.5"),
        (lambda: labelled_cross_entropy(torch.randn(3, 2), torch.tensor([0, 2, -1])), "2"),
        (lambda: slicer_loss(torch.randn(3, 2), torch.randn(3, 2), torch.rand(3, 2)), "even"),
        (lambda: cluster_contrastive_loss(torch.rand(3, 1), torch.rand(3, 1)), "clusters"),
    ],
)
def test_bad_arguments_are_rejected(call: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_view_pair_ids_outside_ddp() -> None:
    assert view_pair_ids(6).tolist() == [0, 1, 2, 0, 1, 2]


def test_ema_update() -> None:
    teacher, student = nn.Linear(3, 2), nn.Linear(3, 2)
    t0 = [p.detach().clone() for p in teacher.parameters()]
    ema_update(teacher, student, 1.0)
    for p, q in zip(teacher.parameters(), t0):
        torch.testing.assert_close(p, q)
    ema_update(teacher, student, 0.9)
    for p, q, s in zip(teacher.parameters(), t0, student.parameters()):
        torch.testing.assert_close(p, 0.9 * q + 0.1 * s)
    ema_update(teacher, student, 0.0)
    for p, s in zip(teacher.parameters(), student.parameters()):
        torch.testing.assert_close(p, s)
    with pytest.raises(ValueError, match="differ"):
        ema_update(nn.Linear(3, 2, bias=False), student, 0.5)
    with pytest.raises(ValueError, match="shape"):
        ema_update(nn.Linear(4, 2), student, 0.5)
    with pytest.raises(ValueError, match="1.5"):
        ema_update(teacher, student, 1.5)


def test_ema_update_follows_batchnorm_statistics_unless_told_not_to() -> None:
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    teacher = copy.deepcopy(student).requires_grad_(False)
    student(torch.randn(16, 3) + 5.0)  # train mode: the student's running stats move
    s_bn, t_bn = student[1], teacher[1]
    assert isinstance(s_bn, nn.BatchNorm1d) and isinstance(t_bn, nn.BatchNorm1d)
    assert t_bn.running_mean is not None and s_bn.running_mean is not None
    before = t_bn.running_mean.clone()
    ema_update(teacher, student, 0.9, include_buffers=False)
    torch.testing.assert_close(t_bn.running_mean, before)
    ema_update(teacher, student, 0.9)
    torch.testing.assert_close(t_bn.running_mean, 0.9 * before + 0.1 * s_bn.running_mean)
    assert t_bn.num_batches_tracked is not None and int(t_bn.num_batches_tracked) == 1


# --------------------------------------------------------------------------------------------
# Loss falls under a few SGD steps.


class TinyNet(nn.Module):
    """Linear projection, classifier and softmax cluster heads on a shared input."""

    def __init__(self, f: int = 6, d: int = 4, c: int = 3, k: int = 3) -> None:
        super().__init__()
        self.proj = nn.Linear(f, d)
        self.cls = nn.Linear(f, c)
        self.clu = nn.Linear(f, k)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.proj(x), self.cls(x), torch.softmax(self.clu(x), dim=1)


def _objective(name: str, model: nn.Module, teacher: nn.Module, x: Tensor) -> Tensor:
    n = x.shape[0] // 2
    ids = torch.arange(n).repeat(2)
    labels = torch.tensor([0, 1, -1, 2, -1, 0][:n]).repeat(2)
    z, logits, c = model(x)
    if name == "nt_xent":
        return nt_xent(z, ids, 0.5)
    if name == "supcon":
        return supcon(z, labels, 0.5)
    if name == "clar":
        return clar_loss(z, ids, logits, labels, 0.5)[0]
    if name == "acl":
        return angular_contrastive_loss(z, ids, 0.5, margin=1.0, alpha=0.5)
    with torch.no_grad():
        tz, _, tc = teacher(x)
    return slicer_loss(z, tz, c, tc, 0.5, 1.0)[0]


@pytest.mark.parametrize("name", ["nt_xent", "supcon", "clar", "acl", "slicer"])
def test_loss_falls_under_sgd(name: str) -> None:
    torch.manual_seed(0)
    model = TinyNet()
    teacher = copy.deepcopy(model).requires_grad_(False)
    x = two_views(6, 6, seed=12, noise=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    with torch.no_grad():
        first = _objective(name, model, teacher, x).item()
    for _ in range(30):
        opt.zero_grad()
        _objective(name, model, teacher, x).backward()
        opt.step()
        ema_update(teacher, model, 0.9)
    with torch.no_grad():
        last = _objective(name, model, teacher, x).item()
    assert math.isfinite(last)
    assert last < first - 0.05, f"{name}: {first:.4f} -> {last:.4f}"


# --------------------------------------------------------------------------------------------
# One process with the global batch == two gloo processes with half each (mean over workers
# of the losses; parameter gradients after DDP averaging). Workers get unequal row counts in
# one split, and in the CLAR case worker 1 has no labelled row.

WORLD = 2
SPLITS = {"equal": (3, 3), "unequal": (4, 2)}
CASES = ["nt_xent", "supcon", "acl", "acl_encoder", "clar", "supervised", "slicer",
         "slicer_teacher_c"]
F_IN = 6


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def case_data(split: tuple[int, ...]) -> dict[str, Any]:
    """Per-worker inputs for one split, each worker's rows laid out [view a; view b]."""
    g = torch.Generator().manual_seed(sum(split))
    torch.manual_seed(1)
    model = TinyNet(f=F_IN)
    teacher = TinyNet(f=F_IN)
    workers = []
    offset = 0
    for n in split:
        a = torch.randn(n, F_IN, generator=g)
        x = torch.cat([a, a + 0.4 * torch.randn(n, F_IN, generator=g)])
        ids = torch.arange(offset, offset + n).repeat(2)
        labels = torch.randint(0, 2, (n,), generator=g)
        labels[::2] = -1
        workers.append({"x": x, "ids": ids, "labels": labels.repeat(2)})
        offset += n
    workers[1]["clar_labels"] = torch.full_like(workers[1]["labels"], -1)
    workers[0]["clar_labels"] = workers[0]["labels"]
    return {"model": model.state_dict(), "teacher": teacher.state_dict(), "workers": workers}


def run_case(
    case: str, model: nn.Module, teacher: nn.Module, w: dict[str, Tensor]
) -> tuple[Tensor, dict[str, Tensor]]:
    z, logits, c = model(w["x"])
    parts: dict[str, Tensor] = {}
    if case == "nt_xent":
        loss = nt_xent(z, w["ids"], 0.5)
    elif case == "supcon":
        loss = supcon(z, w["labels"], 0.3)  # ids from the [a; b] layout
    elif case == "acl":
        loss = angular_contrastive_loss(z, w["ids"], 0.3, margin=1.8, alpha=0.4)
    elif case == "acl_encoder":  # the angular term on other rows (the encoder's features)
        loss = angular_contrastive_loss(z, w["ids"], 0.3, margin=1.8, alpha=0.4,
                                        z_angular=torch.cat([logits, c], dim=1))
    elif case == "clar":
        loss, parts = clar_loss(z, w["ids"], logits, w["clar_labels"], 0.5)
    elif case == "supervised":  # the supervised method's CE; worker 1 has no labelled row
        loss = labelled_cross_entropy(logits, w["clar_labels"])
    else:
        with torch.no_grad():
            tz, _, tc = teacher(w["x"])
        tc_arg = tc if case == "slicer_teacher_c" else None
        loss, parts = slicer_loss(z, tz, c, tc_arg, 0.2, 0.8)
    return loss, parts


def merged(workers: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """The global batch one process sees: all views a, then all views b."""

    def cat(key: str) -> Tensor:
        halves = [w[key].chunk(2) for w in workers]
        return torch.cat([h[0] for h in halves] + [h[1] for h in halves])

    return {key: cat(key) for key in workers[0]}


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    torch_dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    try:
        for split_name, split in SPLITS.items():
            data = case_data(split)
            for case in CASES:
                model = TinyNet(f=F_IN)
                model.load_state_dict(data["model"])
                teacher = TinyNet(f=F_IN)
                teacher.load_state_dict(data["teacher"])
                ddp = DistributedDataParallel(model, find_unused_parameters=True)
                loss, parts = run_case(case, ddp, teacher, data["workers"][rank])
                loss.backward()
                results[f"{split_name}/{case}"] = {
                    "loss": loss.item(),
                    "parts": {k: v.item() for k, v in parts.items()},
                    "grads": {
                        k: (p.grad if p.grad is not None else torch.zeros_like(p)).clone()
                        for k, p in model.named_parameters()
                    },
                }
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch_dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_ddp_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("split_name", list(SPLITS))
@pytest.mark.parametrize("case", CASES)
def test_two_workers_match_one_process(
    ddp_results: list[dict[str, Any]], case: str, split_name: str
) -> None:
    data = case_data(SPLITS[split_name])
    model = TinyNet(f=F_IN)
    model.load_state_dict(data["model"])
    teacher = TinyNet(f=F_IN)
    teacher.load_state_dict(data["teacher"])
    loss, parts = run_case(case, model, teacher, merged(data["workers"]))
    loss.backward()
    per_worker = [r[f"{split_name}/{case}"] for r in ddp_results]
    mean_loss = sum(r["loss"] for r in per_worker) / WORLD
    assert mean_loss == pytest.approx(loss.item(), rel=1e-5)
    for key, value in parts.items():
        assert sum(r["parts"][key] for r in per_worker) / WORLD == pytest.approx(
            value.item(), rel=1e-5, abs=1e-7
        )
    used = 0
    for name, p in model.named_parameters():
        expected = p.grad if p.grad is not None else torch.zeros_like(p)
        used += int(expected.abs().sum() > 0)
        for r in per_worker:  # DDP leaves the same averaged gradient on every worker
            torch.testing.assert_close(r["grads"][name], expected, rtol=1e-4, atol=1e-6)
    assert used >= 2  # the comparison covered real gradients, not only zeros
