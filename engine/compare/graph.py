"""What the comparison needs to know about the two graphs: which tensors to observe, who produces them,
and which nodes the candidate quantizes. Matching is by exact tensor name only."""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import TensorProto

__all__ = ["ObservedTensor", "GraphView", "observe", "fallback_candidates", "COPY_OPS"]


# ops whose output holds exactly the elements of their first input, in the same order
COPY_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


@dataclass(frozen=True)
class ObservedTensor:
    tensor: str
    node: str
    op_type: str
    node_inputs: tuple[str, ...]
    copy_of: str | None = None  # a reshape of this observed tensor in both graphs: its metrics are that tensor's


@dataclass(frozen=True)
class GraphView:
    tensors: tuple[ObservedTensor, ...]  # in the reference's topological order
    quantized_nodes: frozenset[str]  # fallback candidates: quantized op types reading a dequantized input
    missing_in_candidate: tuple[str, ...]  # reference tensors with no same-named tensor in the candidate
    outputs: tuple[str, ...]
    reads_quantized: frozenset[str] = frozenset()  # other nodes reading a dequantized tensor (a quantized skip branch)

    @property
    def names(self) -> list[str]:
        """The tensors the comparison marks and measures (reshapes of another observed tensor are not measured again)."""
        return [t.tensor for t in self.tensors if t.copy_of is None or t.tensor in self.outputs]

    def source_of(self, tensor: str) -> str:
        """The measured tensor whose metrics `tensor` has (itself, or what it is a reshape of)."""
        copies = {t.tensor: t.copy_of for t in self.tensors if t.copy_of is not None and t.tensor not in self.outputs}
        while tensor in copies:
            tensor = copies[tensor]
        return tensor


def _float_tensor_names(model: onnx.ModelProto) -> set[str]:
    g = model.graph
    known = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.output) + list(g.input)}
    if any(o not in known for n in g.node for o in n.output if o):
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False).graph
        for v in list(inferred.value_info) + list(inferred.output):
            known.setdefault(v.name, v.type.tensor_type.elem_type)
    return {name for name, t in known.items() if t == TensorProto.FLOAT}


def fallback_candidates(candidate: onnx.ModelProto, op_types) -> tuple[str, ...]:
    """The nodes whose fallback changes something: of the quantized op types, with a dequantized input; in graph order.
    Other nodes may read a dequantized tensor (an Add on a quantized skip branch), but excluding them removes nothing."""
    dq_outputs = {o for n in candidate.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    ops = set(op_types)
    return tuple(n.name for n in candidate.graph.node if n.op_type in ops and any(i in dq_outputs for i in n.input))


def observe(reference: onnx.ModelProto, candidate: onnx.ModelProto, op_types) -> GraphView:
    floats = _float_tensor_names(reference)
    cand_tensors = {o for n in candidate.graph.node for o in n.output}
    cand_inputs = {n.name: tuple(n.input) for n in candidate.graph.node}
    observed, missing = [], []
    seen: set[str] = set()
    for node in reference.graph.node:
        for out in node.output:
            if not out or out not in floats:
                continue
            if out not in cand_tensors:
                missing.append(out)
                continue
            # a reshape reading the same (unquantized) tensor in both graphs holds the same elements: measured once
            copy = node.input[0] if (node.op_type in COPY_OPS and node.input and node.input[0] in seen
                                     and cand_inputs.get(node.name, ())[:1] == (node.input[0],)) else None
            observed.append(ObservedTensor(out, node.name, node.op_type, tuple(i for i in node.input if i), copy))
            seen.add(out)
    quantized = frozenset(fallback_candidates(candidate, op_types))
    dq_outputs = {o for n in candidate.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    readers = frozenset(n.name for n in candidate.graph.node if n.name not in quantized
                        and n.op_type not in ("QuantizeLinear", "DequantizeLinear") and any(i in dq_outputs for i in n.input))
    return GraphView(tuple(observed), quantized, tuple(missing), tuple(o.name for o in reference.graph.output), readers)


