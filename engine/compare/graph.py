"""What the comparison needs to know about the two graphs: which tensors to observe, who produces them,
and which nodes the candidate quantizes. Matching is by exact tensor name only."""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import TensorProto, helper

__all__ = ["ObservedTensor", "GraphView", "observe", "with_outputs"]


@dataclass(frozen=True)
class ObservedTensor:
    tensor: str
    node: str
    op_type: str
    node_inputs: tuple[str, ...]


@dataclass(frozen=True)
class GraphView:
    tensors: tuple[ObservedTensor, ...]  # in the reference's topological order
    quantized_nodes: frozenset[str]
    missing_in_candidate: tuple[str, ...]  # reference tensors with no same-named tensor in the candidate
    outputs: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        return [t.tensor for t in self.tensors]


def _float_tensor_names(model: onnx.ModelProto) -> set[str]:
    g = model.graph
    known = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.output) + list(g.input)}
    if any(o not in known for n in g.node for o in n.output if o):
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
        for v in list(inferred.value_info) + list(inferred.output):
            known.setdefault(v.name, v.type.tensor_type.elem_type)
    return {name for name, t in known.items() if t == TensorProto.FLOAT}


def _quantized_nodes(candidate: onnx.ModelProto) -> frozenset[str]:
    """A node is quantized when one of its inputs comes from a DequantizeLinear."""
    dq_outputs = {o for n in candidate.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return frozenset(n.name for n in candidate.graph.node
                     if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(i in dq_outputs for i in n.input))


def observe(reference: onnx.ModelProto, candidate: onnx.ModelProto) -> GraphView:
    floats = _float_tensor_names(reference)
    cand_tensors = {o for n in candidate.graph.node for o in n.output}
    observed, missing = [], []
    for node in reference.graph.node:
        for out in node.output:
            if not out or out not in floats:
                continue
            if out not in cand_tensors:
                missing.append(out)
                continue
            observed.append(ObservedTensor(out, node.name, node.op_type, tuple(i for i in node.input if i)))
    return GraphView(tuple(observed), _quantized_nodes(candidate), tuple(missing), tuple(o.name for o in reference.graph.output))


def with_outputs(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of `model` whose outputs are its own outputs plus `tensors` (marked as float32)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    present = {o.name for o in m.graph.output}
    for t in tensors:
        if t not in present:
            m.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
            present.add(t)
    return m
