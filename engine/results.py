"""Typed, frozen results; `to_dict()` is exactly what summary.json holds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from engine.compare.tensor_stats import TensorStats

__all__ = ["OutputMetrics", "Culprit", "Summary", "ComparisonResult", "FUSION_DISAGREEMENT_DB"]

FUSION_DISAGREEMENT_DB = 1.0


def _num(x: float | None):
    """JSON has no inf/nan: write them as strings a reader can parse back with float()."""
    if x is None:
        return None
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else "-inf" if x < 0 else "nan"
    return x


@dataclass(frozen=True)
class OutputMetrics(TensorStats):
    """A final output's statistics from the unmodified candidate run, plus the same output's SNR in the
    run with every tensor marked (the two differ when marking outputs changed fusion)."""

    name: str = ""
    marked_run_snr_db: float = math.nan

    @classmethod
    def from_stats(cls, name: str, stats: TensorStats, marked_run_snr_db: float) -> OutputMetrics:
        return cls(**stats.to_dict(), name=name, marked_run_snr_db=marked_run_snr_db)

    @property
    def fusion_disagrees(self) -> bool:
        a, b = self.snr_db, self.marked_run_snr_db
        if math.isinf(a) and math.isinf(b):
            return False
        return not (abs(a - b) <= FUSION_DISAGREEMENT_DB)

    def to_dict(self) -> dict:
        d = {k: _num(v) for k, v in super().to_dict().items()}
        d["marked_run_snr_db"] = _num(self.marked_run_snr_db)
        d["fusion_disagrees"] = self.fusion_disagrees
        return d


@dataclass(frozen=True)
class Culprit:
    node: str
    op_type: str
    introduced_db: float
    snr_db: float
    input_snr_db: float
    cosine: float
    quantized: bool

    def to_dict(self) -> dict:
        return {k: _num(v) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Summary:
    model: str
    backend: str
    backend_note: str
    samples: int
    batches: int
    batch_size: int
    outputs: dict[str, OutputMetrics]
    task: dict
    culprits: tuple[Culprit, ...]
    headline: str
    fallback: tuple[str, ...]
    fallback_precision: str
    fp16_nodes: tuple[str, ...]
    quantized_nodes: int
    config: dict
    timings: dict[str, float]
    not_observable: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    recalibrated: bool = True
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "backend": self.backend,
            "backend_note": self.backend_note,
            "samples": self.samples,
            "batches": self.batches,
            "batch_size": self.batch_size,
            "outputs": {k: v.to_dict() for k, v in self.outputs.items()},
            "task": self.task,
            "culprits": [c.node for c in self.culprits],
            "culprit_details": [c.to_dict() for c in self.culprits],
            "headline": self.headline,
            "fallback": list(self.fallback),
            "fallback_precision": self.fallback_precision,
            "fp16_nodes": list(self.fp16_nodes),
            "quantized_nodes": self.quantized_nodes,
            "config": self.config,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "not_observable": list(self.not_observable),
            "warnings": list(self.warnings),
            "recalibrated": self.recalibrated,
            **self.extra,
        }


@dataclass(frozen=True)
class ComparisonResult:
    run_dir: Path  # the run folder (rebuilds, sensitivity and latency start from it)
    layers: pd.DataFrame
    summary: Summary
    files_dir: Path | None = None  # where this version's candidate.onnx/layers.csv/summary.json are, if not run_dir

    @property
    def files(self) -> Path:
        """The folder holding this result's candidate.onnx, layers.csv and summary.json (history/N once superseded)."""
        return self.files_dir or self.run_dir

    def final_output(self) -> OutputMetrics:
        return next(iter(self.summary.outputs.values()))

    def to_frame(self) -> pd.DataFrame:
        return self.layers

    def to_dict(self) -> dict:
        return self.summary.to_dict()
