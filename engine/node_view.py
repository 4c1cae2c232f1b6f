"""What the dashboard shows about one node: its neighbourhood in the graph and its INT8 input and weights.

neighbourhood(): the node, the nodes `hops` edges away, every edge with the SNR of its tensor and whether a Q/DQ
sits on it in the candidate. tensor_view(): for the node's quantized activation input, the calibration range, the
INT8 scale and clipping points, a histogram of reference values and the largest |value| per channel (a planted
outlier channel shows at once); for its weights, the per-channel scales and largest |value|."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import numpy as np
import onnx
import pandas as pd
from onnx import numpy_helper

from engine.backends.select import resolve_backend
from engine.compare.reference_cache import ReferenceCache
from engine.errors import ConfigError
from engine.quantize.config import Precision
from engine.runs import RunFolder

__all__ = ["Neighbour", "Edge", "Neighbourhood", "neighbourhood", "ChannelStats", "TensorView", "tensor_view", "HIST_BINS"]

HIST_BINS = 80


@dataclass(frozen=True)
class Neighbour:
    name: str
    op_type: str
    quantized: bool  # a fallback candidate
    snr_db: float  # its (worst) output tensor's SNR; nan where not observed
    original: str  # where it came from in the user's file
    hops: int  # 0 for the selected node


@dataclass(frozen=True)
class Edge:
    source: str  # a node name, or the graph input's name
    target: str
    tensor: str
    snr_db: float
    quantized: bool  # a Q/DQ pair sits on this edge in the candidate


@dataclass(frozen=True)
class Neighbourhood:
    center: str
    nodes: tuple[Neighbour, ...]
    edges: tuple[Edge, ...]
    inputs: tuple[str, ...]  # graph inputs / initializer-free sources drawn as plain boxes


def neighbourhood(reference: onnx.ModelProto, candidate: onnx.ModelProto, layers: pd.DataFrame, node: str,
                  hops: int = 1) -> Neighbourhood:
    nodes = {n.name: n for n in reference.graph.node}
    if node not in nodes:
        raise ConfigError(f"There is no node '{node}' in the compared graph; pick one from the table.", option="node")
    inits = {i.name for i in reference.graph.initializer}
    producer = {o: n.name for n in reference.graph.node for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in reference.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.name)
    dist = {node: 0}
    frontier = [node]
    for d in range(1, hops + 1):
        nxt = []
        for name in frontier:
            n = nodes[name]
            near = [producer[i] for i in n.input if i in producer] + [c for o in n.output for c in consumers.get(o, ())]
            for m in near:
                if m not in dist:
                    dist[m] = d
                    nxt.append(m)
        frontier = nxt
    snr = dict(zip(layers["tensor"], layers["snr_db"]))
    per_node = layers.sort_values("snr_db").drop_duplicates("node").set_index("node")
    quantized = set(layers.loc[layers["quantized"].astype(bool), "node"])
    original = dict(zip(layers["node"], layers["original"])) if "original" in layers else {}
    dq_out = {o for n in candidate.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    q_in = {n.output[0]: n.input[0] for n in candidate.graph.node if n.op_type == "QuantizeLinear"}
    dq_src = {n.output[0]: q_in.get(n.input[0]) for n in candidate.graph.node if n.op_type == "DequantizeLinear"}
    cand_reads = {n.name: set(n.input) for n in candidate.graph.node}
    quantized_edges = {(src, n) for n, reads in cand_reads.items() for i in reads if i in dq_out and (src := dq_src.get(i))}
    members = []
    for name, d in sorted(dist.items(), key=lambda kv: (kv[1], kv[0])):
        n = nodes[name]
        s = float(per_node.loc[name, "snr_db"]) if name in per_node.index else math.nan
        members.append(Neighbour(name, n.op_type, name in quantized, s, str(original.get(name, "") or ""), d))
    edges, sources = [], set()
    for name in dist:
        for t in nodes[name].input:
            if not t or t in inits:
                continue
            src = producer.get(t)
            if src is None:
                sources.add(t)
            if src in dist or src is None:
                edges.append(Edge(src or t, name, t, float(snr.get(t, math.inf if src is None else math.nan)),
                                  (t, name) in quantized_edges))
    return Neighbourhood(node, tuple(members), tuple(edges), tuple(sorted(sources)))


@dataclass(frozen=True)
class ChannelStats:
    max_abs: tuple[float, ...]  # per channel (axis 1 of an activation, axis 0 of a weight)
    scales: tuple[float, ...]  # INT8 scale per channel (weights), or the one per-tensor scale repeated


@dataclass(frozen=True)
class TensorView:
    node: str
    tensor: str  # the node's quantized activation input
    calibration_min: float
    calibration_max: float
    scale: float | None  # the scale in the candidate (None: the tensor is not quantized there)
    clip_low: float | None  # the values the grid can represent: INT8 [-128, 127] * scale, FP8 E4M3 [-448, 448] * scale
    clip_high: float | None
    override: tuple[float, float] | None  # a custom range (--range) in force for this tensor
    hist_counts: tuple[int, ...]
    hist_edges: tuple[float, ...]
    clipped_fraction: float  # of the reference values outside [clip_low, clip_high]
    channels: ChannelStats
    samples: int
    weight: str | None
    weight_channels: ChannelStats | None
    observed_min: float  # of the reference values shown
    observed_max: float
    grid: str = "INT8"  # what the quantized tensor is stored in: INT8, or FP8 E4M3 (its largest step is 448 x scale)
    grid_max: float = 127.0  # the grid's largest value, in steps of the scale

    def suggested_range(self, percentile: float = 99.99) -> tuple[float, float]:
        """A range that keeps `percentile` % of the reference values (from the histogram): a starting point to edit.
        Histogram edges can lie beyond every value (below a Relu's 0, past the INT8 clip), so the range is kept inside
        what was observed and, where known, inside the calibrated range."""
        counts = np.asarray(self.hist_counts, dtype=np.float64)
        cdf = np.cumsum(counts) / max(counts.sum(), 1)
        edges = np.asarray(self.hist_edges)
        lo = float(edges[int(np.searchsorted(cdf, (100 - percentile) / 200))])
        hi = float(edges[min(len(edges) - 1, int(np.searchsorted(cdf, 1 - (100 - percentile) / 200)) + 1)])
        floor, ceiling = self.observed_min, self.observed_max
        if math.isfinite(self.calibration_min) and math.isfinite(self.calibration_max):
            floor, ceiling = max(floor, self.calibration_min), min(ceiling, self.calibration_max)
        lo, hi = max(lo, floor), min(hi, ceiling)
        return (lo, hi) if lo < hi else (floor, ceiling)


def _calibration(run: RunFolder) -> dict[str, tuple[float, float]]:
    data = json.loads(run.calibration_cache.read_text()).get("data", {})
    out = {}
    for name, d in data.items():
        try:
            out[name] = (float(d["lowest"]["data"][0]), float(d["highest"]["data"][0]))
        except (KeyError, IndexError, TypeError, ValueError):
            continue
    return out


def _reference_values(run: RunFolder, reference: onnx.ModelProto, tensor: str, provider: str, max_batches: int) -> np.ndarray:
    """The reference's values of `tensor` on the first cached batches (from the cache, or by running the reference)."""
    cache = ReferenceCache(run.cache_dir)
    graph_inputs = {i.name for i in reference.graph.input}
    arrays = []
    if cache.complete:
        for k, (inputs, ref) in enumerate(cache.batches()):
            if k >= max_batches:
                break
            if tensor in graph_inputs:
                arrays.append(np.array(inputs[tensor]))
            elif tensor in ref:
                arrays.append(np.array(ref[tensor]))
            else:
                arrays = []
                break
        if arrays:
            return np.concatenate([a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1) for a in arrays]).reshape(
                -1, *arrays[0].shape[1:])
        backend = resolve_backend(provider).backend
        with backend.runner(reference, observe=[tensor]) as runner:
            for k, (inputs, _) in enumerate(cache.batches()):
                if k >= max_batches:
                    break
                arrays.append(np.array(runner.infer({n: np.array(v) for n, v in inputs.items()})[tensor]))
    if not arrays:
        raise ConfigError(f"There are no cached batches in {run.path} to show the values of '{tensor}'; run the comparison again.")
    return np.concatenate(arrays)


def _channel_max(values: np.ndarray, axis: int) -> tuple[float, ...]:
    if values.ndim <= axis:
        return (float(np.abs(values).max()),)
    moved = np.moveaxis(np.abs(values), axis, 0)
    return tuple(float(v) for v in moved.reshape(moved.shape[0], -1).max(axis=1))


def tensor_view(run_dir: str | os.PathLike, node: str, *, max_batches: int = 8) -> TensorView:
    """The node's quantized activation input and its weights, from the run folder (the current candidate.onnx)."""
    run = RunFolder(run_dir)
    run.require()
    cfg = run.read_config()
    reference = onnx.load(run.reference)
    ref_node = next((n for n in reference.graph.node if n.name == node), None)
    if ref_node is None:
        raise ConfigError(f"There is no node '{node}' in the compared graph; pick one from the table.", option="node")
    inits = {i.name: i for i in reference.graph.initializer}
    activation = next((i for i in ref_node.input if i and i not in inits), None)
    if activation is None:
        raise ConfigError(f"The node '{node}' has no activation input to inspect; pick a node that reads a tensor.", option="node")
    weight = next((i for i in ref_node.input[1:] if i in inits and inits[i].dims and len(inits[i].dims) >= 2), None)
    cand = onnx.load(run.candidate) if run.candidate.is_file() else None
    cand_inits = {i.name: numpy_helper.to_array(i) for i in cand.graph.initializer} if cand is not None else {}
    q_nodes = {n.input[0]: n for n in cand.graph.node if n.op_type == "QuantizeLinear"} if cand is not None else {}
    scale = None
    if activation in q_nodes and q_nodes[activation].input[1] in cand_inits:
        scale = float(np.asarray(cand_inits[q_nodes[activation].input[1]]).reshape(-1)[0])
    calib = _calibration(run).get(activation, (math.nan, math.nan))
    override = next(((r.min, r.max) for r in cfg.quant.ranges if r.tensor == activation), None)
    values = _reference_values(run, reference, activation, cfg.provider, max_batches)
    flat = values.reshape(-1)
    finite = flat[np.isfinite(flat)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    fp8 = cfg.quant.precision is Precision.FP8
    grid_low, grid_high = (-448.0, 448.0) if fp8 else (-128.0, 127.0)  # an FP8 run's view clipped at INT8's 127 x scale
    clip_low, clip_high = (grid_low * scale, grid_high * scale) if scale is not None else (None, None)
    span_lo = min(lo, clip_low) if clip_low is not None else lo
    span_hi = max(hi, clip_high) if clip_high is not None else hi
    counts, edges = np.histogram(finite, bins=HIST_BINS, range=(span_lo, span_hi if span_hi > span_lo else span_lo + 1))
    clipped = float(((finite < clip_low) | (finite > clip_high)).mean()) if scale is not None and finite.size else 0.0
    w_stats = None
    if weight is not None:
        w = numpy_helper.to_array(inits[weight])
        w_scale_name = next((n.input[1] for n in cand.graph.node if n.op_type == "DequantizeLinear"
                             and n.input[0] == f"{weight}_quantized"), None) if cand is not None else None
        w_scales = tuple(float(v) for v in np.asarray(cand_inits.get(w_scale_name, [])).reshape(-1))
        w_stats = ChannelStats(_channel_max(w, 0), w_scales)
    return TensorView(node, activation, calib[0], calib[1], scale, clip_low, clip_high, override,
                      tuple(int(c) for c in counts), tuple(float(e) for e in edges), clipped,
                      ChannelStats(_channel_max(values, 1), (scale,) * (values.shape[1] if values.ndim > 1 else 1) if scale else ()),
                      int(values.shape[0]) if values.ndim else 1, weight, w_stats, lo, hi,
                      "FP8 E4M3" if fp8 else "INT8", grid_high)
