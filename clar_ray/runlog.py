"""What a run records as it goes: TensorBoard scalars and ``metrics.jsonl``, on one step axis.

The step convention, shared by training and evaluation:

    step/*    at the optimiser step count after the step (``train.log_every_steps`` apart)
    epoch/*   at the epoch index (0 for the first epoch): :func:`epoch_step`
    eval/*    at the index of the last epoch the encoder trained, so a finished run's scores
              sit beside its last epoch/* point: :func:`eval_step`

:class:`Board` is the one TensorBoard writer (``RUN_DIR/tensorboard``; for a URI it writes a
local folder and uploads it). :class:`RunLog` is training rank 0's record of a run: the board
plus one JSON line per epoch in ``metrics.jsonl``, which the driver's console and
:func:`clar_ray.evaluate.result_from_training` read back (:func:`read_metrics`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from clar_ray import storage
from clar_ray.rundir import METRICS_FILE, TENSORBOARD_DIR, run_file

__all__ = ["Board", "RunLog", "epoch_step", "eval_step", "read_metrics"]


def epoch_step(epoch: int) -> int:
    """The TensorBoard step of the ``epoch/*`` scalars of epoch index ``epoch``."""
    return epoch


def eval_step(epochs_trained: int) -> int:
    """The TensorBoard step of an encoder's ``eval/*`` scalars: its last epoch's index.

    An encoder trained ``epochs_trained`` epochs sits at ``epochs_trained - 1`` (0 if untrained).
    """
    return max(epochs_trained - 1, 0)


class Board:
    """A run's TensorBoard writer (``RUN_DIR/tensorboard``, local or a URI).

    Each writer has its own event file: TensorBoard's name for it holds only the second and
    the host, so two writers opened in the same second (training's and evaluation's) would
    otherwise write one file and the second would replace the first.

    Args:
        run_dir: The run directory. For a URI the events go to a local folder first and are
            uploaded by :meth:`flush` and :meth:`close`.
    """

    def __init__(self, run_dir: str) -> None:
        from tensorboardX import SummaryWriter

        self.target = run_file(run_dir, TENSORBOARD_DIR)
        self.remote = storage.is_uri(run_dir)
        self.folder = tempfile.mkdtemp(prefix="clar-ray-tb-") if self.remote else self.target
        self.writer = SummaryWriter(self.folder,
                                    filename_suffix=f".{os.getpid()}.{os.urandom(3).hex()}")

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        """Add ``prefix/name`` scalars at ``step``."""
        for name, value in values.items():
            self.writer.add_scalar(f"{prefix}/{name}", value, step)

    def flush(self) -> None:
        """Write the events out (and upload them for a URI)."""
        self.writer.flush()
        self._upload()

    def close(self) -> None:
        """Close the writer (and upload its events for a URI)."""
        self.writer.close()
        self._upload()

    def _upload(self) -> None:
        if self.remote:
            storage.upload_dir(self.folder, self.target)

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(run_dir: str) -> list[dict[str, Any]]:
    """The epoch records of a run's ``metrics.jsonl``, in order (none for a new run)."""
    path = run_file(run_dir, METRICS_FILE)
    if not storage.exists(path):
        return []
    return [json.loads(line) for line in storage.read_text(path).splitlines() if line.strip()]


class RunLog:
    """Training rank 0's record of a run: TensorBoard scalars and ``metrics.jsonl``.

    Args:
        run_dir: The run directory (local path or URI).
        start_epoch: The epoch this attempt starts at; records of later epochs (written before
            a restart from an earlier checkpoint) are dropped, as those epochs run again.
    """

    def __init__(self, run_dir: str, start_epoch: int) -> None:
        self.board = Board(run_dir)
        self.metrics_path = run_file(run_dir, METRICS_FILE)
        if storage.exists(self.metrics_path):
            kept = [r for r in read_metrics(run_dir) if r["epoch"] < start_epoch]
            storage.write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))

    def step(self, values: Mapping[str, float], step: int) -> None:
        """``step/*`` scalars at the optimiser step count."""
        self.board.scalars("step", values, step)

    def epoch(self, record: Mapping[str, Any]) -> None:
        """One epoch's record: its numbers as ``epoch/*`` scalars and a line of metrics.jsonl."""
        numbers = {k: v for k, v in record.items()
                   if isinstance(v, (int, float)) and k != "epoch"}
        self.board.scalars("epoch", numbers, epoch_step(int(record["epoch"])))
        self.board.flush()
        storage.append_text(self.metrics_path, json.dumps(record) + "\n")

    def close(self) -> None:
        """Close the TensorBoard writer."""
        self.board.close()
