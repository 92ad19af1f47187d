"""Checkpoints of a training run: save, find the newest complete one, restore.

Why the run directory is searched, not only ``ray.train.get_checkpoint()``: Ray Train (v2,
2.60) registers a checkpoint in two steps. ``ray.train.report`` copies the folder to storage
and then puts the report on an in-memory queue of the worker process; the controller takes it
from there when it next polls the worker (every ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, 2 s by
default; Ray's own comment in ``Worker.poll_status`` reads "We can implement two phase commit
here"). A worker killed inside that window (a spot VM reclaimed, an OOM kill) leaves a complete
checkpoint on storage that the controller never heard of, and the restarted worker gets the
previous one from ``get_checkpoint()`` — or None after the first epoch, and trains from scratch.

So each checkpoint folder holds ``state.pt`` and ``progress.json`` (epoch, step, the SHA-256 of
``state.pt``), and :func:`restore` takes the newest checkpoint whose ``state.pt`` matches its
hash, among Ray's and every ``checkpoint_*`` folder of the run directory. A folder cut short by
a kill during the upload fails the hash and is passed over. Checkpoints Ray never registered are
not deleted by its ``num_to_keep``; at most one is left per failure.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import torch

from clar_ray import artifacts, storage

#: The small file beside ``state.pt`` that says which epoch a checkpoint ends and its hash.
PROGRESS_FILE = "progress.json"
#: Prefix of the checkpoint folders Ray Train writes into the run directory.
CHECKPOINT_PREFIX = "checkpoint_"


def save(folder: str, state: Mapping[str, Any]) -> None:
    """Write ``state`` (with int ``epoch`` and ``step``) and its progress file into ``folder``."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    data = buffer.getvalue()
    with open(os.path.join(folder, artifacts.STATE_FILE), "wb") as out:
        out.write(data)
    progress = {"epoch": int(state["epoch"]), "step": int(state["step"]),
                "sha256": hashlib.sha256(data).hexdigest()}
    with open(os.path.join(folder, PROGRESS_FILE), "w") as out:
        json.dump(progress, out)


def _load_verified(folder: str) -> dict[str, Any] | None:
    """The state of one checkpoint folder, or None when it is incomplete or corrupt."""
    try:
        progress = storage.read_json(storage.join_uri(folder, PROGRESS_FILE))
        data = storage.read_bytes(storage.join_uri(folder, artifacts.STATE_FILE))
    except (OSError, ValueError):
        return None
    if hashlib.sha256(data).hexdigest() != progress.get("sha256"):
        return None
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return dict(state)


def _load_unverified(folder: str) -> dict[str, Any] | None:
    """A checkpoint Ray registered, written before progress files existed."""
    try:
        return dict(artifacts.load_torch(storage.join_uri(folder, artifacts.STATE_FILE)))
    except (OSError, RuntimeError):
        return None


def _folders(run_dir: str) -> list[str]:
    """The ``checkpoint_*`` folders of a run directory (local path or URI)."""
    import pyarrow.fs as pafs

    fs, inner = storage.resolve_filesystem(run_dir)
    try:
        infos = fs.get_file_info(pafs.FileSelector(inner, recursive=False))
    except FileNotFoundError:
        return []
    return sorted(storage.join_uri(run_dir, info.base_name) for info in infos
                  if info.type == pafs.FileType.Directory
                  and info.base_name.startswith(CHECKPOINT_PREFIX))


def _progress_epoch(folder: str) -> int:
    try:
        return int(storage.read_json(storage.join_uri(folder, PROGRESS_FILE))["epoch"])
    except (OSError, ValueError, KeyError):
        return -1


def latest(run_dir: str, reported: str | None) -> tuple[dict[str, Any], str] | None:
    """The newest complete checkpoint state of a run and the folder it came from.

    Args:
        run_dir: The run directory (local path or URI) that holds the ``checkpoint_*`` folders.
        reported: The folder of ``ray.train.get_checkpoint()`` (None when Ray has none).

    Returns:
        ``(state, folder)`` of the checkpoint with the highest epoch whose state is intact
        (Ray's wins a tie), or None when the run has none.
    """
    candidates = [(f, _progress_epoch(f)) for f in _folders(run_dir)]
    if reported is not None:
        candidates = [c for c in candidates if c[0].rstrip("/") != reported.rstrip("/")]
    candidates.sort(key=lambda c: c[1], reverse=True)
    best: tuple[dict[str, Any], str] | None = None
    if reported is not None:
        state = _load_verified(reported) or _load_unverified(reported)
        if state is not None:
            best = (state, reported)
    for folder, epoch in candidates:
        if epoch < 0 or (best is not None and epoch <= int(best[0]["epoch"])):
            continue
        state = _load_verified(folder)
        if state is not None:
            return state, folder
    return best


def restore(run_dir: str, model: torch.nn.Module,
            optimizer: torch.optim.Optimizer) -> tuple[int, int, str | None]:
    """Load the newest complete checkpoint of this run into ``model`` and ``optimizer``.

    Call it inside a Ray Train worker (it asks ``ray.train.get_checkpoint()``).

    Returns:
        ``(first epoch to run, optimiser steps done, checkpoint folder or None)``; ``(0, 0,
        None)`` when the run has no checkpoint yet.
    """
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    # Ray writes its checkpoints into the run directory: name it the way the run dir is named.
    reported = (None if checkpoint is None
                else storage.join_uri(run_dir, checkpoint.path.rstrip("/").rsplit("/", 1)[-1]))
    found = latest(run_dir, reported)
    if found is None:
        return 0, 0, None
    state, folder = found
    model.load_state_dict(state["method"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["epoch"]), int(state["step"]), folder


def fingerprint(tensors: Any) -> float:
    """A float64 sum of |x| over every tensor in a (nested) state: equal iff restored bitwise.

    Used by the resume trace of the tests; cheap for small models.
    """
    total = 0.0
    stack = [tensors]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            if item.is_floating_point():
                total += float(item.detach().double().abs().sum())
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


class StepTrace:
    """Rank 0's record of every optimiser step, one JSON line each (fault-tolerance tests).

    Each attempt of ``train_func`` (the first start, every restart) writes a ``start`` line with
    where it resumed from and the Ray node it runs on, then per step its epoch, step, learning
    rate and fingerprints of the parameters and the optimiser state before and after the step:
    a test reads from it whether a restart really continued where the checkpoint left off.
    Every line carries its wall-clock time (recovery times in the fault table).
    """

    def __init__(self, path: str, *, start_epoch: int, step: int, source: str | None) -> None:
        import ray

        self.path = path
        self.attempt = f"{os.getpid()}-{os.urandom(4).hex()}"
        self._write({"event": "start", "epoch": start_epoch, "step": step, "source": source,
                     "node": ray.get_runtime_context().get_node_id()})

    def _write(self, record: Mapping[str, Any]) -> None:
        line = {"attempt": self.attempt, "time": time.time(), **record}
        storage.append_text(self.path, json.dumps(line) + "\n")

    def step(self, *, epoch: int, step: int, lr: float, before: tuple[float, float],
             after: tuple[float, float], rows: tuple[list[int], list[int]]) -> None:
        """One optimiser step (``step`` steps done before it; ``rows``: ids, stream epochs)."""
        self._write({"event": "step", "epoch": epoch, "step": step, "lr": lr,
                     "params_before": before[0], "optim_before": before[1],
                     "params_after": after[0], "optim_after": after[1],
                     "ids": rows[0], "row_epochs": rows[1]})


def read_trace(path: str) -> list[dict[str, Any]]:
    """The lines of a :class:`StepTrace` file."""
    return [json.loads(line) for line in storage.read_text(path).splitlines() if line]
