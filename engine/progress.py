"""Progress reporting: the engine calls a plain callback; the CLI and the app decide how to draw it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ProgressEvent", "ProgressCallback", "Stage", "no_progress"]


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
