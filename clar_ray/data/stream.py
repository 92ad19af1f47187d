"""The training stream: Parquet shards → label-fraction mask → two augmented views, on Ray Data.

One Ray Data execution serves the whole run, every epoch of it, so its augmentation actors start
once and stay busy across epoch boundaries (a fresh execution per epoch would list the files,
start new actor processes and import again every epoch):

    from_items: one row per (pass, shard file), files in a seeded order per pass
      → AugmentViews actors (a fixed pool of CPU actors), one file per call: read it, put its
        rows in a seeded order for the epoch, augment them B at a time: pcm int16 (B, T) →
        {view_a: float32 (B, T), view_b: float32 (B, T), label: int64 (B,), sample_id: int64 (B,),
         epoch: int64 (B,)}
      → Ray Train's streaming split: one shard per training worker

Views are a pure function of (seed, epoch, sample id, view index). The stream counts epochs
from the first epoch it serves, which only the training loop knows when it resumes from a
checkpoint: rank 0 writes it into a tiny named :class:`EpochClock` actor before the first
batch is asked for, and the actors add it to each file's pass number (0 for the first epoch).
The order files are handed out in is seeded by the pass, not the epoch (the driver builds it
before the clock is set); the order of rows and the views follow the epoch.

The number of augmentation actors comes from :func:`clar_ray.resources.plan_resources`, which
fails at once, naming what is missing, when the plan cannot fit the cluster.

Letters: B rows in a batch, T samples in a clip, E epochs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from clar_ray.config import JobConfig
from clar_ray.data.manifest import Manifest, load_split, pcm_from_arrow
from clar_ray.resources import ResourcePlan
from clar_ray.storage import resolve_filesystem

#: Seconds Ray Data waits for the augmentation actors before it gives up with an error.
ACTOR_START_TIMEOUT_S = 120.0


def labelled_ids(sample_ids: np.ndarray, labels: np.ndarray, fraction: float,
                 seed: int) -> np.ndarray:
    """Choose, per class, ``round(fraction * n_class)`` (at least 1) rows that keep their label.

    Args:
        sample_ids: int64 (N,) ids of the training rows.
        labels: int64 (N,) their class indices.
        fraction: Fraction of each class to keep labelled, in (0, 1].
        seed: Seed of the choice.

    Returns:
        Sorted int64 ids of the labelled rows. The choice depends only on (ids, labels,
        fraction, seed), not on the order of the rows.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    order = np.argsort(sample_ids, kind="stable")
    sample_ids, labels = sample_ids[order], labels[order]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1ABE1]))
    keys = rng.random(len(sample_ids))
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        keep = max(1, round(fraction * len(members)))
        chosen.append(sample_ids[members[np.argsort(keys[members], kind="stable")[:keep]]])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


#: Salt of the per-epoch choice of left-out rows (files use 0, rows 1 + file index).
DROP_SALT = 2**31 - 1

#: The resource Ray gives the head node only.
HEAD_NODE_RESOURCE = "node:__internal_head__"


class EpochClock:
    """A tiny Ray actor holding the first epoch of the run's stream execution."""

    def __init__(self) -> None:
        self.epoch = 0

    def set(self, epoch: int) -> int:
        """Set the epoch the next stream execution starts at."""
        self.epoch = int(epoch)
        return self.epoch

    def get(self) -> int:
        """The epoch the current stream execution started at."""
        return self.epoch


def clock_name(run_id: str) -> str:
    """The Ray actor name of a run's epoch clock."""
    return f"clar-ray-epoch-{run_id}"


def get_or_create_clock(run_id: str) -> Any:
    """Return the run's :class:`EpochClock` actor handle, creating it if needed.

    The clock lives on the head node, the one node a cluster never loses (cluster.yaml's
    head is on-demand; workers are spot): on a worker node it would die with the node and
    take the stream's restarted actors and the resuming trainers with it.
    """
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    actor = ray.remote(num_cpus=0)(EpochClock)
    # Outside the caller's placement group (a Tune trial's has no room for the head).
    return actor.options(
        name=clock_name(run_id), get_if_exists=True, lifetime="detached",
        resources={HEAD_NODE_RESOURCE: 0.001},
        scheduling_strategy=PlacementGroupSchedulingStrategy(
            placement_group=None)).remote()  # type: ignore[arg-type]  # documented opt-out


def first_epoch(run_id: str | None, fixed: int | None) -> int:
    """The first epoch of a stream: ``fixed``, or what the run's clock holds."""
    if run_id is None:
        return int(fixed or 0)
    import ray

    return int(ray.get(ray.get_actor(clock_name(run_id)).get.remote()))  # type: ignore[call-overload]


def epoch_order(count: int, seed: int, epoch: int, salt: int) -> np.ndarray:
    """A seeded permutation of ``range(count)`` for one epoch (files: salt 0; rows: 1 + file)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, salt, 0x5EED]))
    return rng.permutation(count)


def dropped_ids(ids: Sequence[int] | np.ndarray, keep: int | None, seed: int,
                epoch: int) -> np.ndarray:
    """The sample ids an epoch leaves out so that it holds exactly ``keep`` rows (sorted).

    A seeded choice per epoch, as a shuffled DataLoader's ``drop_last`` over the whole epoch:
    an epoch is then a whole number of global batches, so the trainer's epochs are the
    stream's epochs, and a run resumed at epoch k trains on the rows the uninterrupted run
    would have (no rows of epoch k - 1 spill into epoch k).
    """
    ids = np.sort(np.asarray(ids, dtype=np.int64))
    if keep is None or keep >= len(ids):
        return ids[:0]
    return np.sort(ids[epoch_order(len(ids), seed, epoch, DROP_SALT)[keep:]])


def read_shard(path: str, *, filesystem: Any, seed: int, epoch: int, salt: int) -> Any:
    """One shard file as an Arrow table (sample_id, pcm, label), rows in the epoch's order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # One thread: an actor has one core, and Arrow's pool of one thread per core would fight
    # the other actors for it.
    table = pq.read_table(path, filesystem=filesystem, columns=["sample_id", "pcm", "label"],
                          use_threads=False)
    return table.take(pa.array(epoch_order(table.num_rows, seed, epoch, salt)))


def limit_threads() -> None:
    """Keep one augmentation process to one core: BLAS, OpenMP, numba, Arrow and torch."""
    import pyarrow

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = "1"
    pyarrow.set_cpu_count(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # threadpoolctl comes with scikit-learn; without it env vars must do
        pass
    torch = sys.modules.get("torch")  # importing torch costs seconds in every fresh actor
    if torch is not None:
        torch.set_num_threads(1)


class AugmentViews:
    """Ray Data actor: shard files of an epoch → two augmented float32 views per clip.

    It reads each file itself (no read tasks, so no extra worker processes or CPUs) and hands
    its rows to the augmenter ``batch_size`` at a time.
    """

    def __init__(
        self,
        *,
        sequence: Sequence[str],
        sample_rate: int,
        preset: str,
        params: Mapping[str, Mapping[str, Any]],
        seed: int,
        labelled: np.ndarray,
        filesystem: Any,
        batch_size: int,
        run_id: str | None,
        epoch: int | None,
        train_ids: np.ndarray | None = None,
        rows_per_epoch: int | None = None,
    ) -> None:
        limit_threads()
        from clar_ray.augment import Augmenter

        self.augmenter = Augmenter(sequence, sample_rate=sample_rate, preset=preset,
                                   params=params, seed=seed) if sequence else None
        self.seed = seed
        self.labelled = np.asarray(labelled, dtype=np.int64)
        self.filesystem = filesystem
        self.batch_size = batch_size
        self.first_epoch = first_epoch(run_id, epoch)
        self.train_ids = train_ids
        self.rows_per_epoch = rows_per_epoch

    def __call__(self, items: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """Read, shuffle and augment the files of ``items`` ({"path", "file", "pass"})."""
        for path, index, offset in zip(items["path"], items["file"], items["pass"]):
            epoch = self.first_epoch + int(offset)
            table = self._planned(read_shard(str(path), filesystem=self.filesystem,
                                             seed=self.seed, epoch=epoch, salt=1 + int(index)),
                                  epoch)
            for start in range(0, table.num_rows, self.batch_size):
                part = table.slice(start, self.batch_size)
                yield self.augment(pcm_from_arrow(part.column("pcm")),
                                   part.column("sample_id").to_numpy(),
                                   part.column("label").to_numpy(), epoch)

    def _planned(self, table: Any, epoch: int) -> Any:
        """The file's rows that the epoch keeps (all of them without ``rows_per_epoch``)."""
        if self.train_ids is None or self.rows_per_epoch is None:
            return table
        left_out = dropped_ids(self.train_ids, self.rows_per_epoch, self.seed, epoch)
        if not len(left_out):
            return table
        import pyarrow as pa

        ids = table.column("sample_id").to_numpy()
        return table.filter(pa.array(~np.isin(ids, left_out)))

    def augment(self, pcm: np.ndarray, ids: np.ndarray, labels: np.ndarray,
                epoch: int) -> dict[str, np.ndarray]:
        """Two views of each clip of one epoch; unlabelled rows get label -1."""
        ids = np.asarray(ids, dtype=np.int64)
        waves = pcm_to_float(pcm)  # (B, T)
        if self.augmenter is None:
            views = [waves, waves.copy()]
        else:
            views = [self.augmenter(waves, ids, epoch=epoch, view=view) for view in (0, 1)]
        keep = np.isin(ids, self.labelled, assume_unique=False)
        labels = np.where(keep, np.asarray(labels, dtype=np.int64), -1)
        return {"view_a": views[0], "view_b": views[1], "label": labels, "sample_id": ids,
                "epoch": np.full(len(ids), epoch, np.int64)}


def pcm_to_float(pcm: np.ndarray) -> np.ndarray:
    """int16 PCM (B, T) → float32 in [-1, 1)."""
    return np.asarray(pcm, dtype=np.float32) * np.float32(1.0 / 32768.0)


def ingest_config(config: JobConfig) -> Any:
    """Ray Train's ``DataConfig`` for the stream: ordered output when the job asks for it.

    Ray Train sets a dataset's execution options from this config (by default from the
    controller's ``DataContext``), so the order has to be set here, not only on the dataset.
    """
    import ray.train

    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = config.data.ordered
    return ray.train.DataConfig(execution_options=options)


def build_train_stream(
    config: JobConfig,
    plan: ResourcePlan,
    *,
    run_id: str | None,
    epoch: int | None = None,
    epochs: int | None = None,
    cpu_sequence: Sequence[str] | None = None,
    rows_per_epoch: int | None = None,
) -> Any:
    """Build the lazy Ray Dataset of augmented view pairs of the training split, for E epochs.

    Every epoch holds each training row once (or the ``rows_per_epoch`` of them that the epoch
    keeps), in a new order and with new views; the epochs follow each other in one execution
    (unordered, a few blocks of the next epoch may arrive before the last of the current one).

    Args:
        config: The job (data path, augmentation sequence, seed, label fraction).
        plan: The resource plan (number of actors and their CPUs).
        run_id: Names the :class:`EpochClock` that holds the first epoch; None with ``epoch``
            fixes it (benchmarks, tests).
        epoch: The first epoch, used when ``run_id`` is None.
        epochs: Epochs in the stream (default ``train.epochs``).
        cpu_sequence: The part of ``augment.sequence`` to run on CPU actors (default: all).
        rows_per_epoch: Rows each epoch keeps (a whole number of global batches; see
            :func:`dropped_ids`); None keeps every row.

    Returns:
        A ``ray.data.Dataset`` with columns view_a, view_b, label, sample_id, epoch.
    """
    import ray.data

    manifest = Manifest.read(config.data.path)
    split = config.data.train_split
    columns = load_split(config.data.path, split, columns=["sample_id", "label"])
    labelled = labelled_ids(columns["sample_id"], columns["label"], config.data.label_fraction,
                            config.train.seed)
    fs, _root = resolve_filesystem(config.data.path)
    files = [resolve_filesystem(path)[1]
             for path in manifest.shard_paths(config.data.path, split)]
    epochs = config.train.epochs if epochs is None else epochs
    seed = config.train.seed
    items = [{"path": files[index], "file": int(index), "pass": offset}
             for offset in range(epochs)
             for index in epoch_order(len(files), seed, offset, 0)]
    context = ray.data.DataContext.get_current()
    context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S  # type: ignore[assignment]
    context.enable_progress_bars = False
    # Ordered output makes a seeded run repeat exactly: the actors still work in parallel,
    # but a batch that finishes early waits for the ones before it.
    context.execution_options.preserve_order = config.data.ordered
    # Blocks of one augmented batch (two float32 views: 8 bytes a sample), handed on as soon
    # as each is ready.
    batch = config.augment.actor_batch_size
    context.target_max_block_size = batch * 8 * manifest.clip_samples
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    sequence = tuple(config.augment.sequence if cpu_sequence is None else cpu_sequence)
    return dataset.map_batches(
        AugmentViews,
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        num_cpus=plan.cpus_per_actor,
        label_selector=dict(config.augment.node_labels) or None,
        fn_constructor_kwargs={
            "sequence": sequence,
            "sample_rate": manifest.sample_rate,
            "preset": config.augment.preset,
            "params": config.augment.params,
            "seed": seed,
            "labelled": labelled,
            "filesystem": fs,
            "batch_size": batch,
            "run_id": run_id,
            "epoch": epoch,
            "train_ids": columns["sample_id"] if rows_per_epoch is not None else None,
            "rows_per_epoch": rows_per_epoch,
        },
    )
