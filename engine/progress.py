"""Progress reporting: the engine calls a plain callback; the CLI and the app decide how to draw it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ProgressEvent", "ProgressCallback", "Stage", "no_progress", "TimeLeft", "Repeating", "samples_text"]


class Stage:
    PREPROCESS = "preprocess"
    CALIBRATE = "calibrate"
    QUANTIZE = "quantize"
    COMPARE = "compare"
    FINAL_OUTPUTS = "final outputs"
    RANK = "rank"
    PREPARE_PROBES = "preparing probes"  # before sensitivity or a fallback search: the probe data and its session
    SENSITIVITY = "sensitivity"
    AUTOFALLBACK = "fallback search"
    LATENCY = "latency"
    SWEEP = "sweep"


@dataclass(frozen=True)
class ProgressEvent:
    stage: str
    done: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float:
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)


ProgressCallback = Callable[[ProgressEvent], None]


def no_progress(_: ProgressEvent) -> None:
    return None


def samples_text(start: int, stop: int, n: int) -> str:
    """The samples [start, stop) of a batch of n, counted from 1: 'samples 3-4 of 16', or 'sample 9 of 16'."""
    return f"sample {start + 1} of {n}" if stop - start == 1 else f"samples {start + 1}-{stop} of {n}"


class Repeating:
    """A progress callback that remembers the last event it passed on; again() passes it on once more. Inside a long step
    with nothing new to say (one probe of a layout detector: 32 runs, 3-7 s) that is a cancel's chance: a callback
    raises Cancelled there, and the dashboard and the CLI show an event equal to the last as nothing new."""

    def __init__(self, progress: ProgressCallback) -> None:
        self.progress = progress
        self.last: ProgressEvent | None = None

    @classmethod
    def of(cls, progress: ProgressCallback) -> Repeating:
        """`progress` itself where it already is one (so the event said before a stage's first probe, which carries the
        session's warm-up, is the one repeated during it), else a new one."""
        return progress if isinstance(progress, Repeating) else cls(progress)

    def __call__(self, ev: ProgressEvent) -> None:
        self.last = ev
        self.progress(ev)

    def again(self) -> None:
        if self.last is not None:
            self.progress(self.last)


class TimeLeft:
    """Seconds left at the pace of the results after the first, once SETTLE_S have passed since it: a probe stage's first
    result carries the session's first run (a layout detector's said "about 9803 s left" for a 20-minute job), and
    parallel workers' first results come back together (which read as "0 s left")."""

    SETTLE_S = 1.0

    def __init__(self) -> None:
        self._first: tuple[float, int] | None = None  # when the first result came back, and the count then

    def seconds(self, done: int, total: int) -> float | None:
        """None while the pace is not known yet."""
        now = time.perf_counter()
        if self._first is None:
            self._first = (now, done)
        t0, d0 = self._first
        if done <= d0 or now - t0 < self.SETTLE_S:
            return None
        return (now - t0) / (done - d0) * max(0, total - done)
