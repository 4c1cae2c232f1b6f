"""Calibration: tensor ranges from data, saved as ORT's calibration cache so emission never recalibrates.

We drive ORT's calibrator ourselves, a few batches per `collect_data` call: each call merges its ranges
into the previous ones, so memory stays bounded by the chunk, not the data set. (ORT 1.32's own
CalibMaxIntermediateOutputs option drops the collected outputs instead of merging them.)"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.source import Batch, BatchSource
from engine.errors import DataError
from engine.progress import ProgressCallback, ProgressEvent, Stage, no_progress, samples_text
from engine.quantize.config import CalibrationMethod, QuantConfig
from engine.quantize.entropy import ENTROPY_BINS, entropy_ranges

__all__ = ["calibrate", "calibrate_many", "CalibrationSpec", "ORT_METHODS", "CollectPlan", "collect_plan"]

BATCHES_PER_CHUNK = 4
MINMAX_MICRO = 8  # MinMax on a dynamic batch: samples per calibrator run, and at most 2 of them per chunk (see calibrate)


@dataclass(frozen=True)
class CollectPlan:
    """How calibration hands the data to ORT's collectors: runs of `part` samples (a batch cut into parts; None: whole
    batches), at most `runs` of them a collect."""

    part: int | None
    runs: int


def collect_plan(method: CalibrationMethod | None, batch_size: int, dynamic_batch: bool, sample_bytes: int | None,
                 budget: int | None) -> CollectPlan:
    """Within `budget` bytes, for activations of `sample_bytes` a sample (memory_plan.activation_bytes_per_sample; None:
    not known, no limit). MinMax (method MINMAX) keeps only each run's minima and maxima, so its runs are cut to at
    most MINMAX_MICRO samples where the batch is dynamic, fewer where a sample's activations are large: its ranges do
    not depend on the cut. Histogram methods (and a sweep's shared pass, method None) keep every calibrated activation
    of a collect until its histograms are merged: a collect holds at most what the budget fits, down to one sample
    where the batch is dynamic. PP-OCRv4's detector at 640 x 640 (650 MB of activations a sample) calibrated 16 images
    at batch 25 in 3.7 GB with MinMax and 4.3 GB with entropy; a collect of 4 batches of 25 would have held 100."""
    fit = None if not sample_bytes or budget is None else max(1, budget // sample_bytes)
    if method is CalibrationMethod.MINMAX:
        part = MINMAX_MICRO if fit is None else min(MINMAX_MICRO, fit)
        return CollectPlan(part, 2) if dynamic_batch and batch_size > part else CollectPlan(None, BATCHES_PER_CHUNK)
    if fit is None:
        return CollectPlan(None, BATCHES_PER_CHUNK)
    if dynamic_batch and batch_size > fit:
        return CollectPlan(fit, 1)
    return CollectPlan(None, max(1, min(BATCHES_PER_CHUNK, fit // batch_size)))


def ORT_METHODS():  # noqa: N802 - lazy so importing the engine does not import onnxruntime.quantization
    from onnxruntime.quantization import CalibrationMethod as Ort

    return {CalibrationMethod.MINMAX: Ort.MinMax, CalibrationMethod.ENTROPY: Ort.Entropy,
            CalibrationMethod.PERCENTILE: Ort.Percentile}


def _shapes(batch: Batch) -> tuple:
    return tuple((k, v.shape) for k, v in batch.items())


class _ChunkReader:
    """ORT's CalibrationDataReader protocol over at most BATCHES_PER_CHUNK batches of a shared iterator.

    A chunk also ends where the batch shape changes (the short last batch): ORT's histogram calibrators
    stack a chunk's outputs into one array and fail on mixed shapes."""

    def __init__(self, first: Batch, rest: Iterator[Batch], limit: int = BATCHES_PER_CHUNK) -> None:
        self._rest = rest
        self._queue: list[Batch] = [first]
        self._shape = _shapes(first)
        self._left = limit
        self.carry: Batch | None = None  # the batch that starts the next chunk

    def get_next(self) -> Batch | None:
        if self._queue:
            self._left -= 1
            return self._queue.pop()
        if self._left <= 0:
            return None
        batch = next(self._rest, None)
        if batch is None:
            return None
        if _shapes(batch) != self._shape:
            self.carry = batch
            return None
        self._left -= 1
        return batch


def calibrate(
    reference_path: Path,
    source: BatchSource,
    config: QuantConfig,
    cache_path: Path,
    batch_size: int,
    progress: ProgressCallback = no_progress,
    dynamic_batch: bool = False,
    plan: CollectPlan | None = None,
) -> None:
    """Calibrates `config.calibration` on `source` into ORT's calibration cache at `cache_path`, handing ORT's calibrator
    the data as `plan` says (collect_plan; None: the usual cut, for no memory budget)."""
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    plan = plan or collect_plan(config.calibration, batch_size, dynamic_batch, None, None)
    runs = _Runs(source, batch_size, plan.part, progress)
    extra = {"percentile": config.percentile} if config.calibration is CalibrationMethod.PERCENTILE else {}
    if config.calibration is not CalibrationMethod.MINMAX:
        extra["symmetric"] = True  # histograms of |x|, matching symmetric INT8 activations
    entropy = config.calibration is CalibrationMethod.ENTROPY
    if entropy:  # ORT's percentile collector builds the |x| histograms entropy.py searches
        extra["num_bins"] = ENTROPY_BINS
    progress(ProgressEvent(Stage.CALIBRATE, 0, runs.total, "preparing calibration"))
    # ORT's histogram calibrators print() their progress; keep the CLI's stdout for results.
    with tempfile.TemporaryDirectory(prefix="quantscope-calib-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        calibrator = create_calibrator(
            Path(reference_path),
            list(config.op_types),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=ORT_METHODS()[CalibrationMethod.PERCENTILE if entropy else config.calibration],
            providers=["CPUExecutionProvider"],
            extra_options=extra,
        )
        batches = iter(runs)
        first = next(batches, None)
        while first is not None:
            reader = _ChunkReader(first, batches, limit=plan.runs)
            calibrator.collect_data(reader)
            first = reader.carry if reader.carry is not None else next(batches, None)
        if runs.done == 0:
            raise DataError("The calibration data produced no batches; provide at least one sample.")
        if entropy:
            from onnxruntime.quantization.calibrate import TensorsData

            ranges = TensorsData(ORT_METHODS()[CalibrationMethod.ENTROPY], entropy_ranges(calibrator.collector.histogram_dict))
        else:
            ranges = calibrator.compute_data()
        del calibrator
    save_tensors_data(ranges, cache_path)


class _Runs:
    """The calibration's runs, whole batches or their parts of `part` samples, each said to `progress` as it is drawn
    (the count is of the runs before it: ORT draws the next when the last is done). With parts the bar moves within a
    batch: one batch of 16 pages at 640 x 640 in 16 runs said 'batch 1/1' for all of them."""

    def __init__(self, source: BatchSource, batch_size: int, part: int | None, progress: ProgressCallback, shared: str = "") -> None:
        self.source, self.batch_size, self.part, self.progress, self.shared = source, batch_size, part, progress, shared
        full, last = divmod(source.num_samples, batch_size)
        per = (lambda n: -(-n // part)) if part else (lambda n: 1)  # noqa: E731
        self.batches = full + bool(last)
        self.total = full * per(batch_size) + (per(last) if last else 0)
        self.done = 0

    def __iter__(self) -> Iterator[Batch]:
        for k, b in enumerate(self.source.batches(self.batch_size), 1):
            n = len(next(iter(b.values())))
            step = self.part or n
            for i in range(0, n, step):
                where = f", {samples_text(i, min(n, i + step), n)}" if step < n else ""
                self.progress(ProgressEvent(Stage.CALIBRATE, self.done, self.total,
                                            f"calibration batch {k}/{self.batches}{where}{self.shared}"))
                yield b if step >= n else {name: v[i : i + step] for name, v in b.items()}
                self.done += 1
        self.progress(ProgressEvent(Stage.CALIBRATE, self.done, self.total, f"calibrated on {self.batches} batch(es){self.shared}"))


@dataclass(frozen=True)
class CalibrationSpec:
    """One calibration of a sweep: a method, and for percentile its percentile."""

    method: CalibrationMethod
    percentile: float = 99.999

    @property
    def label(self) -> str:
        return f"percentile {self.percentile:g}" if self.method is CalibrationMethod.PERCENTILE else self.method.value


def _chunks(batches: Iterator[Batch], limit: int = BATCHES_PER_CHUNK) -> Iterator[list[Batch]]:
    """Consecutive batches of one shape, at most `limit`: the groups calibrate() hands ORT's calibrator, so histograms
    grow through the same steps and give the same ranges."""
    chunk: list[Batch] = []
    for b in batches:
        if chunk and _shapes(b) != _shapes(chunk[0]):  # only a change of shape needs the next batch read first
            yield chunk
            chunk = []
        chunk.append(b)
        if len(chunk) == limit:  # at once: the runs are said as they are drawn (_Runs), so the next is not drawn early
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def calibrate_many(reference_path: Path, source: BatchSource, op_types, specs, batch_size: int,
                   progress: ProgressCallback = no_progress, plan: CollectPlan | None = None) -> dict[CalibrationSpec, object]:
    """The ranges of every calibration in `specs` from ONE pass over the data: the activations of the calibrated
    tensors are collected once and fed to a min/max reduction and to ORT's own histogram collectors (entropy over
    values, percentile over |values|, as its calibrators do), in the chunks calibrate() uses with the same `plan`
    (collect_plan with method None), so each result equals what calibrate() gives for that method alone. Returns ORT
    TensorsData per spec (save with save_tensors_data)."""
    from onnxruntime.quantization.calibrate import HistogramCollector, TensorsData, create_calibrator

    specs = list(dict.fromkeys(specs))
    methods = {s.method for s in specs}
    plan = plan or CollectPlan(None, BATCHES_PER_CHUNK)
    runs = _Runs(source, batch_size, plan.part, progress, f" (shared by {len(specs)} calibrations)")
    progress(ProgressEvent(Stage.CALIBRATE, 0, runs.total, "preparing the shared calibration pass"))
    with tempfile.TemporaryDirectory(prefix="quantscope-calib-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        calibrator = create_calibrator(Path(reference_path), list(op_types), augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=ORT_METHODS()[CalibrationMethod.PERCENTILE],
                                       providers=["CPUExecutionProvider"], extra_options={"symmetric": True})
        session = calibrator.infer_session
        names = [o.name for o in session.get_outputs()]
        wanted = set(calibrator.tensors_to_calibrate)
        lows: dict[str, np.ndarray] = {}
        highs: dict[str, np.ndarray] = {}
        # one |x| histogram serves percentile and entropy (entropy.py), as calibrate() collects it for either
        histograms = {CalibrationMethod.ENTROPY, CalibrationMethod.PERCENTILE} & methods
        percent = HistogramCollector("percentile", True, ENTROPY_BINS, ENTROPY_BINS, 99.999, "same") if histograms else None
        for chunk in _chunks(iter(runs), plan.runs):
            merged: dict[str, list[np.ndarray]] = {}
            for batch in chunk:
                for name, value in zip(names, session.run(None, batch)):
                    if name in wanted:
                        merged.setdefault(name, []).append(value)
            if CalibrationMethod.MINMAX in methods:
                for name, arrays in merged.items():
                    lo = np.nanmin([np.array([a.min()]) for a in arrays], axis=0)
                    hi = np.nanmax([np.array([a.max()]) for a in arrays], axis=0)
                    lows[name] = lo if name not in lows else min(lows[name], lo)
                    highs[name] = hi if name not in highs else max(highs[name], hi)
            if percent is not None:
                percent.collect(merged)
        if runs.done == 0:
            raise DataError("The calibration data produced no batches; provide at least one sample.")
        out = {}
        for spec in specs:
            if spec.method is CalibrationMethod.MINMAX:
                out[spec] = TensorsData(ORT_METHODS()[spec.method], {n: (lows[n], highs[n]) for n in lows})
            elif spec.method is CalibrationMethod.ENTROPY:
                out[spec] = TensorsData(ORT_METHODS()[spec.method], entropy_ranges(percent.histogram_dict))
            else:
                percent.percentile = spec.percentile
                out[spec] = TensorsData(ORT_METHODS()[spec.method], percent.compute_collection_result())
        del calibrator, session
    return out
