"""Isolated sensitivity of every quantizable node, two views, measured on the final outputs:
  only_this_quantized_*  this node in INT8, every other quantizable node in FP32 (its own harm);
  all_but_this_*         every node in INT8 except this one (what falling it back gains).
Each probe is one output-only candidate pass from the run's calibration cache."""

from __future__ import annotations

import math
import os
import time

import onnx
import pandas as pd

from engine.backends.select import resolve_backend
from engine.diagnose.probes import OutputProbe, ProbeMetrics
from engine.progress import ProgressCallback, ProgressEvent, Stage, no_progress
from engine.quantize.config import FallbackPrecision, QuantConfig
from engine.runs import RunFolder

__all__ = ["sensitivity", "open_probe"]

VIEW_METRICS = ("cosine", "snr_db", "top1_agreement", "accuracy")


def open_probe(run_dir: str | os.PathLike, provider: str | None = None) -> OutputProbe:
    run = RunFolder(run_dir)
    run.require()
    cfg = run.read_json(run.config)
    return OutputProbe(run, QuantConfig.from_dict(cfg["quant"]).with_fallback(()), resolve_backend(provider or cfg["provider"]).backend)


def _cols(prefix: str, m: ProbeMetrics) -> dict:
    return {f"{prefix}_{k}": m.get(k) for k in VIEW_METRICS}


def sensitivity(run_dir: str | os.PathLike, *, provider: str | None = None, progress: ProgressCallback = no_progress) -> pd.DataFrame:
    probe = open_probe(run_dir, provider)
    ops = {n.name: n.op_type for n in onnx.load(probe.run.reference).graph.node}
    nodes = probe.quantizable
    total = 2 * len(nodes) + 1
    started = time.perf_counter()
    full = probe.measure(frozenset())
    rows = []
    for i, node in enumerate(nodes):
        t0 = time.perf_counter()
        only = probe.measure(frozenset(nodes) - {node}, FallbackPrecision.FP32)
        but = probe.measure(frozenset({node}))
        row = {"node": node, "op_type": ops[node], **_cols("only_this_quantized", only), **_cols("all_but_this", but)}
        row["all_but_this_gain_db"] = but.snr_db - full.snr_db if math.isfinite(full.snr_db) else math.nan
        row["probe_seconds"] = time.perf_counter() - t0
        rows.append(row)
        done = 2 * (i + 1) + 1
        eta = (time.perf_counter() - started) / done * (total - done)
        progress(ProgressEvent(Stage.SENSITIVITY, done, total, f"{node}: about {eta:.0f} s left"))
    frame = pd.DataFrame(rows).sort_values("only_this_quantized_snr_db").reset_index(drop=True)
    probe.run.write_frame(probe.run.path / "sensitivity.csv", frame)
    return frame
