"""The streaming comparison: per batch, the reference tensors (fresh or cached), the candidate with every
observed tensor marked, and the unmodified candidate for the final outputs. Nothing but per-tensor
accumulators outlives a batch."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx
import pandas as pd

from engine.backends.base import Backend
from engine.compare.graph import GraphView
from engine.compare.ranking import input_snr, introduced_db
from engine.compare.reference_cache import DEFAULT_CACHE_BYTES, ReferenceCache
from engine.compare.task_metrics import TaskAccumulator, TaskMetrics, is_classifier_shaped
from engine.compare.tensor_stats import METRIC_COLUMNS, TensorAccumulator, TensorStats
from engine.data.source import Batch
from engine.progress import ProgressCallback, ProgressEvent, Stage, no_progress

__all__ = ["LayerwiseRun", "reference_stream", "cached_stream", "run_layerwise", "LAYER_COLUMNS"]

LAYER_COLUMNS = ("tensor", "node", "op_type", "quantized", *METRIC_COLUMNS[:3], "introduced_db", *METRIC_COLUMNS[3:])

Pair = tuple[Batch, dict[str, np.ndarray]]


@dataclass
class LayerwiseRun:
    layers: pd.DataFrame
    outputs: dict[str, TensorStats]
    marked_outputs: dict[str, TensorStats]
    task: TaskMetrics
    batches: int
    samples: int
    timings: dict[str, float] = field(default_factory=dict)
    shape_mismatches: tuple[str, ...] = ()
    unobservable: tuple[str, ...] = ()  # tensors the backend fused away (e.g. TensorRT): reported, never paired
    unmodified_batches: int = 0  # batches on which the unmodified candidate ran (see run_layerwise)


def reference_stream(reference: onnx.ModelProto, view: GraphView, backend: Backend, batches: Iterator[Batch],
                     cache: ReferenceCache | None, timings: dict[str, float], cache_bytes: int = DEFAULT_CACHE_BYTES) -> Iterator[Pair]:
    """Runs the reference with every observed tensor marked; optionally writes each batch to the cache."""
    samples = 0
    if cache is not None:
        cache.reset(budget=cache_bytes)
    with backend.runner(reference, observe=view.names) as runner:
        for inputs in batches:
            t0 = time.perf_counter()
            ref = runner.infer(inputs)
            timings["reference"] = timings.get("reference", 0.0) + time.perf_counter() - t0
            if cache is not None:
                t0 = time.perf_counter()
                cache.append(inputs, {k: ref[k] for k in view.names if k in ref})
                timings["cache_write"] = timings.get("cache_write", 0.0) + time.perf_counter() - t0
            samples += len(next(iter(inputs.values())))
            yield inputs, ref
    if cache is not None:
        cache.finish(samples)


def cached_stream(cache: ReferenceCache) -> Iterator[Pair]:
    yield from cache.batches()


def _classifier_output(view: GraphView, first_ref: dict[str, np.ndarray]) -> str | None:
    return next((o for o in view.outputs if o in first_ref and is_classifier_shaped(first_ref[o])), None)


def update_final_outputs(final: dict[str, TensorAccumulator], task: TaskAccumulator | None, view: GraphView,
                         ref: dict[str, np.ndarray], plain: dict[str, np.ndarray], labels: np.ndarray | None) -> TaskAccumulator:
    """Final-output metrics and task metrics from the unmodified candidate's outputs `plain`; returns the task
    accumulator (created on the first batch, when the classifier-shaped output is known)."""
    for o, a in final.items():
        if o in ref and o in plain and ref[o].shape == plain[o].shape:
            a.update(ref[o], plain[o])
    if task is None:
        task = TaskAccumulator(_classifier_output(view, ref), labels)
    if task.output is not None:
        task.update(ref[task.output], plain[task.output])
    return task


def run_layerwise(
    view: GraphView,
    candidate: onnx.ModelProto,
    backend: Backend,
    pairs: Iterator[Pair],
    total_batches: int,
    labels: np.ndarray | None = None,
    progress: ProgressCallback = no_progress,
    timings: dict[str, float] | None = None,
) -> LayerwiseRun:
    timings = timings if timings is not None else {}
    acc = {t: TensorAccumulator() for t in view.names}
    final = {o: TensorAccumulator() for o in view.outputs}
    mismatched: set[str] = set()
    missing: set[str] = set()
    task: TaskAccumulator | None = None
    batches = samples = 0
    started = time.perf_counter()

    def tick(key: str, t0: float) -> None:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0

    # The final outputs must be those of the unmodified candidate (marking tensors can change fusion). For each
    # input shape its first batch runs both; when the unmodified outputs equal the marked run's bit for bit, fusion
    # did not change them, and later batches of that shape reuse the marked run's outputs instead of running again.
    # A difference (or a non-deterministic backend) keeps the unmodified run on every batch.
    identical: dict[tuple, bool] = {}
    unmodified = 0
    progress(ProgressEvent(Stage.COMPARE, 0, total_batches, "starting sessions"))
    with backend.runner(candidate, observe=view.names) as cand_marked, backend.runner(candidate) as cand_plain:
        for inputs, ref in pairs:
            t0 = time.perf_counter()
            cand = cand_marked.infer(inputs)
            tick("candidate", t0)
            t0 = time.perf_counter()
            for name, a in acc.items():
                if name in mismatched or name in missing:
                    continue
                if name not in ref or name not in cand:  # fused away by the backend: not observable
                    missing.add(name)
                    continue
                if ref[name].shape != cand[name].shape:
                    mismatched.add(name)
                    continue
                a.update(ref[name], cand[name])
            tick("metrics", t0)
            t0 = time.perf_counter()
            shapes = tuple(sorted((k, v.shape) for k, v in inputs.items()))
            if identical.get(shapes):
                plain = {o: cand[o] for o in view.outputs}
            else:
                plain, unmodified = cand_plain.infer(inputs), unmodified + 1
                if shapes not in identical:  # checked once per shape, not on every batch that already differed
                    identical[shapes] = all(o in cand and o in plain and cand[o].shape == plain[o].shape and
                                            np.array_equal(cand[o], plain[o]) for o in view.outputs)
            task = update_final_outputs(final, task, view, ref, plain, labels)
            tick("final_outputs", t0)
            batches += 1
            samples += len(next(iter(inputs.values())))
            elapsed = time.perf_counter() - started
            eta = elapsed / batches * (total_batches - batches)
            progress(ProgressEvent(Stage.COMPARE, batches, total_batches, f"batch {batches}/{total_batches}, about {eta:.0f} s left"))
    stats = {t: a.result() for t, a in acc.items() if t not in mismatched and t not in missing and a.batches}
    layers = _frame(view, stats)
    return LayerwiseRun(
        layers=layers,
        outputs={o: a.result() for o, a in final.items() if a.batches},
        marked_outputs={o: stats[o] for o in view.outputs if o in stats},
        task=(task or TaskAccumulator(None, None)).result(),
        batches=batches,
        samples=samples,
        timings=timings,
        shape_mismatches=tuple(sorted(mismatched)),
        unobservable=tuple(sorted(missing)),
        unmodified_batches=unmodified,
    )


def _frame(view: GraphView, stats: dict[str, TensorStats]) -> pd.DataFrame:
    snr = {t: s.snr_db for t, s in stats.items()}
    intro = introduced_db(tuple(t for t in view.tensors if t.tensor in stats), snr)
    rows = []
    for order, t in enumerate(view.tensors):
        s = stats.get(t.tensor)
        row = {"tensor": t.tensor, "node": t.node, "op_type": t.op_type, "quantized": t.node in view.quantized_nodes}
        if s is None:
            row.update({k: math.nan for k in METRIC_COLUMNS})
            row["introduced_db"] = math.nan
        else:
            row.update({k: getattr(s, k) for k in METRIC_COLUMNS})
            row["introduced_db"] = intro[t.tensor]
        row["input_snr_db"] = input_snr(t, snr)
        row["order"] = order
        rows.append(row)
    frame = pd.DataFrame(rows, columns=[*LAYER_COLUMNS, "input_snr_db", "order"])
    return frame
