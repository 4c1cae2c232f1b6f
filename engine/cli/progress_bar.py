"""A dependency-free progress bar on stderr for the CLI (redraws in place on a terminal, one line per
stage otherwise, so CI logs stay readable)."""

from __future__ import annotations

import sys
import time

from engine.progress import ProgressEvent

__all__ = ["StderrProgress"]


class StderrProgress:
    def __init__(self, stream=None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._stage: str | None = None
        self._started = time.perf_counter()
        self._last_print = 0.0

    def __call__(self, ev: ProgressEvent) -> None:
        now = time.perf_counter()
        if ev.stage != self._stage:
            if self._stage is not None and self.tty:
                self.stream.write("\n")
            self._stage, self._started = ev.stage, now
        finished = ev.total > 0 and ev.done >= ev.total
        if not self.tty and not finished and now - self._last_print < 2.0:
            return
        self._last_print = now
        filled = int(self.width * ev.fraction)
        bar = "#" * filled + "-" * (self.width - filled)
        count = f"{ev.done}/{ev.total}" if ev.total > 0 else f"{ev.done}"  # an open-ended step has no total to show
        line = f"{ev.stage:>15} [{bar}] {count} {ev.message} ({now - self._started:.1f} s)"
        if self.tty:
            self.stream.write("\r" + line[:160].ljust(100))
            if finished:
                self.stream.write("\n")
                self._stage = None
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
