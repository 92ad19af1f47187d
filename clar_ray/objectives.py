"""Training objectives: NT-Xent, SupCon, CLAR, Angular Contrastive Loss and SLICER.

Every loss is a tensor function. Under DDP each worker passes only its own rows: anchors are the
local rows and candidates (negatives) are the whole global batch, gathered with
:func:`clar_ray.dist.gather_with_grad`. Each worker's loss is scaled so that the mean over
workers equals the loss of one process on the concatenated global batch; with DDP's gradient
averaging the parameter gradients then match too (see :mod:`clar_ray.dist`). Workers may hold
different row counts (e.g. the last, short batch of an epoch).

Contrastive terms are cross-entropy over temperature-scaled cosine-similarity logits (soft
targets spread over the positives), never ``log(exp / sum exp)``: the one masked kernel of
:mod:`clar_ray.loss_kernel`, which also holds the gather and global-mean bookkeeping. All losses
compute in float32 with autocast disabled, whatever the dtype of their inputs.

Two-view layout: where a function says "views stacked", rows ``[:N]`` are view a of N clips
and rows ``[N:]`` view b of the same clips in the same order.

Legend: N = clips (pairs) on this worker, D = embedding size, C = classes, K = clusters,
W = workers. Shapes are per worker.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from clar_ray import dist
from clar_ray.loss_kernel import (
    check_keys,
    check_rows,
    check_temperature,
    gather_rows,
    global_mean,
    no_autocast,
    soft_target_cross_entropy,
)

__all__ = [
    "angular_contrastive_loss",
    "clar_loss",
    "cluster_contrastive_loss",
    "contrastive_loss",
    "ema_update",
    "labelled_cross_entropy",
    "nt_xent",
    "slicer_loss",
    "supcon",
    "view_pair_ids",
]

_ACOS_EPS = 1e-6  # keeps arccos and its gradient finite at cos = +-1


def contrastive_loss(z: Tensor, keys: Tensor, temperature: float) -> Tensor:
    """Masked multi-positive contrastive loss shared by NT-Xent and SupCon.

    ``L = 1/|I| sum_i -1/|P(i)| sum_{p in P(i)} log( exp(s_ip/T) / sum_{a != i} exp(s_ia/T) )``
    with ``s`` the cosine similarity and ``P(i)`` the other rows whose key equals row i's (Khosla
    et al. 2020, eq. 2, L_out; with one positive per row it is SimCLR's NT-Xent, eq. 1). Under
    DDP, anchors are the local rows and candidates the gathered global batch.

    Args:
        z: ``(n, D)`` embeddings (any scale; they are L2-normalised here).
        keys: ``(n,)`` integer keys; rows with equal keys are positives. Keys must be unique
            across workers where they should not match.
        temperature: Softmax temperature T > 0.

    Returns:
        Scalar loss (this worker's share; its mean over workers is the global-batch loss).

    Raises:
        ValueError: On bad shapes or temperature, or if some row has no positive.
    """
    check_keys("keys", z, keys)
    check_temperature("temperature", temperature)
    with no_autocast(z):
        z_local, z_all, keys_all, offset, m = gather_rows(z, keys)
        per_row = soft_target_cross_entropy(
            z_local, keys, z_all, keys_all, temperature, self_offset=offset
        )
        return global_mean(per_row.sum(), m)


def nt_xent(z: Tensor, ids: Tensor, temperature: float = 0.5) -> Tensor:
    """NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

    Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
    eq. 1: ``l(i, j) = -log( exp(sim(z_i, z_j)/T) / sum_{k != i} exp(sim(z_i, z_k)/T) )``,
    averaged over all 2N anchors. CLAR (Al-Tahan & Mohsenzadeh 2021) uses it with T = 0.5.

    Args:
        z: ``(2N, D)`` embeddings of both views (any row order).
        ids: ``(2N,)`` integer sample ids; the two views of a clip share an id and no other
            row in the global batch may have it (see :func:`view_pair_ids`).
        temperature: T > 0.

    Returns:
        Scalar loss.
    """
    return contrastive_loss(z, ids, temperature)


def view_pair_ids(n_rows: int, device: torch.device | str = "cpu") -> Tensor:
    """Return globally unique pair ids for the two-view layout ``[view a; view b]``.

    Under DDP the ids of worker r start after those of workers ``< r``, so they never collide
    across workers. Every worker must call this (it runs one collective).

    Args:
        n_rows: Local rows 2N (even).
        device: Device of the returned tensor.

    Returns:
        ``(2N,)`` int64 ids ``[o, o+1, ..., o+N-1, o, ..., o+N-1]`` with o this worker's offset.
    """
    if n_rows < 0 or n_rows % 2:
        raise ValueError(f"n_rows must be even and >= 0 (two stacked views), got {n_rows}")
    offset = dist.local_offset(n_rows, device) // 2
    ids = torch.arange(n_rows // 2, device=device, dtype=torch.int64) + offset
    return torch.cat([ids, ids])


def supcon(
    z: Tensor, labels: Tensor, temperature: float = 0.1, ids: Tensor | None = None
) -> Tensor:
    """Supervised contrastive loss L_out (Khosla et al. 2020, "Supervised Contrastive Learning").

    Eq. 2 of the paper (the "outside" form, 1/|P(i)| outside the log).

    Positives of a row are all other rows of its class. Rows labelled -1 (unlabelled) fall back
    to self-supervision: their only positive is the other view of the same clip.

    Args:
        z: ``(2N, D)`` embeddings.
        labels: ``(2N,)`` integer class labels >= 0, or -1 for unlabelled rows.
        temperature: T > 0 (the paper uses 0.1).
        ids: ``(2N,)`` integer sample ids >= 0 shared by the two views of a clip and unique in
            the global batch. None means the rows are views stacked ``[view a; view b]`` and
            the ids come from :func:`view_pair_ids`.

    Returns:
        Scalar loss.
    """
    check_keys("labels", z, labels)
    if labels.numel() and int(labels.min()) < -1:
        raise ValueError(f"labels must be >= -1 (-1 = unlabelled), got {int(labels.min())}")
    if ids is None:
        ids = view_pair_ids(z.shape[0], z.device)
    check_keys("ids", z, ids)
    if ids.numel() and int(ids.min()) < 0:
        raise ValueError(f"ids must be >= 0, got {int(ids.min())}")
    keys = torch.where(labels >= 0, labels.long(), -1 - ids.long())
    return contrastive_loss(z, keys, temperature)


def labelled_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy averaged over the labelled rows (label >= 0) of the global batch.

    Rows labelled -1 are ignored. With no labelled row anywhere the result is exactly zero
    (still attached to ``logits``, so every parameter gets a zero gradient under DDP).

    Args:
        logits: ``(M, C)`` class scores.
        labels: ``(M,)`` integer labels in ``[0, C)`` or -1.

    Returns:
        Scalar loss (this worker's share of the global mean).
    """
    check_rows("logits", logits, 2)
    check_rows("labels", labels, 1, logits.shape[0])
    n_classes = logits.shape[1]
    labelled = labels >= 0
    n_local = int(labelled.sum())
    if labels.numel() and (int(labels.min()) < -1 or int(labels.max()) >= n_classes):
        raise ValueError(
            f"labels must lie in [-1, {n_classes}), got range "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )
    with no_autocast(logits):
        logits = logits.float()
        n_global = dist.global_count(n_local, logits.device)
        if n_local == 0:
            local_sum = logits.sum() * 0.0
        else:
            local_sum = F.cross_entropy(logits, labels.long(), ignore_index=-1, reduction="sum")
        return global_mean(local_sum, n_global)


def clar_loss(
    z: Tensor,
    ids: Tensor,
    logits: Tensor,
    labels: Tensor,
    temperature: float = 0.5,
    ce_weight: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """CLAR: NT-Xent on all rows plus cross-entropy on the labelled rows of each view.

    Al-Tahan & Mohsenzadeh 2021, "CLAR: Contrastive Learning of Auditory Representations"
    (AISTATS), Sec. 3: ``L = L_NT-Xent + L_CE`` on partly labelled batches. As in the authors'
    released code (``semi_supervised.py``), ``L_CE = CE(view a) + CE(view b)``: each view's
    cross-entropy is a mean over the labelled rows of the global batch, and the two are summed
    (twice the mean over both views). ``ce_weight`` multiplies that sum.

    Args:
        z: ``(2N, D)`` projection-head embeddings of both views (views stacked).
        ids: ``(2N,)`` sample ids, as for :func:`nt_xent`.
        logits: ``(2N, C)`` classifier outputs of both views (views stacked).
        labels: ``(2N,)`` labels in ``[0, C)``, -1 for unlabelled rows.
        temperature: NT-Xent temperature.
        ce_weight: Weight of the cross-entropy term (>= 0).

    Returns:
        ``(total, parts)`` with ``parts = {"nt_xent", "cross_entropy"}`` detached for logging.
        The CE part is exactly 0 when the global batch has no labelled row.
    """
    if not ce_weight >= 0:
        raise ValueError(f"ce_weight must be >= 0, got {ce_weight}")
    check_rows("logits", logits, 2, z.shape[0])
    if logits.shape[0] % 2:
        raise ValueError(f"logits must stack two views (an even row count), got {logits.shape[0]}")
    contrastive = nt_xent(z, ids, temperature)
    ce = sum((labelled_cross_entropy(view_logits, view_labels) for view_logits, view_labels
              in zip(logits.chunk(2), labels.chunk(2))), torch.zeros((), device=logits.device))
    total = contrastive + ce_weight * ce
    return total, {"nt_xent": contrastive.detach(), "cross_entropy": ce.detach()}


def angular_contrastive_loss(
    z: Tensor,
    ids: Tensor,
    temperature: float = 0.2,
    margin: float = 0.5,
    alpha: float = 0.3,
    z_angular: Tensor | None = None,
) -> Tensor:
    """Angular Contrastive Loss (ACL): ``alpha * L_CL + (1 - alpha) * L_AM``.

    Wang, Tripathy & Mesaros, "Self-supervised learning of audio representations using angular
    contrastive loss" (arXiv:2211.05442, ICASSP 2023), Sec. 2. ``L_CL`` is NT-Xent
    (:func:`contrastive_loss`). ``L_AM`` is the angular-margin term of AMC-Loss (Choi et al.
    2020) on pairs of the batch, with geodesic distance ``d_ij = arccos(<z_i, z_j>)`` on the unit
    sphere: ``d_ij^2`` for positive pairs (S_ij = 1) and ``max(0, margin - d_ij)^2`` for
    negative pairs (S_ij = 0). Here ``L_AM`` sums the pair terms over every candidate j != i and
    averages over anchors i (the released code sums over all pairs and divides by a constant,
    25 or 50, so alpha values transfer only approximately). Defaults: margin 0.5 rad and
    alpha 0.3 at T = 0.2 (the released self-supervised runs' best setting, 77.1% on
    FSDnoisy18k).

    Its authors' code computes ``L_CL`` on the projection head's output and ``L_AM`` on the
    encoder's features: pass those as ``z_angular``; without it both terms read ``z``.

    Args:
        z: ``(2N, D)`` embeddings.
        ids: ``(2N,)`` sample ids (or class labels for the supervised variant); equal ids are
            positives.
        temperature: NT-Xent temperature T > 0.
        margin: Angular margin m_g in radians, >= 0.
        alpha: Weight in [0, 1] of the contrastive term (1 = plain NT-Xent).
        z_angular: ``(2N, E)`` rows the angular term reads instead of ``z`` (any width E).

    Returns:
        Scalar loss.
    """
    check_keys("ids", z, ids)
    check_temperature("temperature", temperature)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0 (radians), got {margin}")
    with no_autocast(z):
        z_local, z_all, keys_all, offset, m = gather_rows(z, ids)
        contrastive = soft_target_cross_entropy(
            z_local, ids, z_all, keys_all, temperature, self_offset=offset
        )
        if z_angular is not None:
            check_rows("z_angular", z_angular, 2, z.shape[0])
            z_local, z_all, _, _, _ = gather_rows(z_angular, ids)
        cos = (z_local @ z_all.T).clamp(-1.0 + _ACOS_EPS, 1.0 - _ACOS_EPS)  # (n, M)
        angle = torch.acos(cos)
        n = z_local.shape[0]
        rows = torch.arange(n, device=z.device)
        not_self = torch.ones_like(cos, dtype=torch.bool)
        not_self[rows, rows + offset] = False
        positive = ids[:, None] == keys_all[None, :]  # self is masked out below
        pair = torch.where(positive, angle.square(), F.relu(margin - angle).square())
        angular = (pair * not_self).sum(dim=1)  # (n,)
        per_row = alpha * contrastive + (1.0 - alpha) * angular
        return global_mean(per_row.sum(), m)


def cluster_contrastive_loss(c_a: Tensor, c_b: Tensor, temperature: float = 1.0) -> Tensor:
    """Cluster-level contrastive loss of Contrastive Clustering (Li et al. 2021, AAAI, eq. 5-6).

    The columns of the assignment matrices are the cluster representations: column k of view a
    is the positive of column k of view b; the other 2K - 2 columns are negatives. Computed on
    the full (already gathered) batch; this function runs no collective.

    Args:
        c_a: ``(N, K)`` soft cluster assignments of view a (global batch).
        c_b: ``(N, K)`` the same for view b.
        temperature: T_C > 0 (1.0 in Contrastive Clustering and in SLICER's code).

    Returns:
        Scalar ``1/(2K) sum_k (l_k^a + l_k^b)``.
    """
    check_rows("c_a", c_a, 2)
    check_rows("c_b", c_b, 2)
    if c_a.shape != c_b.shape:
        raise ValueError(
            f"c_a and c_b must have one shape, got {tuple(c_a.shape)} and {tuple(c_b.shape)}"
        )
    k = c_a.shape[1]
    if k < 2:
        raise ValueError(f"need >= 2 clusters, got {k}")
    check_temperature("temperature", temperature)
    with no_autocast(c_a):
        columns = F.normalize(torch.cat([c_a.T, c_b.T]).float(), dim=1)  # (2K, N)
        keys = torch.arange(k, device=c_a.device).repeat(2)
        per_column = soft_target_cross_entropy(columns, keys, columns, keys, temperature, 0)
        return per_column.mean()


def _assignment_entropy_gap(c: Tensor) -> Tensor:
    """``log K - H(P)`` with ``P_k = sum_t c_tk / sum c``: 0 for balanced clusters, >= 0."""
    p = c.sum(dim=0) / c.sum()
    return math.log(c.shape[1]) + (p * p.clamp_min(1e-12).log()).sum()


def slicer_loss(
    student_z: Tensor,
    teacher_z: Tensor,
    student_c: Tensor,
    teacher_c: Tensor | None = None,
    temperature_instance: float = 0.07,
    temperature_cluster: float = 1.0,
    entropy_weight: float = 1.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """SLICER: symmetric instance-level contrast (student vs teacher) + cluster-level contrast.

    Seth, Ghosh, Umesh & Manocha, "SLICER: Learning universal audio representations using
    low-resource self-supervised pre-training" (ICASSP 2023), Sec. 2, following the released
    code (github.com/Sreyan88/LAPE, ``src/upstream/slicer``):

    * instance: ``L_ins = CE(s_a, t_b) + CE(s_b, t_a)`` where ``CE(q, k)`` is InfoNCE of each
      student embedding q against the teacher embeddings of the other view, its own clip being
      the positive (the released code is MoCo with a queue of 65536 keys; here the negatives
      are the other clips of the global batch, and the teacher gets no gradient);
    * cluster: :func:`cluster_contrastive_loss` between the student's assignments of the two
      views (as in the released code); if ``teacher_c`` is given, instead the mean of
      student-a vs teacher-b and student-b vs teacher-a;
    * entropy: ``sum_views (log K - H(P_view))`` over the student's assignments, the
      cluster-balance regulariser of Contrastive Clustering (Li et al. 2021, eq. 6-7; the
      released SLICER code computes it but leaves it out: ``entropy_weight=0`` reproduces that).

    ``total = L_ins + L_clu + entropy_weight * L_ent``. The cluster and entropy terms use the
    cluster columns over the whole global batch (gathered), so every worker computes their
    full value.

    Args:
        student_z: ``(2N, D)`` student instance embeddings, views stacked ``[a; b]``.
        teacher_z: ``(2N, D)`` teacher (EMA) instance embeddings, same layout.
        student_c: ``(2N, K)`` student soft cluster assignments (softmax rows), same layout.
        teacher_c: ``(2N, K)`` teacher assignments, or None (see above).
        temperature_instance: Instance temperature (0.07 in the released code).
        temperature_cluster: Cluster temperature (1.0 in the released code).
        entropy_weight: Weight of the entropy regulariser, >= 0.

    Returns:
        ``(total, parts)`` with detached ``parts = {"instance", "cluster", "entropy"}``.
    """
    check_rows("student_z", student_z, 2)
    rows = student_z.shape[0]
    if rows % 2:
        raise ValueError(f"student_z must stack two views (even rows), got {rows}")
    check_rows("teacher_z", teacher_z, 2, rows)
    check_rows("student_c", student_c, 2, rows)
    if teacher_z.shape != student_z.shape:
        raise ValueError(
            f"teacher_z shape {tuple(teacher_z.shape)} != student_z shape {tuple(student_z.shape)}"
        )
    if teacher_c is not None and teacher_c.shape != student_c.shape:
        raise ValueError(
            f"teacher_c shape {tuple(teacher_c.shape)} != student_c shape {tuple(student_c.shape)}"
        )
    check_temperature("temperature_instance", temperature_instance)
    check_temperature("temperature_cluster", temperature_cluster)
    if not entropy_weight >= 0:
        raise ValueError(f"entropy_weight must be >= 0, got {entropy_weight}")
    n = rows // 2
    with no_autocast(student_z):
        s = F.normalize(student_z.float(), dim=1)
        t = F.normalize(teacher_z.detach().float(), dim=1)
        sizes = dist.all_gather_sizes(n, student_z.device)
        n_global = sum(sizes)
        t_all = dist.all_gather(torch.cat([t[:n], t[n:]], dim=1), sizes)  # (N_all, 2D)
        ta_all, tb_all = t_all.chunk(2, dim=1)
        targets = torch.arange(n, device=s.device) + sum(sizes[: dist.rank()])
        ce_ab = F.cross_entropy(s[:n] @ tb_all.T / temperature_instance, targets, reduction="sum")
        ce_ba = F.cross_entropy(s[n:] @ ta_all.T / temperature_instance, targets, reduction="sum")
        instance = global_mean(ce_ab + ce_ba, n_global)

        c = student_c.float()
        c_all = dist.gather_with_grad(torch.cat([c[:n], c[n:]], dim=1), sizes)  # (N_all, 2K)
        ca_all, cb_all = c_all.chunk(2, dim=1)
        if teacher_c is None:
            cluster = cluster_contrastive_loss(ca_all, cb_all, temperature_cluster)
        else:
            tc = teacher_c.detach().float()
            tc_all = dist.all_gather(torch.cat([tc[:n], tc[n:]], dim=1), sizes)
            tca_all, tcb_all = tc_all.chunk(2, dim=1)
            cluster = 0.5 * (
                cluster_contrastive_loss(ca_all, tcb_all, temperature_cluster)
                + cluster_contrastive_loss(cb_all, tca_all, temperature_cluster)
            )
        entropy = _assignment_entropy_gap(ca_all) + _assignment_entropy_gap(cb_all)
        total = instance + cluster + entropy_weight * entropy
    parts = {
        "instance": instance.detach(),
        "cluster": cluster.detach(),
        "entropy": entropy.detach(),
    }
    return total, parts


@torch.no_grad()
def ema_update(
    teacher: nn.Module, student: nn.Module, momentum: float, include_buffers: bool = True
) -> None:
    """Move the teacher towards the student: ``t <- m t + (1 - m) s``.

    The momentum (mean-teacher) update of MoCo (He et al. 2020, eq. 2) used by SLICER
    (momentum 0.999 in its code). Floating-point buffers (BatchNorm running statistics) are
    averaged the same way unless ``include_buffers`` is False, so a teacher run in eval mode
    normalises with statistics that follow the student's; other buffers (``num_batches_tracked``)
    are copied. A DDP-wrapped student is unwrapped.

    Args:
        teacher: The EMA model, updated in place.
        student: The trained model with the same parameter (and buffer) names and shapes.
        momentum: m in [0, 1]; 1 keeps the teacher, 0 copies the student.
        include_buffers: Also update buffers (False: the teacher keeps its own, as in MoCo
            where the key encoder runs in train mode).
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
    if isinstance(student, DistributedDataParallel):
        student = student.module
    pairs: list[tuple[dict[str, Tensor], dict[str, Tensor], str]] = [
        (dict(teacher.named_parameters()), dict(student.named_parameters()), "parameter")
    ]
    if include_buffers:
        pairs.append((dict(teacher.named_buffers()), dict(student.named_buffers()), "buffer"))
    for t_items, s_items, kind in pairs:
        if t_items.keys() != s_items.keys():
            missing = sorted(set(t_items) ^ set(s_items))
            raise ValueError(f"teacher and student {kind}s differ: {missing[:5]}")
        for name, t in t_items.items():
            s = s_items[name]
            if t.shape != s.shape:
                raise ValueError(
                    f"{kind} {name!r}: teacher shape {tuple(t.shape)} != student {tuple(s.shape)}"
                )
            if t.is_floating_point():
                t.lerp_(s.detach().to(t.dtype), 1.0 - momentum)
            else:
                t.copy_(s)
