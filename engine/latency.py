"""Latency of every build of a run: FP32, FP16 (where the provider has FP16 kernels), full INT8 and the current
mixed build. Each build: warm-up, then median and p90 of N timed runs at the run's batch size, plus its
final-output SNR (one output-only probe), so accuracy and latency can be weighed (the Pareto view).

Latency uses ONNX Runtime's full graph optimization (its fused int8 kernels), unlike accuracy, which
computes Q/DQ as written (see backends/onnxrt.py): this measures what ONNX Runtime deploys."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import onnx

from engine.backends.base import Backend
from engine.backends.select import resolve_backend
from engine.diagnose.probe_scoring import measure_model
from engine.diagnose.run_probe import cached_probe_data
from engine.errors import ConfigError
from engine.progress import ProgressCallback, ProgressEvent, Stage, no_progress
from engine.quantize.emit import emit_candidate
from engine.quantize.fallback_fp16 import convert_nodes_to_fp16
from engine.runs import RunFolder

__all__ = ["BuildLatency", "measure_latency", "time_model", "explain_slower_than_fp32"]


@dataclass(frozen=True)
class BuildLatency:
    build: str
    median_ms: float | None
    p90_ms: float | None
    runs: int
    batch: int
    snr_db: float | None
    fallback_nodes: int
    reformat_layers: int | None = None
    note: str = ""

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        if isinstance(self.snr_db, float) and math.isinf(self.snr_db):
            d["snr_db"] = "inf"
        return d


def explain_slower_than_fp32(rows: list[BuildLatency], backend_name: str) -> list[BuildLatency]:
    """A quantized build timed slower than FP32 gets a note saying why that can happen and where latency is meaningful
    (seen with ONNX Runtime on a CPU: MobileNetV3 INT8 at 361 ms against 81 ms for FP32, and nothing on screen said why)."""
    fp32 = next((r.median_ms for r in rows if r.build == "fp32"), None)
    if fp32 is None:
        return rows
    note = (f"slower than FP32 on {backend_name}: this runtime quantizes and dequantizes around the nodes its INT8 kernels "
            "do not cover, and CPUs without INT8 dot-product instructions gain little; time the build with TensorRT or "
            "on your deployment target for the latency that matters")
    out, said = [], False
    for r in rows:
        if r.median_ms is not None and r.median_ms > fp32 and r.build.startswith(("int8", "mixed")):
            why = f"slower than FP32 on {backend_name}, for the reason above" if said else note  # the table said it twice
            r, said = dataclasses.replace(r, note="; ".join(n for n in (r.note, why) if n)), True
        out.append(r)
    return out


def time_model(backend: Backend, model: onnx.ModelProto, feed: dict[str, np.ndarray], runs: int, warmup: int,
               fallback: frozenset[str] = frozenset()) -> tuple[float, float, int | None]:
    """(median ms, p90 ms, TensorRT's Reformat-layer count or None) of `runs` timed runs after `warmup` untimed ones,
    with the runtime's deployment optimizations."""
    with backend.runner(model, optimized=True, fallback=fallback) as r:
        for _ in range(warmup):
            r.infer(feed)
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            r.infer(feed)
            samples.append((time.perf_counter() - t0) * 1000)
        engine = r.artifacts().get("engine") or {}
    return float(np.median(samples)), float(np.percentile(samples, 90)), engine.get("reformat_layers")


def measure_latency(run_dir: str | os.PathLike, *, provider: str | None = None, runs: int = 50, warmup: int = 10,
                    progress: ProgressCallback = no_progress) -> list[BuildLatency]:
    """Times the run's builds: FP32 (its reference), FP16, full INT8, and the exact candidate.onnx the run compared
    (when it has a fallback set); each build's SNR is measured on the run's cached data with the same backend."""
    if runs < 1 or warmup < 0:
        raise ConfigError(f"--runs {runs} / --warmup {warmup} are not valid; use at least one timed run.", option="runs")
    run = RunFolder(run_dir)
    run.require()
    cfg = run.read_config()
    backend = resolve_backend(provider or cfg.provider).backend
    reference = onnx.load(run.reference)
    data = cached_probe_data(run, reference, backend, whole_batches=True)  # timed at the run's batch size
    feed = data.batches[0]
    batch = len(next(iter(feed.values())))
    current = cfg.quant.fallback
    builds: list[tuple[str, onnx.ModelProto | None, int, str, frozenset[str]]] = [("fp32", reference, 0, "", frozenset())]
    if not backend.capabilities.fp16_kernels:
        builds.append(("fp16", None, 0, f"not measured: {backend.name} has no FP16 kernels for most ops, so a whole-FP16 "
                       "build would time its casts (the mixed build's few FP16 nodes are timed as they run there)", frozenset()))
    else:
        half = onnx.ModelProto()
        half.CopyFrom(reference)
        convert_nodes_to_fp16(half, frozenset(n.name for n in half.graph.node))
        builds.append(("fp16", half, len(half.graph.node), "", frozenset()))
    builds.append(("int8", emit_candidate(reference, run.reference, run.calibration_cache, cfg.quant.with_fallback(()),
                                          base_cache=run.int8_base).model,
                   0, "", frozenset()))
    if current and run.candidate.is_file():  # the exact model the run compared, not a re-emission
        builds.append((f"mixed ({len(current)} in {cfg.quant.fallback_precision.value})", onnx.load(run.candidate), len(current),
                       "", current))
    results = []
    timed = sum(model is not None for _, model, *_ in builds)  # a build not measured is no step: counted, it halved the
    done = 0  # time each step seemed to take, and the count jumped from 1/4 to 3/4 (YOLOv8n trial)
    for name, model, nodes, note, fallback in builds:
        if model is None:
            results.append(BuildLatency(name, None, None, 0, batch, None, nodes, None, note))
            continue
        progress(ProgressEvent(Stage.LATENCY, done, timed, f"timing {name} ({done + 1}/{timed})"))
        done += 1
        median, p90, reformats = time_model(backend, model, feed, runs, warmup, fallback)
        snr = math.inf if name == "fp32" else measure_model(backend, model, data).snr_db
        results.append(BuildLatency(name, median, p90, runs, batch, snr, nodes, reformats, note))
    results = explain_slower_than_fp32(results, backend.name)
    progress(ProgressEvent(Stage.LATENCY, timed, timed, "done"))
    run.write_json(run.path / "latency.json", {"backend": backend.name, "batch": batch, "runs": runs, "warmup": warmup,
                                               "builds": [r.to_dict() for r in results]})
    return results
