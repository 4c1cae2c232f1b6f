"""Scoring a probe: the final outputs of a run against the reference's, as four sums an output (r.r, c.c, r.c, d.d)
and task metrics; on the host with numpy, or where the outputs stay in device memory (Resident: the probe data, its
reference outputs and the gates copied to the device once). A run may hold several probes, one copy of the batch each
along the batch axis (gated_tiled.py): each copy is scored on its own."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from engine.backends.base import Backend
from engine.compare.metrics import batch_cosine, outputs_snr_db, snr_db
from engine.compare.reducers import CHUNK, DeviceReducer, host_segment_sums, host_stats
from engine.compare.task_metrics import TaskAccumulator, task_output
from engine.data.source import Batch
from engine.diagnose.spread import spread_order, spread_rows

__all__ = ["ProbeMetrics", "ProbeData", "Score", "ScoreOps", "HOST_OPS", "Resident", "new_scores", "add_copies", "score_batches",
           "outputs_snr_db", "float_outputs", "measure_model", "join_batches"]


@dataclass(frozen=True)
class ProbeMetrics:
    cosine: float  # first float output
    snr_db: float  # first float output (what targets and the summary's final-output figures use)
    outputs_snr_db: float  # every float output, each relative to its own signal power (what rankings use)
    top1_agreement: float | None
    accuracy: float | None
    accuracy_drop: float | None
    seconds: float
    unpaired: int = 0  # output batches whose shape differed from the reference's (an in-graph NMS keeping other boxes)
    text_agreement: float | None = None  # a CTC recogniser: samples whose decoded text is FP32's (task_metrics.py)

    def get(self, metric: str) -> float | None:
        return getattr(self, metric)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ProbeData:
    """The batches probes run on, with the reference's final outputs for them (and labels, if any)."""

    batches: tuple[Batch, ...]
    reference_outputs: tuple[dict[str, np.ndarray], ...]
    labels: np.ndarray | None = None
    whole_batches: bool = False  # the model's batch size is fixed: never cut a batch

    @property
    def samples(self) -> int:
        return sum(len(next(iter(b.values()))) for b in self.batches)

    def spread(self, samples: int) -> ProbeData:
        """`samples` samples spread over the data (spread_order), in batches of the first batch's size; whole batches
        where the batch is fixed, or where an output cannot be cut to a sample (then the first batches, as head)."""
        if samples >= self.samples:
            return self
        if self.whole_batches:
            size = len(next(iter(self.batches[0].values())))
            picks = spread_order(len(self.batches), max(1, samples // size))
            return ProbeData(tuple(self.batches[i] for i in picks), tuple(self.reference_outputs[i] for i in picks),
                             None if self.labels is None else np.concatenate([self._label_rows(i) for i in picks]), True)
        sizes = [len(next(iter(b.values()))) for b in self.batches]
        if any(v.shape[:1] != (n,) for n, r in zip(sizes, self.reference_outputs) for v in r.values()):
            return self.head(samples)
        rows = spread_rows(sizes, samples)
        size = sizes[0]
        batches, refs = [], []
        for i in range(0, len(rows), size):
            group = rows[i : i + size]
            batches.append(join_batches([{k: v[r : r + 1] for k, v in self.batches[b].items()} for b, r, _ in group]))
            refs.append(join_batches([{k: v[r : r + 1] for k, v in self.reference_outputs[b].items()} for b, r, _ in group]))
        labels = None if self.labels is None else self.labels[[g for _, _, g in rows]]
        return ProbeData(tuple(batches), tuple(refs), labels, False)

    def _label_rows(self, batch: int) -> np.ndarray:
        start = sum(len(next(iter(b.values()))) for b in self.batches[:batch])
        return self.labels[start : start + len(next(iter(self.batches[batch].values())))]

    def head(self, samples: int) -> ProbeData:
        """The first `samples` samples (whole batches where the batch is fixed: at least one batch)."""
        batches, refs, n = [], [], 0
        for b, r in zip(self.batches, self.reference_outputs):
            if n >= samples:
                break
            size = len(next(iter(b.values())))
            take = size if self.whole_batches else min(size, samples - n)
            cut = take < size and any(v.shape[:1] != (size,) for v in r.values())
            if cut:  # an output whose axis 0 is not the batch cannot be cut: keep the batch whole
                take = size
            batches.append({k: v[:take] for k, v in b.items()} if take < size else b)
            refs.append({k: v[:take] for k, v in r.items()} if take < size else r)
            n += take
        labels = self.labels[:n] if self.labels is not None else None
        return ProbeData(tuple(batches), tuple(refs), labels, self.whole_batches)


def join_batches(arrays: list[dict]) -> dict:
    """Batches (dicts of arrays, axis 0 the batch) as one; a single one as it is."""
    return arrays[0] if len(arrays) == 1 else {k: np.concatenate([a[k] for a in arrays]) for k in arrays[0]}


class Score:
    """Sums for the final outputs of one probe."""

    def __init__(self, outputs: Sequence[str], task_output: str | None, labels: np.ndarray | None,
                 ctc_axis: int | None = None) -> None:
        self.outputs = list(outputs)
        self.sums = {o: np.zeros(4) for o in outputs}  # r.r, c.c, r.c, d.d
        self.paired = dict.fromkeys(outputs, 0)
        self.unpaired = 0
        self._scratch = np.empty(CHUNK, np.float32)
        self.task = TaskAccumulator(task_output, labels, ctc_axis)

    def add_sums(self, output: str, row: np.ndarray) -> None:
        """One batch's r.r, c.c, r.c, d.d of `output`."""
        self.sums[output] += row[:4]
        self.paired[output] += 1

    def add(self, ref: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> None:
        for o in self.outputs:  # the chunked host reduction: a detector's outputs are megabytes a probe
            if np.shape(ref[o]) != np.shape(out[o]):  # nothing to pair element by element
                self.unpaired += 1
                continue
            stats, _, _ = host_stats(ref[o], out[o], self._scratch, histogram=False)
            self.add_sums(o, stats)
        if self.task.output is not None and np.shape(ref[self.task.output]) == np.shape(out[self.task.output]):
            self.task.update(ref[self.task.output], out[self.task.output])

    def result(self, seconds: float) -> ProbeMetrics:
        ratios = []
        for o, (rr, _, _, dd) in self.sums.items():
            ratios.append(math.nan if not self.paired[o] else 0.0 if dd == 0 else math.inf if rr == 0 else dd / rr)
        cosine = snr = math.nan
        if self.outputs and self.paired[self.outputs[0]]:
            rr, cc, rc, dd = self.sums[self.outputs[0]]
            cosine, snr = batch_cosine(rr, cc, rc), snr_db(rr, dd)
        t = self.task.result()
        return ProbeMetrics(cosine, snr, outputs_snr_db(ratios), t.top1_agreement, t.candidate_accuracy, t.accuracy_drop, seconds,
                            self.unpaired, t.text_agreement)


def float_outputs(outputs: Sequence[str], reference_outputs: dict[str, np.ndarray]) -> list[str]:
    """The outputs whose values carry quantization noise as a number: floats (an ArgMax label or a box count is not)."""
    return [o for o in outputs if np.issubdtype(np.asarray(reference_outputs[o]).dtype, np.floating)]


def new_scores(data: ProbeData, outputs: Sequence[str], count: int) -> list[Score]:
    """One empty score a probe for `count` probes on `data`: its float outputs, and for task metrics the classifier-shaped
    one, else a CTC recogniser's scores (its decoded text against FP32's)."""
    first = data.reference_outputs[0]
    outputs = float_outputs(outputs, first)
    task, ctc_axis = task_output(outputs, first, len(next(iter(data.batches[0].values()))))
    return [Score(outputs, task, data.labels, ctc_axis) for _ in range(count)]


def add_copies(scores: Sequence[Score], ref: dict[str, np.ndarray], ref_scored: dict, out: dict, ops: ScoreOps) -> None:
    """A run holding one copy of a batch per score, in order along the batch axis (a single copy where not tiled):
    each copy's four sums an output against the reference (`ref_scored`, where `ops` computes), its task metrics."""
    k = len(scores)
    first = scores[0]
    for o in first.outputs:
        if tuple(ops.shape(out[o])) != (k * np.shape(ref[o])[0], *np.shape(ref[o])[1:]):
            for sc in scores:
                sc.unpaired += 1
            continue
        for sc, row in zip(scores, ops.segment_sums(ref_scored[o], out[o], k)):
            sc.add_sums(o, row)
    t, axis = first.task.output, first.task.ctc_axis or 0  # the copies lie along the batch axis
    if t is not None and t in out:
        want = list(np.shape(ref[t]))
        want[axis] *= k
        if tuple(ops.shape(out[t])) == tuple(want):
            for sc, part in zip(scores, np.split(np.asarray(ops.to_host(out[t])), k, axis=axis)):
                sc.task.update(ref[t], part)


@dataclass(frozen=True)
class ScoreOps:
    """Where outputs are scored: numpy on the host, or a device reducer where they stay on the device."""

    shape: Callable
    segment_sums: Callable
    to_host: Callable


HOST_OPS = ScoreOps(np.shape, host_segment_sums, np.asarray)


def score_batches(data: ProbeData, infer: Callable[[Batch], dict[str, np.ndarray]], outputs: Sequence[str], t0: float,
           resident: Resident | None = None) -> ProbeMetrics:
    (score,) = new_scores(data, outputs, 1)
    for batch, ref in zip(data.batches, data.reference_outputs):
        if resident is None:
            score.add(ref, infer(batch))
        else:
            inputs, ref_device = resident.get(batch, ref)
            add_copies([score], ref, ref_device, infer(inputs), resident.ops)
    return score.result(time.perf_counter() - t0)


class Resident:
    """Probe batches and their reference outputs copied once into the runner's device memory, and the reducer that
    scores outputs there: a probe on a GPU then moves no tensor between host and device, only the gates and a few
    sums (for a detector, tens of megabytes a probe less each way, and no host reduction)."""

    def __init__(self, runner, reducer: DeviceReducer) -> None:
        self.runner = runner
        self.ops = ScoreOps(reducer.shape, reducer.segment_sums, reducer.to_host)
        self._copies: dict[tuple, tuple[dict, dict]] = {}
        self._tiles: dict[tuple, dict] = {}
        self._gates: dict = {}  # gate name -> its device value, overwritten in place when a probe changes it
        self._gate_values: dict[str, np.ndarray] = {}

    def gates(self, feed: dict[str, np.ndarray]) -> dict:
        """The gates on the device: only those a probe changes are copied (the next probe of a stage flips two of them;
        copying all of them, one small transfer each, cost more than the run itself on a GPU)."""
        changed = {g: v for g, v in feed.items()
                   if (old := self._gate_values.get(g)) is None or old.shape != np.shape(v) or not np.array_equal(old, v)}
        if changed:
            self._gates.update(self.runner.resident(changed, reuse=self._gates))
            self._gate_values.update({g: np.array(v) for g, v in changed.items()})
        return self._gates

    def tiled(self, batch: Batch, ref: dict[str, np.ndarray], copies: int) -> tuple[dict, dict]:
        """(the batch's inputs repeated `copies` times along the batch axis, its reference outputs once), on the device;
        each copied once per batch and count."""
        inputs, ref_device = self.get(batch, ref)
        if copies == 1:
            return inputs, ref_device
        key = self._key(batch) + (copies,)
        if key not in self._tiles:
            self._tiles[key] = self.runner.resident({k: np.concatenate([v] * copies) for k, v in batch.items()})
        return self._tiles[key], ref_device

    @staticmethod
    def _key(arrays: dict[str, np.ndarray]) -> tuple:
        return tuple((k, v.__array_interface__["data"][0], v.shape, v.dtype.str) for k, v in arrays.items())

    def get(self, batch: Batch, ref: dict[str, np.ndarray]) -> tuple[dict, dict]:
        """(inputs, reference outputs) on the device; a head() of the probe data views the same memory and is copied
        once per size."""
        key = self._key(batch) + self._key(ref)
        if key not in self._copies:
            self._copies[key] = (self.runner.resident(batch), self.runner.resident(ref))
        return self._copies[key]


def measure_model(backend: Backend, model: onnx.ModelProto, data: ProbeData, outputs: Sequence[str] | None = None) -> ProbeMetrics:
    """Any model with the reference's inputs and outputs (an FP16 build, say), in its own session, against `data`."""
    t0 = time.perf_counter()
    outputs = list(outputs or data.reference_outputs[0])
    with backend.runner(model) as runner:
        return score_batches(data, runner.infer, outputs, t0)
