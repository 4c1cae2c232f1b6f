"""Latency of every build of a run: FP32, FP16 (where the provider has FP16 kernels), full INT8 and the current
mixed build. Each build: warm-up, then median and p90 of N timed runs at the run's batch size, plus its
final-output SNR (one output-only probe), so accuracy and latency can be weighed (the Pareto view).

Latency uses ONNX Runtime's full graph optimization (its fused int8 kernels), unlike accuracy, which
computes Q/DQ as written (see backends/onnxrt.py): this measures what ONNX Runtime deploys."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np
import onnx

from engine.backends.onnxrt import OnnxRuntimeBackend
from engine.backends.select import resolve_backend
from engine.diagnose.probes import OutputProbe
from engine.errors import ConfigError
from engine.progress import ProgressCallback, ProgressEvent, Stage, no_progress
from engine.quantize.config import FallbackPrecision, QuantConfig
from engine.quantize.fallback_fp16 import convert_nodes_to_fp16
from engine.runs import RunFolder

__all__ = ["BuildLatency", "measure_latency"]


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


def _time(backend, model: onnx.ModelProto, feed: dict[str, np.ndarray], runs: int, warmup: int) -> tuple[float, float, int | None]:
    with backend.runner(model) as r:
        for _ in range(warmup):
            r.infer(feed)
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            r.infer(feed)
            samples.append((time.perf_counter() - t0) * 1000)
    reformats = backend.engine_summary()["reformat_layers"] if hasattr(backend, "engine_summary") else None
    return float(np.median(samples)), float(np.percentile(samples, 90)), reformats


def measure_latency(run_dir: str | os.PathLike, *, provider: str | None = None, runs: int = 50, warmup: int = 10,
                    progress: ProgressCallback = no_progress) -> list[BuildLatency]:
    if runs < 1 or warmup < 0:
        raise ConfigError(f"--runs {runs} / --warmup {warmup} are not valid; use at least one timed run.")
    run = RunFolder(run_dir)
    run.require()
    cfg = run.read_json(run.config)
    choice = resolve_backend(provider or cfg["provider"])
    backend = choice.backend
    if isinstance(backend, OnnxRuntimeBackend):
        backend = OnnxRuntimeBackend(backend.device, optimization="all")
    probe = OutputProbe(run, QuantConfig.from_dict(cfg["quant"]).with_fallback(()), choice.backend)
    feed = probe.batches[0]
    batch = len(next(iter(feed.values())))
    reference = probe.reference
    current = run.read_json(run.summary)["fallback"] if run.summary.is_file() else []
    builds: list[tuple[str, onnx.ModelProto | None, int, str]] = [("fp32", reference, 0, "")]
    if getattr(backend, "device", "gpu") == "cpu":
        builds.append(("fp16", None, 0, "not measured: ONNX Runtime CPU has no FP16 kernels for these ops"))
    else:
        half = onnx.ModelProto()
        half.CopyFrom(reference)
        convert_nodes_to_fp16(half, frozenset(n.name for n in half.graph.node))
        builds.append(("fp16", half, len(half.graph.node), ""))
    builds.append(("int8", probe.emit(frozenset()), 0, ""))
    if current:
        builds.append((f"mixed ({len(current)} in {probe.config.fallback_precision.value})",
                       probe.emit(frozenset(current), FallbackPrecision.parse(cfg["quant"].get("fallback_precision", "fp16"))),
                       len(current), ""))
    results = []
    for i, (name, model, nodes, note) in enumerate(builds):
        progress(ProgressEvent(Stage.LATENCY, i, len(builds), f"timing {name}"))
        if model is None:
            results.append(BuildLatency(name, None, None, 0, batch, None, nodes, None, note))
            continue
        median, p90, reformats = _time(backend, model, feed, runs, warmup)
        snr = math.inf if name == "fp32" else probe.measure_model(model).snr_db
        results.append(BuildLatency(name, median, p90, runs, batch, snr, nodes, reformats, note))
    progress(ProgressEvent(Stage.LATENCY, len(builds), len(builds), "done"))
    run.write_json(run.path / "latency.json", {"backend": backend.name, "batch": batch, "runs": runs, "warmup": warmup,
                                               "builds": [r.to_dict() for r in results]})
    return results
