"""The tiled gated candidate: several probes in one run, each on its own copy of the samples along the batch.

Where a run costs mostly its kernel launches (a GPU running a short probe of a few samples), many probes of one stage
share a run: the samples are repeated once per probe along the batch axis, and each unit's gate is a vector with one
value per sample of that batch. A gate cannot switch a weight per sample, so every quantized node of a unit is computed
twice, as emitted (on its dequantized inputs) and in its fallback precision (on the float inputs), and its output takes,
sample by sample, the first where the gate is on and the second where it is off. A tensor's other readers (an Add on a
dequantized skip branch) read it quantized for the samples where any of its quantized readers' gates is on, as the
quantizer emits it. Sample by sample, the graph computes what the scalar-gated candidates (gated.py, gated_where.py)
compute for one probe at a time.

This needs every tensor a gate switches to carry the batch on its first axis; the builder returns None where a rank is
unknown, and the probe checks a tiled run against single runs before it relies on the graph (see probes.py)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from engine.diagnose.gated import AnyGate, BranchlessEdits, GatedModel
from engine.quantize.fallback_fp16 import fp16_capable

__all__ = ["gate_model_tiled", "tiled_gates", "TILE_AXIS"]

TILE_AXIS = "quantscope_tile"  # the gates' one dimension: the samples of a tiled run


def tiled_gates(gated: GatedModel, per_probe: Sequence[Mapping[str, np.ndarray]], samples: int) -> dict[str, np.ndarray]:
    """One vector a gate for a run holding `len(per_probe)` probes of `samples` samples each, in that order."""
    return {g: np.repeat(np.array([bool(p[g]) for p in per_probe], dtype=np.bool_), samples) for g in gated.gates}


def _ranks_and_floats(model: onnx.ModelProto) -> tuple[dict[str, int], set[str]]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    ranks, floats = {}, set()
    for v in list(inferred.value_info) + list(inferred.input) + list(inferred.output):
        t = v.type.tensor_type
        if t.HasField("shape"):
            ranks[v.name] = len(t.shape.dim)
        if t.elem_type == TensorProto.FLOAT:
            floats.add(v.name)
    return ranks, floats | {i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT}


def gate_model_tiled(reference: onnx.ModelProto, candidate: onnx.ModelProto, units: Sequence[Sequence[str]],
                     fp16: bool = False) -> GatedModel | None:
    """`candidate`: the run's Q/DQ model emitted with no fallback; `units`: groups of quantized node names; fp16: a unit
    gated off computes in FP16 as emission writes it (else in FP32). None where a switched tensor's rank is unknown."""
    e = BranchlessEdits(reference, candidate, units, [TILE_AXIS])
    ranks, float_tensors = _ranks_and_floats(candidate)
    counter = itertools.count()
    fresh = lambda base: f"{base}__qt{next(counter)}"  # noqa: E731
    any_gate = AnyGate(e.nodes, fresh)
    broadcast: dict[tuple[str, int], str] = {}

    def per_sample(gate: str, rank: int) -> str:
        """The gate shaped [tile, 1, ..., 1] to select whole samples of a rank-`rank` tensor."""
        if rank <= 1:
            return gate
        if (gate, rank) not in broadcast:
            axes = fresh(f"{gate}_axes{rank}")
            e.graph.initializer.append(numpy_helper.from_array(np.arange(1, rank, dtype=np.int64), axes))
            out = fresh(f"{gate}_r{rank}")
            e.nodes.append(helper.make_node("Unsqueeze", [gate, axes], [out], name=fresh("unsqueeze")))
            broadcast[(gate, rank)] = out
        return broadcast[(gate, rank)]

    for node in list(e.graph.node):
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            e.nodes.append(node)
            continue
        gate = e.gate_of_node.get(node.name)
        if gate is None:  # another reader of a dequantized tensor: quantized where any of its quantized readers is on
            for pos, name in enumerate(node.input):
                if name in e.gates_of_dq and (source := e.float_source(name, node.name, pos)) is not None:
                    if name not in ranks:
                        return None
                    out = fresh(f"{name}__tiled")
                    e.nodes.append(helper.make_node("Where", [per_sample(any_gate(e.gates_of_dq[name]), ranks[name]), name, source],
                                                    [out], name=fresh("where")))
                    node.input[pos] = out
            e.nodes.append(node)
            continue
        half = fp16 and fp16_capable(node)  # emission keeps the others in FP32, and so do we
        sources = e.fallback_sources(node, float_tensors, half)
        mixes, raws = [], {}
        for j, name in enumerate(node.output):
            if not name:
                continue
            if name not in ranks or name not in float_tensors:
                return None  # cannot take it sample by sample
            quantized, raws[j] = fresh(f"{name}__int8"), fresh(f"{name}__fallback")
            mixes.append(helper.make_node("Where", [per_sample(gate, ranks[name]), quantized, raws[j]], [name], name=fresh("where")))
            node.output[j] = quantized
        e.fallback_node(node, sources, raws, fresh(f"{node.name}_fallback"), half)  # FP16 Casts: see _topological
        e.nodes.extend([node, *mixes])
    available = {i.name for i in e.graph.input} | {i.name for i in e.graph.initializer}
    return e.gated(_topological(e.nodes, available))


def _topological(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Nodes ordered so each comes after what it reads (the rounding and mixing nodes were appended as they came)."""
    have = set(available) | {""}
    pending, out = list(nodes), []
    while pending:
        left = []
        for n in pending:
            if all(i in have for i in n.input):
                out.append(n)
                have.update(n.output)
            else:
                left.append(n)
        if len(left) == len(pending):  # a cycle or a missing input: keep the rest as they were (the checker says why)
            out.extend(left)
            break
        pending = left
    return out
