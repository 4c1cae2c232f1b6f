"""The branchless gated candidate, for runtimes where control flow costs more than computing both sides (a GPU, where
an If is a host round trip and a dozen small kernel launches, and an elementwise Where is one cheap kernel).

Each fallback unit's Q/DQ is switched by a runtime input.

Every input of a quantized node that comes from a DequantizeLinear becomes Where(gate, DQ output, float source),
where the float source is the Q's input (activations) or the reference's float initializer (weights). A tensor's
other consumers (an Add reading a dequantized skip branch) read it quantized while any quantized consumer of that
tensor is gated on, exactly as the quantizer emits it. With every gate on the graph computes the all-INT8 candidate
bit for bit; with a unit's gate off it computes that unit in its fallback precision: FP32, or FP16 as emission writes
it (a second copy of the node on FP16 inputs and weights, its output cast back and chosen by a Where, so the runtime's
own FP16 kernels run it). So all isolated probes (sensitivity, ranking, automatic fallback) run in one session, with
no re-emission."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import onnx
from onnx import TensorProto, helper

from engine.diagnose.gated import AnyGate, BranchlessEdits, GatedModel
from engine.quantize.fallback_fp16 import float_tensors, fp16_capable

__all__ = ["gate_model_where"]


def gate_model_where(reference: onnx.ModelProto, candidate: onnx.ModelProto, units: Sequence[Sequence[str]],
                     fp16: bool = False) -> GatedModel:
    """`candidate`: the run's Q/DQ model emitted with no fallback; `units`: groups of quantized node names;
    fp16: a unit gated off computes in FP16 as emission writes it (else in FP32)."""
    e = BranchlessEdits(reference, candidate, units, [])
    floats = float_tensors(candidate) | {n for n, i in e.ref_inits.items() if i.data_type == TensorProto.FLOAT} if fp16 else set()
    ors = itertools.count()
    combined_gate = AnyGate(e.nodes, lambda base: f"{base}__or{next(ors)}")

    for node in list(e.graph.node):
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            e.nodes.append(node)
            continue
        unit_gate = e.gate_of_node.get(node.name)
        if fp16 and unit_gate is not None and fp16_capable(node):  # emission keeps the others in FP32, and so do we
            _fp16_pair(e, node, unit_gate, floats)
            continue
        for pos, name in enumerate(node.input):
            if name not in e.dq_nodes:
                continue
            if unit_gate is not None:
                gate = unit_gate
            elif name in e.gates_of_dq:
                gate = combined_gate(e.gates_of_dq[name])
            else:
                continue  # dequantized for nodes outside every unit: stays quantized
            source = e.float_source(name, node.name, pos)
            if source is None:
                continue
            out = f"{name}__gated_{node.name}_{pos}"
            e.nodes.append(helper.make_node("Where", [gate, name, source], [out], name=f"{out}_where"))
            node.input[pos] = out
        e.nodes.append(node)
    return e.gated()


def _fp16_pair(e: BranchlessEdits, node: onnx.NodeProto, gate: str, floats: set[str]) -> None:
    """A unit node whose fallback is FP16: the node on its quantized inputs, and beside it the node in FP16 on the float
    sources as emission writes it (Casts, FP16 weights, a Cast back), selected by the gate. Both run; a runtime's FP16
    kernels round differently from FP32 arithmetic on FP16-rounded values (ddddocr's recogniser: 3.4 dB apart)."""
    sources = e.fallback_sources(node, floats, half=True)
    # every output: a quantized op type writes float (one left out would have two producers)
    outputs = {j: f"{name}__fp16_fallback" for j, name in enumerate(node.output) if name}
    e.fallback_node(node, sources, outputs, f"{node.name}__fp16_fallback", half=True)
    for j, half in outputs.items():
        name = node.output[j]
        node.output[j] = f"{name}__gated_int8"
        e.nodes.append(helper.make_node("Where", [gate, node.output[j], half], [name], name=f"{name}__gated_out"))
    e.nodes.insert(len(e.nodes) - len(outputs), node)  # before the Wheres that read it

