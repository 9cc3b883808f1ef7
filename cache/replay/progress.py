"""A one-line progress bar on stderr (redrawn in place on a terminal, one line per phase otherwise)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


class ProgressBar:
    """Callable as ``(phase, done, total)``; draws at most ten times a second."""

    def __init__(self, stream: TextIO | None = None, *, interval: float = 0.1) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._phase: str | None = None
        self._started = time.perf_counter()
        self._drawn = 0.0

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if phase != self._phase:
            self._phase, self._started, self._drawn = phase, now, 0.0
        finished = done >= total
        if not finished and (not self.tty or now - self._drawn < self.interval):
            return
        self._drawn = now
        self.stream.write(("\r" if self.tty else "") + self.line(phase, done, total, now - self._started))
        if finished:
            self.stream.write("\n")
        self.stream.flush()

    @staticmethod
    def line(phase: str, done: int, total: int, elapsed: float) -> str:
        share = done / total if total else 1.0
        filled = int(round(share * WIDTH))
        return f"{phase:>10} [{'#' * filled}{'.' * (WIDTH - filled)}] {share:6.1%} {done}/{total} {elapsed:6.1f}s"
