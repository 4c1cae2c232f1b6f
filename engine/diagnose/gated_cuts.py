"""Cuts through a gated candidate, so that a probe can resume where it parts from a baseline.

Most probes switch one unit, or a few, away from a baseline: the all-INT8 candidate (the gain view, a greedy
search's first round), the all-fallback one (the alone view), or the set a greedy round has chosen so far. Every node before the first unit a probe switches computes what the
baseline computed. A cut is a place in the graph's node order with the tensors the rest of the graph reads from before
it and the gates the part before it reads (directly, through the Or nodes of shared tensors, or inside If branches).
A probe whose gates equal the baseline's on those gates gives, after the cut, what the baseline run would give
there, so it can run only the graph after the cut (`suffix_model`), fed the baseline's tensors at the cut.

Nodes that compute only from gates and constants (the Or nodes, a weight's DequantizeLinear) are copied into every
suffix: they depend on the probe's gates, never on the baseline's, and would otherwise be kept for every sample."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from engine.model.graph_reads import node_reads, subgraphs

__all__ = ["Cut", "GraphCuts", "plan_cuts", "suffix_model", "PARTS"]

PARTS = 4  # the graph is cut into this many parts, balanced by units (8 or 16 parts measured no faster on MobileNetV3)


@dataclass(frozen=True)
class Cut:
    position: int  # index into GraphCuts.main: the suffix runs main[position:]
    tensors: tuple[str, ...]  # what the suffix reads from before the cut
    gates: frozenset[str]  # the gates the part before the cut reads
    skipped: float  # share of the graph's nodes before the cut (what a resumed run saves, roughly)


@dataclass(frozen=True)
class GraphCuts:
    gate_only: tuple[onnx.NodeProto, ...]  # nodes computing only from gates and constants: copied into every suffix
    main: tuple[onnx.NodeProto, ...]  # every other node, in graph order
    cuts: tuple[Cut, ...]  # shallowest first

    @property
    def observed(self) -> list[str]:
        """Every cut's tensors: what a baseline run keeps."""
        return list(dict.fromkeys(t for c in self.cuts for t in c.tensors))


def plan_cuts(model: onnx.ModelProto, gates: Sequence[str], parts: int = PARTS) -> GraphCuts | None:
    """Up to `parts - 1` cuts, each just before the first node of a unit, the units shared out evenly between the parts;
    None where there is no useful cut (too few units, nodes out of order, or every place keeps a final output before it)."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    gate_deps: dict[str, frozenset[str]] = {x: frozenset([x]) for x in gates}  # tensor -> the gates it is computed from
    gate_only, main = [], []
    for node in g.node:  # nodes computing from gates and constants only (an Or, a weight's DequantizeLinear) are copied
        reads = node_reads(node) - inits
        if not any(subgraphs(node)) and all(r in gate_deps for r in reads):
            gate_only.append(node)
            deps: frozenset[str] = frozenset().union(*(gate_deps[r] for r in reads))
            gate_deps.update(dict.fromkeys(node.output, deps))
        else:
            main.append(node)
    produced: dict[str, int] = {}
    last_read: dict[str, int] = {}
    node_gates: list[frozenset[str]] = []
    available = {i.name for i in g.input} | inits
    for i, node in enumerate(main):
        reads = node_reads(node)
        if any(r not in available and r not in produced and r not in gate_deps for r in reads):
            return None  # not in topological order (or reads a name nothing writes): no cut is safe
        for r in reads:
            if r in produced:
                last_read[r] = i
        node_gates.append(frozenset().union(*(gate_deps[r] for r in reads if r in gate_deps)))
        for o in node.output:
            if o:
                produced[o] = i
    finals = {o.name for o in g.output}
    for o in finals:
        last_read[o] = len(main)
    # a unit starts at the first node reading its gate; gates are numbered in topological order of their units
    starts = sorted({min((i for i, ng in enumerate(node_gates) if gate in ng), default=len(main)) for gate in gates} - {len(main)})
    if len(starts) < 2 * parts:
        return None
    prefix_gates: list[frozenset[str]] = [frozenset()]
    for ng in node_gates:
        prefix_gates.append(prefix_gates[-1] | ng)
    cuts: list[Cut] = []
    for k in range(1, parts):
        position = starts[len(starts) * k // parts]
        if cuts and position <= cuts[-1].position:
            continue
        tensors = tuple(t for t, p in produced.items() if p < position and last_read.get(t, -1) >= position)
        if any(t in finals for t in tensors):
            continue  # a final output written before the cut: a suffix would have to pass an input through
        cuts.append(Cut(position, tensors, prefix_gates[position], position / len(main)))
    if not cuts:
        return None
    return GraphCuts(tuple(gate_only), tuple(main), tuple(cuts))


def suffix_model(model: onnx.ModelProto, plan: GraphCuts, cut: Cut, dtypes: Mapping[str, np.dtype]) -> onnx.ModelProto:
    """The graph after `cut`: the gate-only nodes and main[cut.position:], reading the cut's tensors (of `dtypes`, as a
    baseline run gave them) as inputs, and the graph inputs and initializers it still reads."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    nodes = [*plan.gate_only, *plan.main[cut.position:]]
    reads: set[str] = set()
    for node in nodes:
        reads |= node_reads(node)
    cut_set = set(cut.tensors)
    inputs = [i for i in g.input if i.name in reads and i.name not in cut_set]
    inits = [i for i in g.initializer if i.name in reads]
    value_info = [v for v in g.value_info if v.name not in cut_set]
    del g.node[:], g.input[:], g.initializer[:], g.value_info[:]
    g.node.extend(nodes)
    g.input.extend(inputs)
    g.input.extend(helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(np.dtype(dtypes[t])), None)
                   for t in cut.tensors)
    g.initializer.extend(inits)
    g.value_info.extend(value_info)
    return out
