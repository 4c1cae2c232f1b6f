"""Probes: the final outputs of a candidate with some fallback set, measured against the reference's final outputs
on a fixed set of batches. No tensors are marked and nothing is recalibrated.

Where the backend can switch Q/DQ at run time (`Capabilities.runtime_gates`), every probe runs in one session of
the gated candidate (see gated.py): a probe is one pass over the probe data. Elsewhere (TensorRT builds an engine
per graph) each probe emits its candidate from the calibration cache and runs it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnx

from engine.backends.base import Backend
from engine.compare.reducers import DeviceReducer, device_reducer
from engine.data.source import Batch
from engine.diagnose.gated import GatedModel, gate_model
from engine.diagnose.gated_tiled import gate_model_tiled, tiled_gates
from engine.diagnose.gated_where import gate_model_where
from engine.diagnose.probe_scoring import HOST_OPS, ProbeData, ProbeMetrics, Resident, add_copies, new_scores, score_batches
from engine.diagnose.resumed_runs import ResumedRuns, SamplesKey, consensus, off_gates, same_outputs, worth_resuming
from engine.errors import ModelError

__all__ = ["OutputProbe", "ProbeRequest", "ProbePool", "LocalProbePool", "PoolFactory", "OnResult", "local_pool", "serial_pool"]

Unit = tuple[str, ...]
TILE_SAMPLES = 64  # samples a tiled run holds at most: the probes of a stage on 2 samples go 32 to a run
RESUME_BYTES = 512 * 1024**2  # baselines' tensors kept for resumed probes (resumed_runs.py), at most
FOREIGN = object()  # probe data that is not a head of the probe's own: never resumed


def _same(a: float, b: float, tol_db: float = 1e-3) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b or abs(a - b) <= tol_db


class OutputProbe:
    """Measures fallback sets on `data`. Use as a context manager: the gated session stays open for every probe.

    emit(fallback) -> the Q/DQ model of a fallback set; used where the backend cannot switch Q/DQ at run time.
    fp16: units in fallback compute in FP16 as emission writes them (the run's fallback precision), else in FP32.
    device_library: on a backend with device outputs, the library (cupy, torch; None: the first importable) that scores
    the outputs where they are; the probe data is then copied to the device once, not every probe.
    tile: run the probes of a stage several to a run, each on its own copy of the samples (gated_tiled.py); None: where
    the backend leaves outputs on a device, whose runs cost their launches more than their samples. Used only where the
    tiled graph can be built and a tiled run agrees with single runs.
    resume_bytes: where outputs come back to the host one probe a run, probes resume past the part of the graph they
    share with a baseline (the all-INT8 or all-fallback candidate, or the set a batch of probes shares: resumed_runs.py),
    keeping at most this much of the baselines' tensors; 0: every probe runs the whole graph."""

    def __init__(self, backend: Backend, reference: onnx.ModelProto, candidate: onnx.ModelProto, units: Sequence[Unit],
                 data: ProbeData, emit: Callable[[frozenset[str]], onnx.ModelProto], fp16: bool = False,
                 device_library: str | None = None, tile: bool | None = None, resume_bytes: int = RESUME_BYTES) -> None:
        self.backend, self.reference, self.candidate = backend, reference, candidate
        self.tile = tile
        self.resume_bytes = resume_bytes
        self.device_library = device_library  # where the backend leaves outputs on a device: the library scoring them there
        self.units = tuple(tuple(u) for u in units)
        self.data, self.emit, self.fp16 = data, emit, fp16
        self.outputs = [o.name for o in reference.graph.output if o.name in data.reference_outputs[0]]
        self.probes = 0
        self._step: OnStep | None = None  # set by measure_many while it runs: called before each run of a batch
        self._stack: ExitStack | None = None
        self._gated: GatedModel | None = None
        self._runner = None
        self._resident: Resident | None = None
        self._tiled = False
        self._resume: ResumedRuns | None = None
        self._open_seconds = 0.0  # opening the gated session: what the resumed runs' sessions are priced in
        self._pass_seconds: float | None = None  # a whole-graph run, per sample + 1 (see harm_ranking's cost)

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(n for u in self.units for n in u)

    def __enter__(self) -> OutputProbe:
        self._stack = ExitStack()
        if self.backend.capabilities.runtime_gates:
            reducer = device_reducer(self.device_library) if self.backend.capabilities.device_outputs else None
            tile = self.tile if self.tile is not None else reducer is not None
            tiled = gate_model_tiled(self.reference, self.candidate, self.units, fp16=self.fp16) \
                if tile and not self.data.whole_batches else None
            if tiled is not None:
                self._open(tiled, reducer, tiled=True)
                if self._tiling_agrees():
                    return self
                self._stack.close()  # a gated tensor without the batch first: one probe a run, as below
                self._stack = ExitStack()
            build = gate_model_where if self.backend.capabilities.branchless else gate_model
            self._open(build(self.reference, self.candidate, self.units, fp16=self.fp16), reducer, tiled=False)
            if reducer is None and (resume := ResumedRuns.plan_for(self.backend, self._gated, self.resume_bytes)) is not None:
                self._resume = resume
                self._stack.callback(resume.close)
        return self

    def _open(self, gated: GatedModel, reducer: DeviceReducer | None, tiled: bool) -> None:
        self._gated, self._tiled = gated, tiled
        t0 = time.perf_counter()
        self._runner = self._stack.enter_context(self.backend.runner(gated.model, on_device=reducer is not None))
        self._open_seconds = time.perf_counter() - t0
        self._resident = Resident(self._runner, reducer) if reducer is not None else None

    def _tiling_agrees(self) -> bool:
        """Two probes tiled in one order and in the other (catches a switched tensor whose first axis is not the batch:
        its copies would take another copy's gates). Runs at the tile size every later run has, so it also pays the
        runtime's first run at that size."""
        data = self.data.head(2)
        a, b = self._gated.feed(()), self._gated.feed_only(0)
        try:
            ab, ba = self._run_tile(data, [a, b]), self._run_tile(data, [b, a])
        except ModelError:
            return False
        return _same(ab[0].outputs_snr_db, ba[1].outputs_snr_db) and _same(ab[1].outputs_snr_db, ba[0].outputs_snr_db) \
            and not _same(ab[0].outputs_snr_db, ab[1].outputs_snr_db, 0.0)

    def __exit__(self, *exc) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack, self._runner, self._gated, self._resident, self._tiled = None, None, None, None, False
        self._resume, self._pass_seconds = None, None

    def _tick(self) -> None:
        if self._step is not None:
            self._step()

    def _run(self, infer: Callable[[Batch], dict[str, np.ndarray]], t0: float, data: ProbeData | None = None,
             resident: Resident | None = None) -> ProbeMetrics:
        self.probes += 1

        def stepped(batch: Batch) -> dict[str, np.ndarray]:
            self._tick()
            return infer(batch)
        return score_batches(data or self.data, stepped, self.outputs, t0, resident)

    def _run_gated(self, gates: dict[str, np.ndarray], t0: float, data: ProbeData | None,
                   key: SamplesKey | object = FOREIGN) -> ProbeMetrics:
        """key: `data` is the probe data's first `key` samples (None: all of it), so kept baselines apply."""
        if self._tiled:  # one probe alone (a Ray worker's, or a direct call): one copy, not a padded tile of copies
            self.probes += 1
            return self._tiled_run(data or self.data, [gates])[0]
        if self._resident is not None:
            gates = self._resident.gates(gates)
        r = self._resume
        if r is not None and r.is_open and key is not FOREIGN:
            counted = self.probes
            try:
                if r.wants(gates) and not r.has(key, off_gates(gates)):  # a baseline to keep: the recorder runs it whole
                    infer, keep = r.recording(gates, key, len((data or self.data).batches))
                    result = self._run(infer, t0, data)
                    keep()
                    return result
                if (at := r.resume_cut(gates, key)) is not None:
                    return self._run(r.resumed(gates, key, at), t0, data)
            except Exception:  # noqa: BLE001 - whatever a cut graph meets, the whole graph answers as before
                self.probes = counted
                self._stop_resuming()
        result = self._run(lambda b: self._runner.infer({**b, **gates}), t0, data, self._resident)
        if self._resident is None:
            self._pass_seconds = (time.perf_counter() - t0) / ((data or self.data).samples + 1)
        return result

    def _prepare_resume(self, requests: Sequence[ProbeRequest]) -> None:
        """Before `requests` run: open the resumed runs' sessions where these probes would save more than they cost
        (worth_resuming), then keep each baseline that two or more of them would resume from: all-INT8, all-fallback,
        or the set most of them share (the units off in more than half), where resuming from it rather than from those
        two saves more than the pass that records it."""
        r = self._resume
        if r is None or self._pass_seconds is None or not requests:
            return
        feeds = [(req.samples, self._feed(req)) for req in requests]
        if not r.is_open:
            saving = sum(r.skipped(g) * self._pass_seconds * (self._head(k).samples + 1) for k, g in feeds)
            if not worth_resuming(saving, r.open_cost() * self._open_seconds, 2 * self._pass_seconds * (self._head(feeds[0][0]).samples + 1)):
                return
            try:
                opened = self._open_resume()
            except Exception:  # noqa: BLE001 - the runtime refused a cut graph: every probe runs the whole graph, as before
                opened = False
            if not opened:
                self._stop_resuming()
                return
        for key in dict.fromkeys(k for k, _ in feeds):
            group = [g for k, g in feeds if k == key]
            shared = consensus(group)
            fixed = (r.int8, r.fallback)
            candidates = [*fixed, shared] if shared not in fixed and \
                sum(r.skipped(g, [*fixed, shared]) - r.skipped(g, fixed) for g in group) > 1.0 else list(fixed)
            wanted = [at[1] for g in group if (at := r.resume_cut(g, key, kept_only=False, candidates=candidates)) is not None]
            for baseline in candidates:
                if self._resume is None:  # a recording failed: every probe runs the whole graph now
                    return
                if wanted.count(baseline) >= 2 and not r.has(key, baseline):
                    self._run_gated(r.want(baseline), time.perf_counter(), self._head(key), key)
                    self.probes -= 1  # a baseline kept, not a probe asked for

    def _stop_resuming(self) -> None:
        """Every later probe runs the whole graph; the recorder and suffix sessions close now."""
        if self._resume is not None:
            self._resume.close()
        self._resume = None

    def _head(self, samples: SamplesKey) -> ProbeData:
        """The probe data's first `samples` samples (None: all of it)."""
        return self.data.head(samples) if samples is not None else self.data

    def _open_resume(self) -> bool:
        """The recorder and suffix sessions, used only if resumed runs give the whole graph's outputs bit for bit: both
        baselines and, at every cut, from each baseline, the first unit after it switched, on two samples."""
        r = self._resume
        data, key = self.data.head(2), -1
        plain = lambda g: [self._runner.infer({**b, **g}) for b in data.batches]  # noqa: E731
        ok = True
        for gates in (self._gated.feed(()), self._gated.feed_only(None)):
            self._tick()  # checking the resumed runs took 7 s of a layout detector's ranking, before its first probe
            infer, keep = r.recording(gates, key, len(data.batches))
            ok = ok and same_outputs([infer(b) for b in data.batches], plain(gates), self.outputs)
            keep()
        if not (ok and r.has(key, r.int8) and r.has(key, r.fallback) and len(r.dtypes()) == len(r.plan.observed)):
            return False
        r.open(r.dtypes())
        for cut in r.plan.cuts:
            self._tick()
            k = next((i for i, g in enumerate(self._gated.gates) if g not in cut.gates), None)
            for gates in ((self._gated.feed(self.units[k]), self._gated.feed_only(k)) if k is not None else ()):
                at = r.resume_cut(gates, key)
                ok = ok and at is not None and same_outputs(list(map(r.resumed(gates, key, at), data.batches)),
                                                            plain(gates), self.outputs)
        r.forget(key)
        return ok

    def _tiled_run(self, data: ProbeData, feeds: Sequence[dict[str, np.ndarray]]) -> list[ProbeMetrics]:
        """Probes (their gate values) on `data`, all in each run: one copy of a batch per probe along the batch axis."""
        t0 = time.perf_counter()
        k = len(feeds)
        scores = new_scores(data, self.outputs, k)
        for batch, ref in zip(data.batches, data.reference_outputs):
            self._tick()
            gates = tiled_gates(self._gated, feeds, len(next(iter(batch.values()))))
            if self._resident is not None:
                inputs, ref_scored = self._resident.tiled(batch, ref, k)
                out, ops = self._runner.infer({**inputs, **self._resident.gates(gates)}), self._resident.ops
            else:
                inputs, ref_scored = {name: np.concatenate([v] * k) for name, v in batch.items()}, ref
                out, ops = self._runner.infer({**inputs, **gates}), HOST_OPS
            add_copies(scores, ref, ref_scored, out, ops)
        seconds = (time.perf_counter() - t0) / k
        return [sc.result(seconds) for sc in scores]

    def _run_tile(self, data: ProbeData, feeds: Sequence[dict[str, np.ndarray]]) -> list[ProbeMetrics]:
        """Up to a tile of probes in one run of always the same size (padded with copies of the last probe): a runtime
        pays its first run at each new input size (about 0.4 s on an H100 for a detector), so the sizes must not vary."""
        pad = max(0, self._per_run(data) - len(feeds))
        return self._tiled_run(data, [*feeds, *[feeds[-1]] * pad])[: len(feeds)]

    def run_size(self, samples: int | None) -> int:
        """How many probes on the first `samples` samples (None: all) one run holds: a tile's worth where probes are
        tiled (before the session opens: where they would be), else 1. Pools hand workers probes in runs of this size."""
        if self._runner is not None:
            tiled = self._tiled
        else:
            tiled = self.backend.capabilities.runtime_gates and not self.data.whole_batches and (
                self.tile if self.tile is not None else self.backend.capabilities.device_outputs)
        return self._per_run(self.data.head(samples) if samples is not None else self.data) if tiled else 1

    @staticmethod
    def _per_run(data: ProbeData) -> int:
        return max(1, TILE_SAMPLES // max(len(next(iter(b.values()))) for b in data.batches))

    def _feed(self, request: ProbeRequest) -> dict[str, np.ndarray]:
        if request.only is not None:
            return self._gated.feed_only(self.units.index(tuple(request.only)))
        return self._gated.feed(request.fallback)

    def measure_many(self, requests: Sequence[ProbeRequest], on_result: OnResult | None = None,
                     on_step: OnStep | None = None) -> list[ProbeMetrics]:
        """Results in request order. Tiled (see `tile`): the requests on the same samples go as many to a run as
        TILE_SAMPLES allows; otherwise one after another. on_step: called before each run of a batch (a cancel's chance
        within a probe; it may raise)."""
        self._step = on_step
        try:
            return self._measure_many(requests, on_result)
        finally:
            self._step = None

    def _measure_many(self, requests: Sequence[ProbeRequest], on_result: OnResult | None) -> list[ProbeMetrics]:
        if not self._tiled:
            out = []
            self._prepare_resume(requests)
            for r in requests:
                out.append(r.run(self))
                if len(out) == 1 and self._resume is not None and not self._resume.is_open:
                    self._prepare_resume(requests[1:])  # the first run priced a pass
                if on_result is not None:
                    on_result(len(out), len(requests))
            return out
        results: list[ProbeMetrics | None] = [None] * len(requests)
        done = 0
        for chunk in self.runs(requests):
            data = self._head(requests[chunk[0]].samples)
            for i, m in zip(chunk, self._run_tile(data, [self._feed(requests[i]) for i in chunk])):
                results[i] = m
            self.probes += len(chunk)
            done += len(chunk)
            if on_result is not None:
                on_result(done, len(requests))
        return [r for r in results if r is not None]

    def runs(self, requests: Sequence[ProbeRequest], sizes: dict[int | None, int] | None = None) -> list[list[int]]:
        """The requests (their indices) cut into runs: requests on the same samples together, run_size of them a run
        (`sizes`: run sizes by samples, where another process knows them better)."""
        groups: dict[int | None, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.samples, []).append(i)
        out = []
        for samples, members in groups.items():
            size = sizes[samples] if sizes is not None else self.run_size(samples)
            out += [members[k : k + size] for k in range(0, len(members), size)]
        return out

    def run_request(self, request: ProbeRequest) -> ProbeMetrics:
        """One request on the probe data's first `request.samples` samples (resumed where a baseline is kept for them)."""
        data = self._head(request.samples)
        if self._runner is not None:
            return self._run_gated(self._feed(request), time.perf_counter(), data, request.samples)
        if request.only is not None:
            return self.measure_only(request.only, data)
        return self.measure(request.fallback, data)

    def measure(self, fallback: Iterable[str], data: ProbeData | None = None) -> ProbeMetrics:
        """Final outputs with the units holding any of `fallback` in fallback precision and every other unit in INT8,
        on `data` (default: the probe's data)."""
        t0 = time.perf_counter()
        fallback = frozenset(fallback)
        if self._runner is not None:
            return self._run_gated(self._gated.feed(fallback), t0, data, None if data is None else FOREIGN)
        with self.backend.runner(self.emit(fallback)) as runner:
            return self._run(runner.infer, t0, data)

    def measure_only(self, unit: Unit | None, data: ProbeData | None = None) -> ProbeMetrics:
        """Only `unit` in INT8 (None: nothing quantized), on `data` (default: the probe's data)."""
        t0 = time.perf_counter()
        if self._runner is not None:
            return self._run_gated(self._gated.feed_only(None if unit is None else self.units.index(tuple(unit))), t0, data,
                                   None if data is None else FOREIGN)
        keep = set(unit or ())
        with self.backend.runner(self.emit(frozenset(n for n in self.nodes if n not in keep))) as runner:
            return self._run(runner.infer, t0, data)


@dataclass(frozen=True)
class ProbeRequest:
    """One probe, as data (so a pool of workers can run it): `only` set: just that unit in INT8; else the units holding
    any node of `fallback` in fallback. `samples`: on the first N samples of the probe data (None: all of it)."""

    fallback: frozenset[str] = frozenset()
    only: tuple[str, ...] | None = None
    samples: int | None = None

    def run(self, probe: OutputProbe) -> ProbeMetrics:
        return probe.run_request(self)


OnResult = Callable[[int, int], None]  # (results so far, requests in all)
OnStep = Callable[[], None]  # before each run of a batch inside a probe (a cancel's chance; see progress.Repeating)


class ProbePool(Protocol):
    """Runs many probes of one OutputProbe setup: in this process (LocalProbePool) or on workers (engine.scale). Results
    come back in request order and are the same wherever they ran."""

    probe: OutputProbe

    def measure_many(self, requests: Sequence[ProbeRequest], on_result: OnResult | None = None,
                     on_step: OnStep | None = None) -> list[ProbeMetrics]: ...


class LocalProbePool:
    """Probes one after another in this process, in an entered probe's session."""

    def __init__(self, probe: OutputProbe) -> None:
        self.probe = probe

    def measure_many(self, requests: Sequence[ProbeRequest], on_result: OnResult | None = None,
                     on_step: OnStep | None = None) -> list[ProbeMetrics]:
        return self.probe.measure_many(requests, on_result, on_step)


PoolFactory = Callable[[OutputProbe], "AbstractContextManager[ProbePool]"]  # e.g. an engine.scale executor's probe_pool


@contextmanager
def serial_pool(probe: OutputProbe) -> Iterator[LocalProbePool]:
    """This process, one probe after another."""
    with probe:
        yield LocalProbePool(probe)


def local_pool(probe: OutputProbe) -> AbstractContextManager[ProbePool]:
    """The default pool: this process, one probe after another."""
    return serial_pool(probe)
