"""Tests of clar_ray.console's progress: a bar on a terminal, a few plain lines otherwise."""

from __future__ import annotations

import fcntl
import io
import os
import select
import struct
import sys
import termios

import pytest

from clar_ray.console import Progress, use_bars


def _plain(total: int, updates: list[int], lines: int = 4) -> list[str]:
    out = io.StringIO()
    with Progress("evaluate: features", total, unit="clip", stream=out, lines=lines) as bar:
        for n in updates:
            bar.update(n)
    return out.getvalue().splitlines()


def test_without_a_terminal_progress_prints_a_line_per_quarter() -> None:
    assert not use_bars(io.StringIO())
    assert _plain(8, [1] * 8) == [f"evaluate: features {n}/8 clips" for n in (2, 4, 6, 8)]


def test_plain_lines_are_at_most_lines_however_the_count_arrives() -> None:
    # One big update passes three quarters at once: one line, not three.
    assert _plain(100, [80, 20]) == ["evaluate: features 80/100 clips",
                                     "evaluate: features 100/100 clips"]
    assert _plain(3, [1, 1, 1]) == [f"evaluate: features {n}/3 clips" for n in (1, 2, 3)]
    assert _plain(1000, [1] * 1000, lines=2) == ["evaluate: features 500/1000 clips",
                                                 "evaluate: features 1000/1000 clips"]


def test_an_empty_task_prints_nothing() -> None:
    assert _plain(0, []) == []
    with pytest.raises(ValueError, match="total >= 0"):
        Progress("x", -1, stream=io.StringIO())


def test_default_stream_is_standard_error_at_call_time(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    with Progress("embed", 2, unit="clip") as bar:
        bar.update(2)
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["embed 2/2 clips"] and captured.out == ""


def _terminal() -> tuple[int, int]:
    """A pseudo-terminal (main, side) of 24 rows by 100 columns (a new one has 0 by 0)."""
    main, side = os.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    return main, side


def _read_all(fd: int) -> str:
    chunks = []
    while select.select([fd], [], [], 0)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the other side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_on_a_terminal_progress_is_a_tqdm_bar() -> None:
    main, side = _terminal()
    with os.fdopen(side, "w") as terminal:
        assert use_bars(terminal)
        with Progress("evaluate: linear probe", 4, unit="epoch", stream=terminal) as bar:
            for _ in range(4):
                bar.update(1)
        terminal.flush()
        text = _read_all(main)
    os.close(main)
    # tqdm redraws one line with carriage returns and ends at the total; no plain lines.
    assert "\r" in text and "evaluate: linear probe" in text and "4/4" in text
    assert "4/4 epochs" not in text


def test_bars_can_be_forced_either_way() -> None:
    out = io.StringIO()
    with Progress("embed", 2, unit="clip", stream=out, bars=True) as bar:
        bar.update(2)
    assert "\r" in out.getvalue() and "2/2" in out.getvalue()
    main, side = _terminal()
    with os.fdopen(side, "w") as terminal:
        with Progress("embed", 2, unit="clip", stream=terminal, bars=False) as bar:
            bar.update(2)
        terminal.flush()
        text = _read_all(main)
    os.close(main)
    assert text.replace("\r\n", "\n") == "embed 2/2 clips\n"
