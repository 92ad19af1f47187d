"""Training methods: an encoder, the heads an objective needs, and the loss of a batch of views.

Every method maps frontend features of the two views to ``(loss, metrics)``:

    x_a, x_b: (B, C, T) or (B, C, F, T)   two views of the same B clips, frontend output
    ids: (B,) sample ids, labels: (B,) class or -1 for rows without a label

| method     | head                                 | loss                                        |
|------------|--------------------------------------|---------------------------------------------|
| supervised | 3 FC layers → classes                | cross-entropy on labelled rows of both views |
| simclr     | 3 FC layers → 128                    | NT-Xent over the global batch                |
| supcon     | 3 FC layers → 128                    | SupCon (labels; unlabelled rows: own view)   |
| clar       | FC → FC → 128 (z) → classes (logits) | NT-Xent on z + CE(view a) + CE(view b)       |
| acl        | 3 FC layers → 128                    | NT-Xent on the head + angular margin on the  |
|            |                                      | encoder's features (or the head's)           |
| slicer     | student + EMA teacher, instance and  | symmetric instance + cluster contrastive,    |
|            | cluster heads                        | k-mix on the student's input                 |

Heads are the released code's (batch norm) or the paper text's, by ``model.head``; the
temperature is the job's or the objective's own (``ObjectiveConfig.tau``).

Letters: B clips, C channels, F frequency bins, T frames or samples, D features, K clusters.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

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
    """Cross-entropy on the labelled rows of both (augmented) views, a global-batch mean."""

    def __init__(self, encoder: ResNet18, model: ModelConfig, objective: ObjectiveConfig,
                 num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ProjectionHead(encoder.num_features, model.hidden_dim, num_classes,
                                   style=model.head)

    def forward(self, x_a: Tensor, x_b: Tensor, ids: Tensor, labels: Tensor
                ) -> tuple[Tensor, Metrics]:
        """Return the cross-entropy (zero, with a gradient, when no row is labelled)."""
        logits = self.head(self.encoder(torch.cat([x_a, x_b])))  # (2B, classes)
        both = torch.cat([labels, labels])
        loss = objectives.labelled_cross_entropy(logits.float(), both)
        return loss, {"ce": loss.detach(), "acc": _labelled_accuracy(logits.detach(), both)}


class Contrastive(Method):
    """One projection head and a contrastive loss on the global batch (SimCLR, SupCon, ACL)."""

    def __init__(self, encoder: ResNet18, model: ModelConfig, objective: ObjectiveConfig,
                 num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ProjectionHead(encoder.num_features, model.hidden_dim, model.projection_dim,
                                   style=model.head)
        self.objective = objective

    def forward(self, x_a: Tensor, x_b: Tensor, ids: Tensor, labels: Tensor
                ) -> tuple[Tensor, Metrics]:
        """Return the contrastive loss of the 2B views."""
        h = self.encoder(torch.cat([x_a, x_b]))  # (2B, D)
        z = self.head(h).float()  # (2B, P)
        loss = self.loss(h, z, torch.cat([ids, ids]), torch.cat([labels, labels]))
        return loss, {self.objective.name: loss.detach()}

    def loss(self, h: Tensor, z: Tensor, ids: Tensor, labels: Tensor
             ) -> Tensor:  # pragma: no cover - abstract
        """The loss of encoder features ``h``, projections ``z``, ids and labels (views stacked)."""
        raise NotImplementedError


class SimCLR(Contrastive):
    """NT-Xent: the two views of a clip are positives, every other view a negative."""

    def loss(self, h: Tensor, z: Tensor, ids: Tensor, labels: Tensor) -> Tensor:
        """NT-Xent of the projections."""
        return objectives.nt_xent(z, ids, self.objective.tau)


class SupCon(Contrastive):
    """Supervised contrastive: same-class views are positives (unlabelled rows: own view)."""

    def loss(self, h: Tensor, z: Tensor, ids: Tensor, labels: Tensor) -> Tensor:
        """SupCon of the projections."""
        return objectives.supcon(z, labels, self.objective.tau, ids=ids)


class ACL(Contrastive):
    """Angular contrastive loss: NT-Xent on the head, the angular margin where configured."""

    def loss(self, h: Tensor, z: Tensor, ids: Tensor, labels: Tensor) -> Tensor:
        """ACL; the angular term reads the encoder's features unless ``acl_angular_input=head``."""
        cfg = self.objective
        angular_on = h.float() if cfg.acl_angular_input == "encoder" else None
        return objectives.angular_contrastive_loss(
            z, ids, cfg.tau, margin=cfg.acl_margin, alpha=cfg.acl_alpha, z_angular=angular_on)


class Clar(Method):
    """CLAR: NT-Xent on the 128-d layer and cross-entropy on the class layer above it."""

    def __init__(self, encoder: ResNet18, model: ModelConfig, objective: ObjectiveConfig,
                 num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ClarHead(encoder.num_features, model.hidden_dim, model.projection_dim,
                             num_classes, style=model.head)
        self.objective = objective

    def forward(self, x_a: Tensor, x_b: Tensor, ids: Tensor, labels: Tensor
                ) -> tuple[Tensor, Metrics]:
        """Return NT-Xent + ce_weight × (CE of view a + CE of view b) on the labelled rows."""
        z, logits = self.head(self.encoder(torch.cat([x_a, x_b])))
        both = torch.cat([labels, labels])
        loss, parts = objectives.clar_loss(
            z.float(), torch.cat([ids, ids]), logits.float(), both,
            self.objective.tau, ce_weight=self.objective.ce_weight)
        metrics = {name: value.detach() for name, value in parts.items()}
        metrics["acc"] = _labelled_accuracy(logits.detach(), both)
        return loss, metrics


class Slicer(Method):
    """SLICER: a student and its EMA teacher, instance- and cluster-level contrastive losses."""

    def __init__(self, encoder: ResNet18, model: ModelConfig, objective: ObjectiveConfig,
                 num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ProjectionHead(encoder.num_features, model.hidden_dim, model.projection_dim,
                                   style=model.head)
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
            z_s, z_t, c_s, None, cfg.tau, cfg.slicer_cluster_temperature)
        return loss, {name: value.detach() for name, value in parts.items()}

    def _kmix(self, x: Tensor) -> Tensor:
        """k-mix the log-power channels (STFT and mel) of a tf3 batch; phase is left alone.

        Partners come from the batch itself, clustered on the fly with spherical k-means into
        ``KMIX_CLUSTERS`` groups (SLICER clusters the whole dataset before training and keeps a
        memory of 2048 past inputs; a batch-local pool needs neither).
        """
        from clar_ray.kmix import kmix, kmix_embedding, spherical_kmeans

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


#: The objectives a job may name, and the class that trains each (the one list of them).
METHODS: dict[str, type[Method]] = {
    "supervised": Supervised,
    "simclr": SimCLR,
    "supcon": SupCon,
    "clar": Clar,
    "acl": ACL,
    "slicer": Slicer,
}


def build_method(model: ModelConfig, objective: ObjectiveConfig, *, in_channels: int,
                 num_classes: int) -> Method:
    """Build the trainable module of a job's objective (a lookup in :data:`METHODS`)."""
    if objective.name not in METHODS:
        raise ValueError(f"objective.name must be one of {', '.join(METHODS)}, "
                         f"got {objective.name!r}")
    encoder = build_encoder(model.encoder, in_channels=in_channels, width=model.width)
    return METHODS[objective.name](encoder, model, objective, num_classes)


def unwrap(module: Any) -> Any:
    """The module inside a DDP wrapper (or the module itself)."""
    return getattr(module, "module", module)
