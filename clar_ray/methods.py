"""Training methods: an encoder, the heads an objective needs, and the loss of a batch of views.

Every method maps frontend features of the two views to ``(loss, metrics)``:

    x_a, x_b: (B, C, T) or (B, C, F, T)   two views of the same B clips, frontend output
    ids: (B,) sample ids, labels: (B,) class or -1 for rows without a label

| method     | head                                 | loss                                        |
|------------|--------------------------------------|---------------------------------------------|
| supervised | 3 FC layers → classes                | cross-entropy on labelled rows of both views |
| simclr     | 3 FC layers → 128                    | NT-Xent over the global batch                |
| supcon     | 3 FC layers → 128                    | SupCon (labels; unlabelled rows: own view)   |
| clar       | FC → FC → 128 (z) → classes (logits) | NT-Xent on z + CE on labelled rows           |
| acl        | 3 FC layers → 128                    | angular contrastive loss                     |
| slicer     | student + EMA teacher, instance and  | symmetric instance + cluster contrastive,    |
|            | cluster heads                        | k-mix on the student's input                 |

Letters: B clips, C channels, F frequency bins, T frames or samples, D features, K clusters.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from clar_ray import objectives
from clar_ray.config import ModelConfig, ObjectiveConfig
from clar_ray.models import ClarHead, ClusterHead, ProjectionHead, ResNet18, build_encoder

Metrics = dict[str, Tensor]
#: Channels of the tf3 frontend that hold natural-log power (STFT magnitude and mel).
LOG_POWER_CHANNELS = [0, 2]
#: Clusters of SLICER's k-mix (its configuration: 4).
KMIX_CLUSTERS = 4


def _labelled_accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    mask = labels >= 0
    if not bool(mask.any()):
        return torch.zeros((), device=logits.device)
    return (logits[mask].argmax(dim=1) == labels[mask]).float().mean()


class Method(nn.Module):
    """An encoder plus heads; ``forward`` returns the loss of one batch of view pairs."""

    encoder: ResNet18

    def forward(self, x_a: Tensor, x_b: Tensor, ids: Tensor, labels: Tensor
                ) -> tuple[Tensor, Metrics]:  # pragma: no cover - abstract
        """Return ``(loss, metrics)`` for a batch of view pairs."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Hook run after each optimiser step (the SLICER teacher's EMA)."""


class Supervised(Method):
    """Cross-entropy on the labelled rows of both (augmented) views."""

    def __init__(self, encoder: ResNet18, model: ModelConfig, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ProjectionHead(encoder.num_features, model.hidden_dim, num_classes)

    def forward(self, x_a: Tensor, x_b: Tensor, ids: Tensor, labels: Tensor
                ) -> tuple[Tensor, Metrics]:
        """Return the mean cross-entropy (zero, with a gradient, when no row is labelled)."""
        logits = self.head(self.encoder(torch.cat([x_a, x_b])))  # (2B, classes)
        both = torch.cat([labels, labels])
        mask = both >= 0
        if bool(mask.any()):
            loss = F.cross_entropy(logits[mask].float(), both[mask])
        else:
            loss = logits.sum() * 0.0
        return loss, {"ce": loss.detach(), "acc": _labelled_accuracy(logits.detach(), both)}


class Contrastive(Method):
    """SimCLR, SupCon and ACL: one projection head and a contrastive loss on the global batch."""

    def __init__(self, encoder: ResNet18, model: ModelConfig, objective: ObjectiveConfig
                 ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ProjectionHead(encoder.num_features, model.hidden_dim, model.projection_dim)
        self.objective = objective

    def forward(self, x_a: Tensor, x_b: Tensor, ids: Tensor, labels: Tensor
                ) -> tuple[Tensor, Metrics]:
        """Return the contrastive loss of the 2B views."""
        z = self.head(self.encoder(torch.cat([x_a, x_b]))).float()  # (2B, D)
        both_ids = torch.cat([ids, ids])
        cfg = self.objective
        if cfg.name == "simclr":
            loss = objectives.nt_xent(z, both_ids, cfg.temperature)
        elif cfg.name == "supcon":
            loss = objectives.supcon(z, torch.cat([labels, labels]), cfg.temperature,
                                     ids=both_ids)
        else:
            loss = objectives.angular_contrastive_loss(
                z, both_ids, cfg.temperature, margin=cfg.acl_margin, alpha=cfg.acl_alpha)
        return loss, {cfg.name: loss.detach()}


class Clar(Method):
    """CLAR: NT-Xent on the 128-d layer and cross-entropy on the class layer above it."""

    def __init__(self, encoder: ResNet18, model: ModelConfig, objective: ObjectiveConfig,
                 num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ClarHead(encoder.num_features, model.hidden_dim, model.projection_dim,
                             num_classes)
        self.objective = objective

    def forward(self, x_a: Tensor, x_b: Tensor, ids: Tensor, labels: Tensor
                ) -> tuple[Tensor, Metrics]:
        """Return NT-Xent + ce_weight × cross-entropy on the labelled rows."""
        z, logits = self.head(self.encoder(torch.cat([x_a, x_b])))
        both = torch.cat([labels, labels])
        loss, parts = objectives.clar_loss(
            z.float(), torch.cat([ids, ids]), logits.float(), both,
            self.objective.temperature, ce_weight=self.objective.ce_weight)
        metrics = {name: value.detach() for name, value in parts.items()}
        metrics["acc"] = _labelled_accuracy(logits.detach(), both)
        return loss, metrics


class Slicer(Method):
    """SLICER: a student and its EMA teacher, instance- and cluster-level contrastive losses."""

    def __init__(self, encoder: ResNet18, model: ModelConfig, objective: ObjectiveConfig
                 ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ProjectionHead(encoder.num_features, model.hidden_dim, model.projection_dim)
        self.cluster = ClusterHead(encoder.num_features, model.hidden_dim,
                                   objective.slicer_clusters)
        self.teacher = nn.ModuleDict({"encoder": copy.deepcopy(encoder),
                                      "head": copy.deepcopy(self.head)})
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.objective = objective
        self.kmix_seed = 0

    def _student(self) -> nn.ModuleDict:
        return nn.ModuleDict({"encoder": self.encoder, "head": self.head})

    def forward(self, x_a: Tensor, x_b: Tensor, ids: Tensor, labels: Tensor
                ) -> tuple[Tensor, Metrics]:
        """Student (k-mixed views) against the EMA teacher: instance and cluster contrast."""
        cfg = self.objective
        student_in = torch.cat([x_a, x_b])
        if cfg.kmix and self.training:
            student_in = self._kmix(student_in)
        h = self.encoder(student_in)
        z_s, c_s = self.head(h).float(), self.cluster(h).float()
        with torch.no_grad():
            self.teacher.eval()
            z_t = self.teacher["head"](self.teacher["encoder"](torch.cat([x_a, x_b]))).float()
        loss, parts = objectives.slicer_loss(
            z_s, z_t, c_s, None, cfg.temperature, cfg.slicer_cluster_temperature)
        return loss, {name: value.detach() for name, value in parts.items()}

    def _kmix(self, x: Tensor) -> Tensor:
        """k-mix the log-power channels (STFT and mel) of a tf3 batch; phase is left alone.

        Partners come from the batch itself, clustered on the fly with spherical k-means into
        ``KMIX_CLUSTERS`` groups (SLICER clusters the whole dataset before training and keeps a
        memory of 2048 past inputs; a batch-local pool needs neither).
        """
        from clar_ray.augment.batch import kmix, kmix_embedding, spherical_kmeans

        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"k-mix needs tf3 input (B, 3, F, T), got {tuple(x.shape)}; set "
                             f"objective.kmix=false for raw audio")
        generator = torch.Generator(device="cpu").manual_seed(self.kmix_seed)
        self.kmix_seed += 1
        log_power = x[:, LOG_POWER_CHANNELS]  # (2B, 2, F, T)
        clusters = min(KMIX_CLUSTERS, x.shape[0])
        centroids = spherical_kmeans(kmix_embedding(log_power).cpu(), clusters, generator)
        mixed = x.clone()
        mixed[:, LOG_POWER_CHANNELS] = kmix(log_power, generator, centroids=centroids)
        return mixed

    def after_step(self) -> None:
        """Move the teacher towards the student."""
        objectives.ema_update(self.teacher, self._student(), self.objective.slicer_momentum)


def build_method(model: ModelConfig, objective: ObjectiveConfig, *, in_channels: int,
                 num_classes: int) -> Method:
    """Build the trainable module of a job's objective."""
    encoder = build_encoder(model.encoder, in_channels=in_channels, width=model.width)
    name = objective.name
    if name == "supervised":
        return Supervised(encoder, model, num_classes)
    if name in ("simclr", "supcon", "acl"):
        return Contrastive(encoder, model, objective)
    if name == "clar":
        return Clar(encoder, model, objective, num_classes)
    if name == "slicer":
        return Slicer(encoder, model, objective)
    raise ValueError(f"objective.name must be one of {', '.join(METHODS)}, got {name!r}")


#: The objectives a job may name, and the class that trains each.
METHODS: dict[str, type[Method]] = {
    "supervised": Supervised,
    "simclr": Contrastive,
    "supcon": Contrastive,
    "clar": Clar,
    "acl": Contrastive,
    "slicer": Slicer,
}


def unwrap(module: Any) -> Any:
    """The module inside a DDP wrapper (or the module itself)."""
    return getattr(module, "module", module)
