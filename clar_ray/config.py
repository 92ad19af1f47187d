"""Typed job configuration: frozen dataclasses, YAML in and out, ``--set`` overrides.

A job is one YAML file under ``jobs/`` with the sections below. Loading is strict: an unknown key,
a wrong type or an out-of-range value raises :class:`ConfigError` naming the key and what is
allowed. :meth:`JobConfig.to_dict` gives the plain, JSON-able dict that Ray Train's
``train_loop_config`` and a Tune ``param_space`` take; :meth:`JobConfig.from_dict` turns it back.
This module is the schema; turning YAML values into its fields is :mod:`clar_ray.coerce`, and the
``--set section.key=value`` syntax is :mod:`clar_ray.overrides`.

Example::

    cfg = load_job("jobs/quickstart.yaml", overrides=["train.epochs=2", "model.width=16"])
    cfg.train.epochs  # 2
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from clar_ray.augment.placement import OnDeviceMode
from clar_ray.augment.presets import AUGMENTATIONS, PresetName

# ConfigError and the override helpers are part of this module's API (the CLI, tune and the
# tests read them from here); they are defined in the modules that raise and parse them.
from clar_ray.coerce import ConfigError as ConfigError
from clar_ray.coerce import build, check, plain
from clar_ray.overrides import apply_overrides as apply_overrides
from clar_ray.overrides import parse_overrides as parse_overrides
from clar_ray.overrides import set_leaf as set_leaf

FrontendName = Literal["raw", "tf3"]
EncoderName = Literal["resnet18_1d", "resnet18_2d"]
#: The encoder each frontend needs (``model.encoder`` for a ``model.frontend``): the one list
#: that the config's check, the input-type study and the tests read.
FRONTEND_ENCODERS: dict[str, str] = {"raw": "resnet18_1d", "tf3": "resnet18_2d"}
ObjectiveName = Literal["supervised", "simclr", "supcon", "clar", "acl", "slicer"]
OptimizerName = Literal["lars", "lars_adam", "sgd", "adamw"]
HeadStyle = Literal["code", "paper"]
#: Each LARS variant's own trust coefficient (``optim.trust_coefficient`` left empty).
DEFAULT_TRUST: dict[str, float] = {"lars": 0.001, "lars_adam": 0.02}
AngularInput = Literal["encoder", "head"]

#: Objectives whose training reads no label (the probe after training reads them all).
LABEL_FREE_OBJECTIVES = ("simclr", "acl", "slicer")

#: Each objective's own temperature, from its paper or released code, used when
#: ``objective.temperature`` is left empty: NT-Xent 0.5 (SimCLR's and CLAR's code), SupCon 0.1
#: (Khosla et al. 2020, Sec. 4), ACL 0.2 (its released self-supervised runs), SLICER 0.07 (its
#: instance-level loss). Objectives without a contrastive term have none.
DEFAULT_TEMPERATURES: dict[str, float] = {
    "simclr": 0.5, "clar": 0.5, "supcon": 0.1, "acl": 0.2, "slicer": 0.07,
}
Precision = Literal["auto", "bf16", "fp32"]

#: Augmentation names a job may use in ``augment.sequence``: the registry's, in its order.
AUGMENTATION_NAMES = tuple(AUGMENTATIONS)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the prepared dataset is and which part of its labels training may see.

    Attributes:
        path: A prepared dataset directory (``manifest.json`` + shards), local or a cloud URI.
        train_split: Split used for training.
        eval_split: Split used for the test side of the linear probe.
        label_fraction: Fraction of training rows that keep their label (class-stratified);
            the rest stay in the stream with label -1.
        shuffle_buffer: Rows in each training worker's local shuffle buffer.
        ordered: Deliver the stream's batches in the order of its input (Ray Data's
            ``preserve_order``), so that a seeded run on the same cluster shape repeats to the
            bit; off, batches come as the actors finish them (the order varies between runs).
    """

    path: str = ""
    train_split: str = "train"
    eval_split: str = "test"
    label_fraction: float = 1.0
    shuffle_buffer: int = 512
    ordered: bool = True

    def __post_init__(self) -> None:
        check(0.0 < self.label_fraction <= 1.0, "data.label_fraction",
              f"must be in (0, 1], got {self.label_fraction}")
        check(self.shuffle_buffer >= 0, "data.shuffle_buffer",
              f"must be >= 0, got {self.shuffle_buffer}")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """The augmentation sequence applied independently to the two views of every clip.

    Attributes:
        sequence: Ordered augmentation names (see ``clar_ray.augment.AUGMENTATIONS``).
        preset: ``paper`` (the paper's ranges) or ``clar-code`` (the official code's behaviour).
        params: Per-augmentation parameter overrides, e.g. ``{"pitch_shift": {"p": 0.5}}``.
        on_device: Which augmentations run on the training device instead of the CPU actors
            (``clar_ray.augment.placement``): false none, true the longest tail with a batched
            torch version (every augmentation has one), ``auto`` by cost (on a GPU, from the
            first pitch shift or time stretch on; without a GPU, none).
        actors: CPU augmentation actors; 0 derives the number from the cluster.
        cpus_per_actor: Logical CPUs each augmentation actor reserves.
        actor_batch_size: Rows per batch handed to an augmentation actor. Each call costs a
            fixed overhead (object-store copies, scheduling), so small batches starve cheap
            sequences (measured in ``benchmarks/README.md``).
        node_labels: Node labels the augmentation actors must land on (Ray label selector),
            e.g. ``{"clar-ray-role": "augment"}`` on the cluster of ``cluster.yaml``.
    """

    sequence: tuple[str, ...] = ("fade", "time_mask")
    preset: PresetName = "paper"
    params: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    on_device: bool | OnDeviceMode = False
    actors: int = 0
    cpus_per_actor: float = 1.0
    actor_batch_size: int = 128
    node_labels: dict[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.sequence:
            check(name in AUGMENTATION_NAMES, "augment.sequence",
                  f"unknown augmentation {name!r}; allowed: {', '.join(AUGMENTATION_NAMES)}")
        for name in self.params:
            check(name in AUGMENTATION_NAMES, f"augment.params.{name}",
                  f"unknown augmentation; allowed: {', '.join(AUGMENTATION_NAMES)}")
        check(self.actors >= 0, "augment.actors", f"must be >= 0, got {self.actors}")
        check(self.cpus_per_actor > 0, "augment.cpus_per_actor",
              f"must be > 0, got {self.cpus_per_actor}")
        check(self.actor_batch_size > 0, "augment.actor_batch_size",
              f"must be > 0, got {self.actor_batch_size}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Frontend, encoder and head sizes.

    Attributes:
        frontend: ``raw`` (waveform, 1 channel) or ``tf3`` (STFT magnitude, phase, log-mel).
        frontend_preset: ``paper`` (16 ms window, 8 ms hop) or ``clar-code``.
        encoder: ``resnet18_1d`` (on ``raw``) or ``resnet18_2d`` (on ``tf3``).
        width: Channels of the first ResNet stage; 64 is the paper's ResNet18.
        hidden_dim: Hidden size of the projection head.
        projection_dim: Output size of the contrastive projection.
        head: ``code`` (the authors' released heads: batch norm after every hidden layer, the
            class layer on batch-normed z without a bias) or ``paper`` (the paper's text:
            fully connected layers with ReLU between them). See ``clar_ray.models.heads``.
    """

    frontend: FrontendName = "tf3"
    frontend_preset: Literal["paper", "clar-code"] = "paper"
    encoder: EncoderName = "resnet18_2d"
    width: int = 64
    hidden_dim: int = 512
    projection_dim: int = 128
    head: HeadStyle = "code"

    def __post_init__(self) -> None:
        check(self.width > 0, "model.width", f"must be > 0, got {self.width}")
        check(self.hidden_dim > 0, "model.hidden_dim", f"must be > 0, got {self.hidden_dim}")
        check(self.projection_dim > 0, "model.projection_dim",
              f"must be > 0, got {self.projection_dim}")
        wanted = FRONTEND_ENCODERS[self.frontend]
        check(self.encoder == wanted, "model.encoder",
              f"frontend {self.frontend!r} needs encoder {wanted!r}, got {self.encoder!r}")


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """The training objective and its hyper-parameters.

    Attributes:
        name: ``supervised``, ``simclr``, ``supcon``, ``clar``, ``acl`` or ``slicer``.
        temperature: Contrastive temperature; empty (null) takes the objective's own from
            :data:`DEFAULT_TEMPERATURES` (CLAR's NT-Xent: 0.5).
        ce_weight: Weight of CLAR's cross-entropy term, which is the released code's sum of the
            two views' cross-entropies (each a mean over the labelled rows of the global batch);
            0.5 gives the mean over both views.
        acl_alpha: ACL's weight of NT-Xent against the angular-margin term.
        acl_margin: ACL's angular margin, in radians.
        acl_angular_input: Where ACL's angular term reads: ``encoder`` (its authors' code: the
            encoder's features, NT-Xent on the head's output) or ``head`` (both on the head).
        slicer_clusters: SLICER's number of clusters K.
        slicer_cluster_temperature: Temperature of SLICER's cluster-level loss.
        slicer_momentum: EMA momentum of SLICER's teacher.
        kmix: Apply SLICER's k-mix to the mel input of the student.
    """

    name: ObjectiveName = "clar"
    temperature: float | None = None
    ce_weight: float = 1.0
    acl_alpha: float = 0.3
    acl_margin: float = 0.5
    acl_angular_input: AngularInput = "encoder"
    slicer_clusters: int = 32
    slicer_cluster_temperature: float = 1.0
    slicer_momentum: float = 0.99
    kmix: bool = True

    def __post_init__(self) -> None:
        check(self.temperature is None or self.temperature > 0, "objective.temperature",
              f"must be > 0 (or empty for the objective's own), got {self.temperature}")
        check(self.ce_weight >= 0, "objective.ce_weight", f"must be >= 0, got {self.ce_weight}")
        check(0.0 <= self.acl_alpha <= 1.0, "objective.acl_alpha",
              f"must be in [0, 1], got {self.acl_alpha}")
        check(self.acl_margin >= 0, "objective.acl_margin", f"must be >= 0, got {self.acl_margin}")
        check(self.slicer_clusters >= 2, "objective.slicer_clusters",
              f"must be >= 2, got {self.slicer_clusters}")
        check(self.slicer_cluster_temperature > 0, "objective.slicer_cluster_temperature",
              f"must be > 0, got {self.slicer_cluster_temperature}")
        check(0.0 <= self.slicer_momentum < 1.0, "objective.slicer_momentum",
              f"must be in [0, 1), got {self.slicer_momentum}")

    @property
    def tau(self) -> float:
        """The contrastive temperature in force: the job's, else the objective's own."""
        if self.temperature is not None:
            return self.temperature
        return DEFAULT_TEMPERATURES.get(self.name, 0.5)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule.

    Attributes:
        name: ``lars`` (the paper's text: LARS over momentum SGD), ``lars_adam`` (the authors'
            released code: Adam whose gradients are first scaled by the LARS trust ratio of
            Lightning Bolts' ``LARSWrapper``, see :mod:`clar_ray.optim.lars_adam`), ``sgd``
            or ``adamw``.
        lr: Learning rate at ``reference_batch``; scaled linearly with the global batch.
        reference_batch: Batch size at which ``lr`` applies (paper: 1.0 at 1024).
        momentum: Momentum of LARS and SGD.
        weight_decay: Weight decay (biases and normalisation excluded).
        warmup_epochs: Linear warmup length before the per-step cosine decay.
        trust_coefficient: The LARS trust coefficient; empty (null) takes the optimiser's own
            (:data:`DEFAULT_TRUST`: 0.001 for ``lars``, the wrapper's 0.02 for ``lars_adam``).
    """

    name: OptimizerName = "lars"
    lr: float = 1.0
    reference_batch: int = 1024
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 10.0
    trust_coefficient: float | None = None

    def __post_init__(self) -> None:
        check(self.lr > 0, "optim.lr", f"must be > 0, got {self.lr}")
        check(self.reference_batch > 0, "optim.reference_batch",
              f"must be > 0, got {self.reference_batch}")
        check(0.0 <= self.momentum < 1.0, "optim.momentum",
              f"must be in [0, 1), got {self.momentum}")
        check(self.weight_decay >= 0, "optim.weight_decay",
              f"must be >= 0, got {self.weight_decay}")
        check(self.warmup_epochs >= 0, "optim.warmup_epochs",
              f"must be >= 0, got {self.warmup_epochs}")
        check(self.trust_coefficient is None or self.trust_coefficient > 0,
              "optim.trust_coefficient", f"must be > 0 (or empty), got {self.trust_coefficient}")

    @property
    def trust(self) -> float:
        """The trust coefficient in force: the job's, else the optimiser's own."""
        if self.trust_coefficient is not None:
            return self.trust_coefficient
        return DEFAULT_TRUST.get(self.name, 0.001)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How long, how wide and where training runs.

    Attributes:
        epochs: Passes over the training split.
        batch_size: Global batch size (clips; each clip gives two views).
        workers: Ray Train workers (one process each; one GPU each with ``use_gpu``).
        use_gpu: Train on GPUs.
        cpus_per_worker: Logical CPUs each training worker reserves.
        seed: Seed of the model initialisation, label mask, shuffles and augmentations.
        precision: ``auto`` (bf16 autocast on GPU, fp32 on CPU), ``bf16`` or ``fp32``.
        sync_batchnorm: Synchronise batch norm across workers (GPU only; the paper's global BN).
        checkpoint_every: Report a checkpoint every N epochs (the last epoch always has one).
        max_failures: Restarts after a worker or node failure, from the last checkpoint
            (-1: unlimited). The default 3 survives transient failures (a lost node, a failed
            health check under load) without looping forever on a bug; announced spot
            preemptions are counted apart by Ray and retried without limit.
        log_every_steps: TensorBoard scalars every N steps.
        node_labels: Node labels the training workers must land on (Ray label selector).
        wait_for_resources_s: On an autoscaling cluster, ask the autoscaler for the plan's
            resources and wait up to this long for them; 0 fails at once when the plan does
            not fit the nodes that are up.
    """

    epochs: int = 100
    batch_size: int = 256
    workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    seed: int = 0
    precision: Precision = "auto"
    sync_batchnorm: bool = True
    checkpoint_every: int = 1
    max_failures: int = 3
    log_every_steps: int = 10
    node_labels: dict[str, str] = dataclasses.field(default_factory=dict)
    wait_for_resources_s: float = 0.0

    def __post_init__(self) -> None:
        check(self.epochs > 0, "train.epochs", f"must be > 0, got {self.epochs}")
        check(self.batch_size >= 2, "train.batch_size", f"must be >= 2, got {self.batch_size}")
        check(self.workers >= 1, "train.workers", f"must be >= 1, got {self.workers}")
        check(self.batch_size % self.workers == 0, "train.batch_size",
              f"must be divisible by train.workers={self.workers}, got {self.batch_size}")
        check(self.cpus_per_worker > 0, "train.cpus_per_worker",
              f"must be > 0, got {self.cpus_per_worker}")
        check(self.checkpoint_every >= 1, "train.checkpoint_every",
              f"must be >= 1, got {self.checkpoint_every}")
        check(self.max_failures >= -1, "train.max_failures",
              f"must be >= -1 (-1 = unlimited), got {self.max_failures}")
        check(self.wait_for_resources_s >= 0, "train.wait_for_resources_s",
              f"must be >= 0, got {self.wait_for_resources_s}")
        check(self.log_every_steps >= 1, "train.log_every_steps",
              f"must be >= 1, got {self.log_every_steps}")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Linear evaluation of the frozen encoder.

    Attributes:
        every_epochs: Probe every N epochs during training (0: only at the end).
        probe_epochs: Epochs of the linear classifier's training.
        probe_lr: Learning rate of the linear classifier.
        probe_weight_decay: Weight decay of the linear classifier.
        knn_k: Neighbours of the k-nearest-neighbour accuracy.
        batch_size: Clips per batch in feature extraction.
    """

    every_epochs: int = 0
    probe_epochs: int = 100
    probe_lr: float = 0.01
    probe_weight_decay: float = 1e-4
    knn_k: int = 20
    batch_size: int = 256

    def __post_init__(self) -> None:
        check(self.every_epochs >= 0, "eval.every_epochs",
              f"must be >= 0, got {self.every_epochs}")
        check(self.probe_epochs > 0, "eval.probe_epochs",
              f"must be > 0, got {self.probe_epochs}")
        check(self.probe_lr > 0, "eval.probe_lr", f"must be > 0, got {self.probe_lr}")
        check(self.probe_weight_decay >= 0, "eval.probe_weight_decay",
              f"must be >= 0, got {self.probe_weight_decay}")
        check(self.knn_k >= 1, "eval.knn_k", f"must be >= 1, got {self.knn_k}")
        check(self.batch_size >= 1, "eval.batch_size", f"must be >= 1, got {self.batch_size}")


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """One training job: every section with its defaults.

    Attributes:
        name: A short name for the job (used in run and experiment names).
    """

    name: str = "job"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    objective: ObjectiveConfig = dataclasses.field(default_factory=ObjectiveConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        check(not (self.objective.name == "slicer" and self.objective.kmix
                   and self.model.frontend != "tf3"), "objective.kmix",
              "k-mix mixes log-power spectrograms and needs model.frontend=tf3; set "
              "objective.kmix=false for raw audio")

    def to_dict(self) -> dict[str, Any]:
        """Return the plain nested dict (lists, not tuples) that Ray and YAML take."""
        return plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> JobConfig:
        """Build a config from a nested dict, rejecting unknown keys and bad values."""
        return build(cls, raw)

    def replace(self, overrides: Iterable[str]) -> JobConfig:
        """Return a copy with ``section.key=value`` overrides applied (values parsed as YAML)."""
        return JobConfig.from_dict(apply_overrides(self.to_dict(), overrides))

    def with_absolute_data(self) -> JobConfig:
        """The job with a relative local ``data.path`` made absolute (from the current folder).

        Ray Train's workers and Tune's trials run in working folders of their own, where a
        relative path (``--set data.path=data/fsdd``) names nothing.
        """
        from clar_ray import storage

        if not self.data.path or storage.absolute(self.data.path) == self.data.path:
            return self
        return dataclasses.replace(self, data=dataclasses.replace(
            self.data, path=storage.absolute(self.data.path)))


def load_job(path: str | Path, overrides: Iterable[str] = ()) -> JobConfig:
    """Load a job YAML file, apply overrides and validate."""
    text = Path(path).read_text()
    raw = yaml.safe_load(text) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a job file must hold a mapping, got {type(raw).__name__}")
    try:
        return JobConfig.from_dict(apply_overrides(raw, overrides))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def dump_job(config: JobConfig, path: str) -> None:
    """Write ``config`` as YAML (the form :func:`load_job` reads) to a local path or URI."""
    from clar_ray import storage

    storage.write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
