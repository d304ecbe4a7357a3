"""A small progress printer for stderr: count, percentage, rate and ETA, no dependency.

On a terminal the bar is redrawn in place at most ten times a second; otherwise (a log file, a
pipe) a plain line is printed at most every ten seconds, so logs stay readable.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, NamedTuple, TextIO

if TYPE_CHECKING:
    from imgrad.batch import Progress


class _Count(NamedTuple):
    """The fields of :class:`imgrad.batch.Progress` the printer reads, for counted steps."""

    done: int
    total: int
    failed: int
    elapsed: float


def duration(seconds: float) -> str:
    """``42s``, ``3:07`` or ``1:02:03``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{seconds:02}" if hours else f"{minutes}:{seconds:02}"


class ProgressPrinter:
    """Callable taking :class:`imgrad.batch.Progress` events; ``message`` prints around it.

    ``unit`` names what is counted (files; tiles for :meth:`steps`).
    """

    width = 24

    def __init__(self, stream: TextIO, *, enabled: bool = True, unit: str = "files") -> None:
        self.stream = stream
        self.enabled = enabled
        self.unit = unit
        self.start = time.monotonic()
        self.tty = stream.isatty()
        self.interval = 0.1 if self.tty else 10.0
        self.last = 0.0
        self.shown = False  # a bar is on the current terminal line

    def line(self, p: Progress | _Count) -> str:
        """``  42/1000 [##......]   4%  12.3 files/s  ETA 1:18  1 failed``."""
        fraction = p.done / p.total if p.total else 1.0
        filled = int(fraction * self.width)
        rate = p.done / p.elapsed if p.elapsed > 0 else 0.0
        eta = duration((p.total - p.done) / rate) if rate > 0 else "?"
        text = (
            f"{p.done:>{len(str(p.total))}}/{p.total} [{'#' * filled:.<{self.width}}] "
            f"{fraction:4.0%}  {rate:.1f} {self.unit}/s  ETA {eta}"
        )
        return text + (f"  {p.failed} failed" if p.failed else "")

    def __call__(self, p: Progress | _Count) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if p.done < p.total and now - self.last < self.interval:
            return
        self.last = now
        if self.tty:
            self.stream.write("\r\x1b[K" + self.line(p))
            self.shown = True
        else:
            self.stream.write(self.line(p) + "\n")
        self.stream.flush()

    def steps(self, done: int, total: int) -> None:
        """A ``progress(done, total)`` callback (the tiles of :func:`imgrad.process_huge`)."""
        self(_Count(done, total, 0, time.monotonic() - self.start))

    def message(self, text: str) -> None:
        """Print a line of its own, clearing the bar first (it comes back at the next event)."""
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.shown = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False
