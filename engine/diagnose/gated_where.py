"""The branchless gated candidate, for runtimes where control flow costs more than computing both sides (a GPU, where
an If is a host round trip and a dozen small kernel launches, and an elementwise Where is one cheap kernel).

Each fallback unit's Q/DQ is switched by a runtime input.

Every input of a quantized node that comes from a DequantizeLinear becomes Where(gate, DQ output, float source),
where the float source is the Q's input (activations) or the reference's float initializer (weights). A tensor's
other consumers (an Add reading a dequantized skip branch) read it quantized while any quantized consumer of that
tensor is gated on, exactly as the quantizer emits it. With every gate on the graph computes the all-INT8 candidate
bit for bit; with a unit's gate off it computes that unit in its fallback precision: FP32, or FP16 as a runtime
without FP16 kernels runs it (every float input and the output rounded to FP16, arithmetic in FP32), which is what
ONNX Runtime CPU computes for the FP16 fallback that emission writes. So all isolated probes (sensitivity, ranking,
automatic fallback) run in one session, with no re-emission."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from engine.diagnose.gated import GATE_PREFIX, AnyGate, GatedModel

__all__ = ["gate_model_where"]


def gate_model_where(reference: onnx.ModelProto, candidate: onnx.ModelProto, units: Sequence[Sequence[str]],
                     fp16: bool = False) -> GatedModel:
    """`candidate`: the run's Q/DQ model emitted with no fallback; `units`: groups of quantized node names;
    fp16: a unit gated off computes on FP16-rounded values (else in FP32)."""
    model = onnx.ModelProto()
    model.CopyFrom(candidate)
    g = model.graph
    ref_inits = {i.name: i for i in reference.graph.initializer}
    ref_nodes = {n.name: n for n in reference.graph.node}
    q_input = {n.output[0]: n.input[0] for n in g.node if n.op_type == "QuantizeLinear"}
    dq_nodes = {n.output[0]: n for n in g.node if n.op_type == "DequantizeLinear"}
    gate_of_node: dict[str, str] = {}
    gates: list[str] = []
    for k, unit in enumerate(units):
        name = f"{GATE_PREFIX}{k}"
        gates.append(name)
        for node in unit:
            gate_of_node[node] = name
        g.input.append(helper.make_tensor_value_info(name, TensorProto.BOOL, []))

    def float_source(dq_out: str, node_name: str, position: int) -> str | None:
        dq = dq_nodes[dq_out]
        if dq.input[0] in q_input:  # an activation: Q -> DQ
            return q_input[dq.input[0]]
        ref = ref_nodes.get(node_name)  # a weight: the reference node reads the float initializer at the same position
        if ref is not None and position < len(ref.input) and ref.input[position] in ref_inits:
            return ref.input[position]
        return None

    # which gates quantize each dequantized tensor (for its other consumers)
    gates_of_dq: dict[str, set[str]] = {}
    for node in g.node:
        if node.name in gate_of_node:
            for i in node.input:
                if i in dq_nodes:
                    gates_of_dq.setdefault(i, set()).add(gate_of_node[node.name])

    added_inits: set[str] = set()
    existing = {i.name for i in g.initializer}
    inits = {i.name: i for i in g.initializer}
    float_tensors = _float_tensors(candidate) | {n for n, i in ref_inits.items() if i.data_type == TensorProto.FLOAT} if fp16 else set()
    new_nodes: list[onnx.NodeProto] = []
    ors = itertools.count()
    combined_gate = AnyGate(new_nodes, lambda base: f"{base}__or{next(ors)}")

    rounded: dict[str, str] = {}

    def fp16_rounded(source: str) -> str:
        """`source` rounded to FP16 and back: an initializer rounded once, an activation through two Casts."""
        if source not in rounded:
            out = f"{source}__fp16_rounded"
            if source in inits:
                half = numpy_helper.to_array(inits[source]).astype(np.float16).astype(np.float32)
                g.initializer.append(numpy_helper.from_array(half, out))
            else:
                new_nodes.append(helper.make_node("Cast", [source], [f"{out}__half"], name=f"{out}_to16", to=TensorProto.FLOAT16))
                new_nodes.append(helper.make_node("Cast", [f"{out}__half"], [out], name=f"{out}_to32", to=TensorProto.FLOAT))
            rounded[source] = out
        return rounded[source]

    for node in g.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            new_nodes.append(node)
            continue
        unit_gate = gate_of_node.get(node.name)
        for pos, name in enumerate(node.input):
            if name in dq_nodes:
                if unit_gate is not None:
                    gate = unit_gate
                elif name in gates_of_dq:
                    gate = combined_gate(gates_of_dq[name])
                else:
                    continue  # dequantized for nodes outside every unit: stays quantized
                source = float_source(name, node.name, pos)
                if source is None:
                    source = _source_of_shared(name, dq_nodes, q_input)
                    if source is None:
                        continue
                if source in ref_inits and source not in existing and source not in added_inits:
                    g.initializer.append(ref_inits[source])
                    added_inits.add(source)
                    inits[source] = ref_inits[source]
                if fp16 and unit_gate is not None:
                    source = fp16_rounded(source)
            elif fp16 and unit_gate is not None and name and name in float_tensors:
                gate, source = unit_gate, fp16_rounded(name)  # a float input without Q/DQ (a bias): rounded too
                out = f"{name}__gated_{node.name}_{pos}"
                new_nodes.append(helper.make_node("Where", [gate, name, source], [out], name=f"{out}_where"))
                node.input[pos] = out
                continue
            else:
                continue
            out = f"{name}__gated_{node.name}_{pos}"
            new_nodes.append(helper.make_node("Where", [gate, name, source], [out], name=f"{out}_where"))
            node.input[pos] = out
        new_nodes.append(node)
        if fp16 and unit_gate is not None:  # the FP16 node's output, rounded, where its gate is off
            for j, name in enumerate(node.output):
                if name and name in float_tensors:
                    raw = f"{name}__gated_raw"
                    node.output[j] = raw
                    half = fp16_rounded(raw)
                    new_nodes.append(helper.make_node("Where", [unit_gate, raw, half], [name], name=f"{name}__gated_out"))
    del g.node[:]
    g.node.extend(new_nodes)
    return GatedModel(model, tuple(tuple(u) for u in units), tuple(gates))


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
    out = {v.name for v in list(inferred.value_info) + list(inferred.input) + list(inferred.output)
           if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    return out | {i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT}


def _source_of_shared(dq_out: str, dq_nodes: dict, q_input: dict) -> str | None:
    dq = dq_nodes[dq_out]
    return q_input.get(dq.input[0])
