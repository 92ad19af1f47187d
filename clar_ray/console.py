"""What clar-ray prints: one line per epoch, progress, and Ray's own logs kept quiet unless asked.

    epoch 2/4  loss 7.412 (ce 3.10 nt_xent 4.31)  acc 0.39  lr 0.250  55 views/s  0:29 ETA 0:29
          probe: linear 0.612 kNN 0.550

The driver prints the lines while ``trainer.fit()`` runs, from a thread that follows the run's
``metrics.jsonl`` (rank 0 appends one record per epoch, locally or on a bucket), so the line
comes from clar-ray on the driver, not prefixed by a Ray worker, and needs nothing from the
training loop. :func:`quiet_ray` turns Ray's INFO logs, its workers' output and deprecation
warnings off; ``--verbose`` leaves them on.

Progress (``evaluate``, ``embed``, the final probe, ``prepare``) is decided in one place,
:func:`use_bars`: a bar when standard error is a terminal, plain lines when it is not (a log
file, a CI job). :class:`Progress` is one counted task drawn either way; Ray Data's own bars
(``prepare``, an ``embed`` into a folder) follow the same decision through
:func:`data_progress_bars`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["EpochFollower", "Progress", "data_progress_bars", "error_line", "format_duration",
           "format_epoch", "quiet_ray", "root_cause", "use_bars", "verbose"]

#: Record keys that are not parts of the loss.
_NOT_PARTS = frozenset({"epoch", "step", "loss", "acc", "lr", "views_per_s", "epoch_seconds",
                        "linear_top1", "knn_top1", "probe_seconds"})
_VERBOSE = False


def verbose() -> bool:
    """True when ``--verbose`` asked for Ray's logs and full tracebacks."""
    return _VERBOSE


def format_duration(seconds: float) -> str:
    """``75.2`` → ``"1:15"``, ``3725`` → ``"1:02:05"``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_epoch(record: Mapping[str, Any], total: int, elapsed: float,
                 done_before: int = 0, seconds_per_epoch: float | None = None) -> str:
    """One console line for one epoch's record of ``metrics.jsonl``.

    Args:
        record: ``{"epoch": index, "loss": ..., parts..., "acc"?, "lr", "views_per_s",
            "linear_top1"?, "knn_top1"?}``.
        total: The run's epochs.
        elapsed: Seconds since this training started.
        done_before: Epochs done before it started (a resumed run), for the ETA.
        seconds_per_epoch: The mean epoch time so far, for the ETA (default: ``elapsed``
            over the epochs run, which counts Ray's start too).
    """
    epoch = int(record["epoch"]) + 1
    parts = " ".join(f"{k} {float(v):.3f}" for k, v in sorted(record.items())
                     if k not in _NOT_PARTS and isinstance(v, (int, float)))
    line = f"epoch {epoch}/{total}  loss {float(record['loss']):.3f}"
    if parts:
        line += f" ({parts})"
    if "acc" in record:
        line += f"  labelled acc {float(record['acc']):.3f}"
    line += f"  lr {float(record.get('lr', 0.0)):.3g}"
    line += f"  {float(record.get('views_per_s', 0.0)):.0f} views/s"
    per_epoch = seconds_per_epoch or elapsed / max(epoch - done_before, 1)
    line += f"  {format_duration(elapsed)} ETA {format_duration(per_epoch * (total - epoch))}"
    if "linear_top1" in record:
        line += (f"  probe linear {float(record['linear_top1']):.3f} "
                 f"kNN {float(record.get('knn_top1', float('nan'))):.3f}")
    return line


class EpochFollower:
    """Print one line per new epoch of a run's ``metrics.jsonl`` while training runs.

    Args:
        metrics_path: The run's ``metrics.jsonl`` (local path or URI).
        total: The run's epochs.
        done_before: Epochs finished before this start (``--resume``); their lines are skipped.
        poll_s: Seconds between reads.
        out: Where lines go (default: standard output).
        read: Reads the file's text, or None when it does not exist (default:
            :mod:`clar_ray.storage`).
        enabled: False prints nothing (a context manager that does nothing).
    """

    def __init__(self, metrics_path: str, total: int, *, done_before: int = 0,
                 poll_s: float = 1.0, out: TextIO | None = None,
                 read: Callable[[str], str | None] | None = None, enabled: bool = True) -> None:
        self.path, self.total, self.done_before = metrics_path, total, done_before
        self.poll_s, self.out, self.enabled = poll_s, out, enabled
        self.read = read or _read_or_none
        self.printed = done_before - 1  # the highest epoch index printed
        self.started = time.monotonic()
        self.seconds: list[float] = []  # epoch_seconds of the epochs printed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="clar-ray-epochs", daemon=True)

    def __enter__(self) -> EpochFollower:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        self.poll()  # the last epoch, if the loop has not seen it yet

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception:  # a transient read error must not stop training output
                continue

    def poll(self) -> None:
        """Print the lines of the epochs recorded since the last poll."""
        text = self.read(self.path)
        if not text:
            return
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line being written
                continue
            if int(record.get("epoch", -1)) > self.printed:
                self.printed = int(record["epoch"])
                self.seconds.append(float(record.get("epoch_seconds", 0.0)))
                mean = sum(self.seconds) / len(self.seconds) if all(self.seconds) else None
                print(format_epoch(record, self.total, time.monotonic() - self.started,
                                   self.done_before, mean),
                      file=self.out or sys.stdout, flush=True)


def use_bars(stream: TextIO | None = None) -> bool:
    """Whether progress is drawn as a bar: ``stream`` (default standard error) is a terminal."""
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """Progress of one counted task: a tqdm bar on a terminal, a few plain lines otherwise.

    Without a terminal it prints ``DESC DONE/TOTAL UNITs`` each time the count passes another
    ``1/lines`` of the total (at most ``lines`` lines, the last at the total), so a log gets a
    few lines however fast or slow the task is. A total of 0 prints nothing.

    Args:
        desc: What is counted, e.g. ``"evaluate: features"``.
        total: The count at the end.
        unit: The counted thing, singular (``"clip"``, ``"epoch"``).
        stream: Where it goes (default: standard error).
        bars: True a bar, False plain lines (default: :func:`use_bars` of ``stream``).
        lines: Plain lines over the whole task.
    """

    def __init__(self, desc: str, total: int, *, unit: str = "item",
                 stream: TextIO | None = None, bars: bool | None = None,
                 lines: int = 4) -> None:
        if total < 0 or lines < 1:
            raise ValueError(f"need total >= 0 and lines >= 1, got {total} and {lines}")
        self.desc, self.total, self.unit, self.lines = desc, int(total), unit, lines
        self.stream = stream if stream is not None else sys.stderr
        self.bars = use_bars(self.stream) if bars is None else bars
        self.done = 0
        self._next_line = 1  # the next plain line is due at _next_line / lines of the total
        self._bar: Any = None
        if self.bars and self.total:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit, file=self.stream,
                             dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more done."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        if self.bars or not self.total or self.done * self.lines < self._next_line * self.total:
            return
        while self.done * self.lines >= self._next_line * self.total:
            self._next_line += 1
        print(f"{self.desc} {min(self.done, self.total)}/{self.total} {self.unit}s",
              file=self.stream, flush=True)

    def close(self) -> None:
        """Finish the bar (plain lines need nothing)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def data_progress_bars(enabled: bool | None = None) -> Iterator[None]:
    """Ray Data's progress bars on (or off) on this driver for the ``with`` block.

    ``enabled`` None follows :func:`use_bars`. Needs Ray Data (imported here).
    """
    import ray.data

    context = ray.data.DataContext.get_current()
    before = context.enable_progress_bars
    context.enable_progress_bars = use_bars() if enabled is None else enabled
    try:
        yield
    finally:
        context.enable_progress_bars = before


def _read_or_none(path: str) -> str | None:
    from clar_ray import storage

    return storage.read_text(path) if storage.exists(path) else None


#: Ray loggers set to ERROR unless --verbose.
_RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.air", "ray.util")


def quiet_ray(verbose_: bool = False) -> None:
    """Silence Ray's INFO logs and progress bars, and Python's deprecation warnings.

    Call before Ray starts. With ``verbose_`` everything stays on (and later calls of
    :func:`verbose` return True, so errors show their tracebacks).
    """
    global _VERBOSE
    _VERBOSE = verbose_
    if verbose_:
        return
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning,ignore::FutureWarning")
    _ignore_warnings()
    for name in _RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _ignore_warnings() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*[Dd]eprecat.*")


def ray_init_kwargs() -> dict[str, Any]:
    """Keyword arguments for ``ray.init`` that follow :func:`quiet_ray`."""
    if _VERBOSE:
        return {"log_to_driver": True}
    return {"log_to_driver": False, "logging_level": logging.ERROR}


def quiet_data_context() -> None:
    """Ray Data's progress output and INFO logs off on this driver (after Ray starts)."""
    if _VERBOSE:
        return
    import ray.data

    # Importing Ray put its own filter for RayDeprecationWarning in front of ours.
    _ignore_warnings()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    if hasattr(context, "print_on_execution_start"):
        context.print_on_execution_start = False
    for name in _RAY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    _drop_raylet_warnings()


def _drop_raylet_warnings() -> None:
    """Keep the raylet's warnings off this driver's console (its errors still show).

    Ray's driver prints what the raylet publishes (``(raylet) WARNING: 8 PYTHON worker processes
    have been started...`` whenever a study starts its trials on a small machine) from a thread
    of its own, whatever ``log_to_driver`` says, through ``ray._private.worker
    .print_to_stdstream``; this wraps that function. Ray without it keeps printing them.
    """
    try:
        from ray._private import worker as ray_worker
    except ImportError:
        return
    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None or getattr(original, "clar_ray_filter", False):
        return

    def print_to_stdstream(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") == "raylet" and not _VERBOSE:
            lines = [line for line in data.get("lines", [])
                     if not line.lstrip().upper().startswith("WARNING")]
            if not lines:
                return
            data = {**data, "lines": lines}
        original(data, ignore_prefix)

    print_to_stdstream.clar_ray_filter = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = print_to_stdstream


def _is_ours(err: BaseException) -> bool:
    return type(err).__module__.startswith("clar_ray")


def root_cause(err: BaseException) -> BaseException:
    """The exception behind Ray's wrappers (a worker's, the controller's, a task's cause).

    The walk stops at clar-ray's own exceptions, whose messages already name cause and fix.
    """
    seen: set[int] = set()
    while id(err) not in seen and not _is_ours(err):
        seen.add(id(err))
        failures = getattr(err, "worker_failures", None)
        following: Any = next(iter(failures.values()), None) if isinstance(failures,
                                                                         dict) else None
        for name in ("controller_failure", "cause"):
            if following is None:
                following = getattr(err, name, None)
        if following is None:
            following = err.__cause__
        if not isinstance(following, BaseException):
            break
        err = following
    return err


def error_line(err: BaseException,
               user_errors: tuple[type[BaseException], ...] = ()) -> tuple[str, bool]:
    """One line for an error, and whether the user's input caused it (exit code 2).

    clar-ray's own errors and user errors give their message; anything else (Ray's, Arrow's,
    torch's) its type and the first line of its message, from the root cause.
    """
    root = root_cause(err)
    lines = [line.strip() for line in str(root).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if isinstance(root, KeyError) and root.args:
        text = str(root.args[0])
    if len(text) > 400:
        text = text[:397] + "..."
    if _is_ours(root):  # its message names the cause and the fix: no type name before it
        return text, isinstance(root, user_errors)
    # A ValueError deep inside a Ray worker is no mistake of the user's command line.
    if isinstance(root, user_errors) and root is err:
        return text, True
    return f"{type(root).__name__}: {text}", False
