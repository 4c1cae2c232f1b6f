"""Per-tensor error metrics, defined once.

A reducer (host numpy or device kernels, see reducers.py) turns each (reference, candidate) batch pair into the
sufficient statistics of STAT_FIELDS plus a relative-error histogram; an Accumulator sums them over batches; every
metric is a function of those sums. layers.csv's columns, the summary's output figures, the plots' hovers, the
dashboard's table and the report all iterate METRICS, so a metric is added by one entry there.

Definitions (reference r, candidate c, d = c - r, over all elements of all batches unless noted):
  cosine       mean over batches of r.c / (|r| |c|) of the flattened batch tensors
               (both all-zero -> 1, exactly one all-zero -> 0); cosine_min: the minimum over batches
  snr_db       10 log10(sum r^2 / sum d^2), inf when identical (Polygraphy's SNR, as a power ratio)
  mse, max_abs_err, mean_abs_err
  rel_err_median  median of |d|/|r| (0/0 -> 0, x/0 -> inf), from a histogram of at most SAMPLE_PER_BATCH
               elements per batch part (every k-th element when a part's tensor is larger). Bins are the float32
               bit pattern's exponent and top MANTISSA_BITS mantissa bits: log-spaced bins of width at most
               2**(1/32), covering every float32 without clipping. The reported value (the bin's geometric centre) is
               within a factor 2**(1/64) (1.1%) of the (upper) median of the histogrammed elements."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

__all__ = ["Metric", "METRICS", "METRIC_COLUMNS", "TensorStats", "Accumulator", "RelErrHistogram", "STAT_FIELDS",
           "SAMPLE_PER_BATCH", "MANTISSA_BITS", "SHIFT", "N_BINS", "sample_index", "sample_stride", "batch_cosine", "snr_db",
           "metric", "format_metric", "json_number", "outputs_snr_db"]

SAMPLE_PER_BATCH = 1 << 16
MANTISSA_BITS = 5
SHIFT = 23 - MANTISSA_BITS
N_BINS = 1 << (8 + MANTISSA_BITS)  # sign bit is always 0: |d|/|r| >= 0
STAT_FIELDS = ("rr", "cc", "rc", "dd", "sum_abs", "max_abs")  # per batch, what every reducer returns per tensor


def json_number(x: float | None):
    """JSON has no inf/nan: write them as strings a reader can parse back with float()."""
    if x is None:
        return None
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else "-inf" if x < 0 else "nan"
    return x


def batch_cosine(rr: float, cc: float, rc: float) -> float:
    if rr == 0.0 and cc == 0.0:
        return 1.0
    if rr == 0.0 or cc == 0.0:
        return 0.0
    return max(-1.0, min(1.0, rc / math.sqrt(rr * cc)))


def snr_db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def sample_stride(n: int, k: int) -> int:
    """Every sample_stride-th element is histogrammed when a tensor has more than k (a view, no gather: cheap on the
    host, and the same elements on the device)."""
    return max(1, n // k)


@lru_cache(maxsize=256)
def sample_index(n: int, k: int) -> np.ndarray:
    """The indices of the histogrammed elements (what the device kernels read): k elements, evenly strided."""
    return np.arange(min(n, k), dtype=np.int64) * sample_stride(n, k)


class RelErrHistogram:
    def __init__(self) -> None:
        self.counts = np.zeros(N_BINS, dtype=np.int64)

    @staticmethod
    def bins(abs_d: np.ndarray, abs_r: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            # absolute again: inf/inf (a reference holding inf) makes a NaN with the sign bit set on x86, whose negative
            # bit pattern bincount refused; positive, it lands in the top bins
            rel = np.abs((abs_d / abs_r).astype(np.float32, copy=False))
        rel[abs_d == 0] = 0.0  # 0/0 -> 0
        return np.bincount(rel.view(np.int32) >> SHIFT, minlength=N_BINS)

    @staticmethod
    def bin_edges(k: int) -> tuple[float, float]:
        lo, hi = np.array([k << SHIFT, (k + 1) << SHIFT], dtype=np.int64).astype(np.int32).view(np.float32)
        return float(lo), float(hi)

    def median(self) -> float:
        total = int(self.counts.sum())
        if total == 0:
            return math.nan
        k = int(np.searchsorted(np.cumsum(self.counts), (total + 1) / 2))
        lo, hi = self.bin_edges(k)
        if lo == 0.0:
            return 0.0
        if math.isinf(lo) or math.isnan(lo):
            return math.inf
        return math.sqrt(lo * hi) if math.isfinite(hi) else lo


@dataclass
class Accumulator:
    """Sufficient statistics of one tensor over the batches so far."""

    rr: float = 0.0
    dd: float = 0.0
    sum_abs: float = 0.0
    max_abs: float = 0.0
    n: int = 0
    cos_sum: float = 0.0
    cos_min: float = math.inf
    batches: int = 0
    hist: RelErrHistogram = field(default_factory=RelErrHistogram)

    part: list[float] | None = None  # the open batch's sums (rr, cc, rc, dd, sum_abs, max_abs, n) until close_batch()

    def add(self, stats: np.ndarray | tuple, n: int, counts: np.ndarray | None = None) -> None:
        """One whole batch: `stats` in STAT_FIELDS order, `n` elements, the histogram counts of its sampled elements."""
        self.add_part(stats, n, counts)
        self.close_batch()

    def add_part(self, stats: np.ndarray | tuple, n: int, counts: np.ndarray | None = None) -> None:
        """A part of the open batch (a micro-batch): sums add up; cosine is taken once the batch is closed."""
        rr, cc, rc, dd, sum_abs, max_abs = (float(v) for v in stats)
        p = self.part or [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0]
        self.part = [p[0] + rr, p[1] + cc, p[2] + rc, p[3] + dd, p[4] + sum_abs, max(p[5], max_abs), p[6] + n]
        if counts is not None:
            self.hist.counts += counts

    def close_batch(self) -> None:
        if self.part is None:
            return
        rr, cc, rc, dd, sum_abs, max_abs, n = self.part
        self.part = None
        cos = batch_cosine(rr, cc, rc)
        self.rr += rr
        self.dd += dd
        self.sum_abs += sum_abs
        self.max_abs = max(self.max_abs, max_abs)
        self.n += int(n)
        self.cos_sum += cos
        self.cos_min = min(self.cos_min, cos)
        self.batches += 1

    def result(self) -> TensorStats:
        return TensorStats({m.column: m.of(self) for m in METRICS}, self.n)


@dataclass(frozen=True)
class Metric:
    column: str  # layers.csv column and summary key
    label: str  # what a person reads (axis titles, table headers)
    fmt: str  # format spec for display
    higher_is_better: bool
    help: str
    of: Callable[[Accumulator], float]


def _mean_cosine(a: Accumulator) -> float:
    return a.cos_sum / a.batches if a.batches else math.nan


METRICS: tuple[Metric, ...] = (
    Metric("cosine", "cosine", ".6f", True, "cosine similarity of the flattened tensors, mean over batches", _mean_cosine),
    Metric("cosine_min", "worst-batch cosine", ".6f", True, "the lowest cosine of any batch",
           lambda a: a.cos_min if a.batches else math.nan),
    Metric("snr_db", "SNR (dB)", ".2f", True, "10·log10(Σref² / Σ(ref−cand)²): signal power over noise power",
           lambda a: snr_db(a.rr, a.dd)),
    Metric("mse", "MSE", ".4g", False, "mean squared error", lambda a: a.dd / max(a.n, 1)),
    Metric("max_abs_err", "max |error|", ".4g", False, "largest absolute difference of any element", lambda a: a.max_abs),
    Metric("mean_abs_err", "mean |error|", ".4g", False, "mean absolute difference", lambda a: a.sum_abs / max(a.n, 1)),
    Metric("rel_err_median", "median relative error", ".3g", False, "median of |ref−cand| / |ref| over sampled elements",
           lambda a: a.hist.median()),
)
METRIC_COLUMNS = tuple(m.column for m in METRICS)
_BY_COLUMN = {m.column: m for m in METRICS}


def metric(column: str) -> Metric:
    return _BY_COLUMN[column]


def format_metric(column: str, value: float) -> str:
    """A metric value as a person reads it: 'inf' and 'nan' spelled out, the metric's precision otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if math.isinf(value):
        return "exact" if value > 0 and column == "snr_db" else ("inf" if value > 0 else "-inf")
    return format(value, _BY_COLUMN[column].fmt)


@dataclass(frozen=True)
class TensorStats(Mapping):
    """A tensor's metrics (keys: METRIC_COLUMNS) and how many elements they cover."""

    metrics: Mapping[str, float]
    elements: int

    def __getitem__(self, key: str) -> float:
        return self.metrics[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)

    @property
    def snr_db(self) -> float:
        return self.metrics["snr_db"]

    @property
    def cosine(self) -> float:
        return self.metrics["cosine"]

    def to_dict(self) -> dict[str, float]:
        return {**self.metrics, "elements": self.elements}


def outputs_snr_db(noise_ratios: Sequence[float]) -> float:
    """SNR of several outputs together: the mean of their noise-to-signal power ratios, in dB. Each output counts
    for its own relative error, so a box output in pixels does not drown a score output in [0, 1]."""
    finite = [r for r in noise_ratios if not math.isnan(r)]
    if not finite:
        return math.nan
    mean = sum(finite) / len(finite)
    if mean == 0.0:
        return math.inf
    return -10.0 * math.log10(mean) if math.isfinite(mean) else -math.inf
