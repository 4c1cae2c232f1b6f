"""One candidate graph for every probe: each fallback unit's quantization is switched by a runtime input.

Every quantized node N becomes If(gate_N): the then-branch is N on its Q/DQ inputs (activation Q/DQ as emitted,
weights pre-dequantized as constants), the else-branch is N on the float inputs in its fallback precision (FP32, or
FP16 exactly as emission writes it: Casts to FP16, the node on FP16 weights, a Cast back, so the runtime's own FP16
kernels run it where it has them; ONNX Runtime 1.32's CPU FP16 Conv rounds differently from FP32 arithmetic on
FP16-rounded values, which put ddddocr's recogniser 3.4 dB away from its build). A tensor's other readers (an Add on a
quantized skip branch) read it through If(any gate of its quantized readers): quantized while one of them is, as the
quantizer emits it. Only the taken branch runs, so a unit that is off costs what its fallback node costs (in FP16, with
its Casts), and the float graph around the branches is optimized by the runtime as usual.

With every gate on the graph computes the all-INT8 candidate; with a unit's gate off it computes what a rebuild
with that unit in fallback emits (bit for bit, FP32 and FP16, at ORT's accuracy settings; see tests). So every isolated
probe (ranking, sensitivity, automatic fallback) runs in one session, with no re-emission."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from engine.model.graph_reads import drop_unread_qdq
from engine.quantize.fallback_fp16 import float_tensors, fp16_capable

__all__ = ["GatedModel", "gate_model", "GATE_PREFIX", "BranchlessEdits"]

GATE_PREFIX = "quantscope_gate_"


@dataclass(frozen=True)
class GatedModel:
    model: onnx.ModelProto
    units: tuple[tuple[str, ...], ...]  # fallback units in topological order; unit k is switched by gates[k]
    gates: tuple[str, ...]  # graph input names (bool scalars): True = quantized

    def feed(self, fallback: Iterable[str]) -> dict[str, np.ndarray]:
        """Gate values for a fallback set of node names: a unit is off when any of its nodes is in the set."""
        off = set(fallback)
        return {g: np.array(not (off & set(u)), dtype=np.bool_) for g, u in zip(self.gates, self.units)}

    def feed_off(self, gates: Iterable[str]) -> dict[str, np.ndarray]:
        """Gate values with exactly `gates` off (their units in fallback)."""
        off = set(gates)
        return {g: np.array(g not in off, dtype=np.bool_) for g in self.gates}

    def feed_only(self, k: int | None) -> dict[str, np.ndarray]:
        """Only unit k quantized (None: nothing quantized)."""
        return {g: np.array(i == k, dtype=np.bool_) for i, g in enumerate(self.gates)}


class AnyGate:
    """The gate of a tensor that several units' nodes read: on while any of their gates is (an Or of them, built once
    per set of gates). The Or nodes go to `nodes`; `name(base)` makes each new name unique in the graph."""

    def __init__(self, nodes: list[onnx.NodeProto], name: Callable[[str], str]) -> None:
        self.nodes, self.name = nodes, name
        self._built: dict[frozenset[str], str] = {}

    def __call__(self, gates: Iterable[str]) -> str:
        key = frozenset(gates)
        if len(key) == 1:
            return next(iter(key))
        if key not in self._built:
            ordered = sorted(key)
            acc = ordered[0]
            for other in ordered[1:]:
                out = self.name(f"{GATE_PREFIX}any")
                self.nodes.append(helper.make_node("Or", [acc, other], [out], name=self.name("or")))
                acc = out
            self._built[key] = acc
        return self._built[key]


class BranchlessEdits:
    """What the branchless gated builders (gated_where.py, gated_tiled.py) share: the copy of the candidate they edit,
    one gate input per unit, the float tensor a dequantized input stands for, FP16 copies of tensors and nodes, and the
    node list they build."""

    def __init__(self, reference: onnx.ModelProto, candidate: onnx.ModelProto, units: Sequence[Sequence[str]],
                 gate_shape: Sequence[int | str]) -> None:
        self.model = onnx.ModelProto()
        self.model.CopyFrom(candidate)
        self.graph = g = self.model.graph
        self.ref_inits = {i.name: i for i in reference.graph.initializer}
        self.ref_nodes = {n.name: n for n in reference.graph.node}
        self.inits = {i.name: i for i in g.initializer}
        self.q_input = {n.output[0]: n.input[0] for n in g.node if n.op_type == "QuantizeLinear"}
        self.dq_nodes = {n.output[0]: n for n in g.node if n.op_type == "DequantizeLinear"}
        self.units = tuple(tuple(u) for u in units)
        self.gates = tuple(f"{GATE_PREFIX}{k}" for k in range(len(self.units)))
        self.gate_of_node = {node: gate for gate, unit in zip(self.gates, self.units) for node in unit}
        for gate in self.gates:
            g.input.append(helper.make_tensor_value_info(gate, TensorProto.BOOL, list(gate_shape)))
        self.gates_of_dq: dict[str, set[str]] = {}  # a dequantized tensor -> the gates of the unit nodes that read it
        for node in g.node:
            if node.name in self.gate_of_node:
                for i in node.input:
                    if i in self.dq_nodes:
                        self.gates_of_dq.setdefault(i, set()).add(self.gate_of_node[node.name])
        self.nodes: list[onnx.NodeProto] = []
        self._half: dict[str, str] = {}

    def float_source(self, dq_out: str, node_name: str, position: int) -> str | None:
        """The float tensor a dequantized input of `node_name` stands for: the Q's input for an activation, the reference's
        float initializer (added to the graph) for a weight; None where there is none (it stays quantized)."""
        dq = self.dq_nodes[dq_out]
        if dq.input[0] in self.q_input:
            return self.q_input[dq.input[0]]
        ref = self.ref_nodes.get(node_name)
        if ref is not None and position < len(ref.input) and ref.input[position] in self.ref_inits:
            source = ref.input[position]
            if source not in self.inits:
                self.graph.initializer.append(self.ref_inits[source])
                self.inits[source] = self.ref_inits[source]
            return source
        return None

    def fp16(self, source: str) -> str:
        """`source` in FP16, as emission writes a fallback node's input (fallback_fp16.py): an initializer converted once,
        an activation through one Cast shared by its readers."""
        if source not in self._half:
            out = f"{source}__fp16"
            if source in self.inits:
                self.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(self.inits[source]).astype(np.float16), out))
            else:
                self.nodes.append(helper.make_node("Cast", [source], [out], name=f"{out}_to16", to=TensorProto.FLOAT16))
            self._half[source] = out
        return self._half[source]

    def fallback_sources(self, node: onnx.NodeProto, floats: set[str], half: bool) -> dict[int, str]:
        """Input position -> the float tensor a fallback copy of `node` reads: each dequantized input's float source and,
        in FP16, every other float input (a bias), which emission casts too; in FP16 a dequantized input without a
        float source stays dequantized and is cast like the rest."""
        sources = {}
        for pos, name in enumerate(node.input):
            if name in self.dq_nodes:
                source = self.float_source(name, node.name, pos) or (name if half else None)
            else:
                source = name if half and name and name in floats else None
            if source is not None:
                sources[pos] = source
        return sources

    def fallback_node(self, node: onnx.NodeProto, sources: dict[int, str], outputs: dict[int, str], name: str,
                      half: bool) -> None:
        """A copy of `node` on `sources` (input position -> float tensor; the other inputs as they are) writing `outputs`
        (position -> name): in FP32, or with `half` in FP16 with its outputs cast back to float32, as emission writes an
        FP16 fallback node."""
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = name
        for pos, source in sources.items():
            copy.input[pos] = self.fp16(source) if half else source
        for j, out in outputs.items():
            copy.output[j] = f"{out}__half" if half else out
        self.nodes.append(copy)
        if half:
            self.nodes.extend(helper.make_node("Cast", [copy.output[j]], [out], name=f"{out}_to32", to=TensorProto.FLOAT)
                              for j, out in outputs.items())

    def gated(self, nodes: Sequence[onnx.NodeProto] | None = None) -> GatedModel:
        """The edited model with `nodes` (default: the node list built) as its graph."""
        del self.graph.node[:]
        self.graph.node.extend(self.nodes if nodes is None else nodes)
        return GatedModel(self.model, self.units, self.gates)


def _dequantized(q: onnx.TensorProto, scale: onnx.TensorProto, zero: onnx.TensorProto | None, axis: int) -> np.ndarray:
    """DequantizeLinear of a constant, computed as ONNX Runtime computes it: (q - zero_point) * scale in float32."""
    qa = numpy_helper.to_array(q).astype(np.float32)
    s = numpy_helper.to_array(scale).astype(np.float32)
    z = numpy_helper.to_array(zero).astype(np.float32) if zero is not None else np.zeros_like(s)
    if s.ndim == 1 and s.size > 1:
        shape = [1] * qa.ndim
        shape[axis if axis >= 0 else qa.ndim + axis] = s.size
        s, z = s.reshape(shape), z.reshape(shape)
    return ((qa - z) * s).astype(np.float32)


class _Builder:
    def __init__(self, reference: onnx.ModelProto, candidate: onnx.ModelProto, fp16: bool) -> None:
        self.fp16 = fp16
        self.model = onnx.ModelProto()
        self.model.CopyFrom(candidate)
        g = self.model.graph
        self.ref_inits = {i.name: i for i in reference.graph.initializer}
        self.ref_nodes = {n.name: n for n in reference.graph.node}
        self.inits = {i.name: i for i in g.initializer}
        self.q_of = {n.output[0]: n for n in g.node if n.op_type == "QuantizeLinear"}
        self.dq_of = {n.output[0]: n for n in g.node if n.op_type == "DequantizeLinear"}
        self.floats = float_tensors(candidate) if fp16 else set()  # the inputs an FP16 fallback node casts
        self.counter = 0

    def name(self, base: str) -> str:
        self.counter += 1
        return f"{base}__qs{self.counter}"

    def activation_source(self, dq_out: str) -> str | None:
        """The float tensor a dequantized activation came from (the Q's input), or None for a constant."""
        dq = self.dq_of[dq_out]
        q = self.q_of.get(dq.input[0])
        return q.input[0] if q is not None else None

    def qdq_nodes(self, dq_out: str, out: str) -> list[onnx.NodeProto]:
        """The Q and DQ that produce `dq_out` from its float source, writing `out` (inside a branch)."""
        dq = self.dq_of[dq_out]
        q = self.q_of[dq.input[0]]
        q_out = self.name(f"{q.output[0]}")
        qn = helper.make_node("QuantizeLinear", [q.input[0], *q.input[1:]], [q_out], name=self.name(q.name))
        qn.attribute.extend(q.attribute)
        dn = helper.make_node("DequantizeLinear", [q_out, *dq.input[1:]], [out], name=self.name(dq.name))
        dn.attribute.extend(dq.attribute)
        return [qn, dn]

    def constant_dequantized(self, dq_out: str) -> np.ndarray:
        dq = self.dq_of[dq_out]
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        zero = self.inits.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
        return _dequantized(self.inits[dq.input[0]], self.inits[dq.input[1]], zero, axis)

    def half(self, nodes: list, inits: list, tensor: str) -> str:
        """`tensor` in FP16, inside a branch, as emission writes it (fallback_fp16.py): an initializer converted once, an
        activation through a Cast."""
        if tensor in self.ref_inits or tensor in self.inits:
            src = self.ref_inits.get(tensor) or self.inits[tensor]
            arr = numpy_helper.to_array(src)
            if arr.dtype != np.float32:
                return tensor
            name = self.name(f"{tensor}_fp16")
            inits.append(numpy_helper.from_array(arr.astype(np.float16), name))
            return name
        half = self.name(f"{tensor}_half")
        nodes.append(helper.make_node("Cast", [tensor], [half], name=self.name("to16"), to=TensorProto.FLOAT16))
        return half

    def branch_pair(self, node: onnx.NodeProto) -> tuple[onnx.GraphProto, onnx.GraphProto]:
        """then: `node` on its quantized inputs; else: `node` on float inputs (in FP16, as emission writes it, where asked)."""
        then_nodes, then_inits, else_nodes, else_inits = [], [], [], []
        then_in, else_in = [], []
        ref = self.ref_nodes.get(node.name)
        half = self.fp16 and fp16_capable(node)  # emission keeps the others in FP32 (fallback_fp16.py), and so do we
        for pos, name in enumerate(node.input):
            if name in self.dq_of:
                source = self.activation_source(name)
                if source is not None:
                    qdq = self.name(name)
                    then_nodes.extend(self.qdq_nodes(name, qdq))
                    then_in.append(qdq)
                    float_in = source
                else:  # a constant: the weight, dequantized once here
                    deq = self.name(f"{name}_const")
                    then_inits.append(numpy_helper.from_array(self.constant_dequantized(name), deq))
                    then_in.append(deq)
                    float_in = ref.input[pos] if ref is not None and pos < len(ref.input) else name
                    if float_in in self.ref_inits and float_in not in self.inits and not half:  # FP16: half() converts it
                        else_inits.append(self.ref_inits[float_in])
                else_in.append(self.half(else_nodes, else_inits, float_in) if half else float_in)
            else:
                then_in.append(name)
                else_in.append(self.half(else_nodes, else_inits, name) if half and name in self.floats else name)
        outputs = []
        for branch, inputs, nodes, inits in (("then", then_in, then_nodes, then_inits), ("else", else_in, else_nodes, else_inits)):
            out = self.name(f"{node.output[0]}_{branch}")
            copy = helper.make_node(node.op_type, inputs, [out], name=self.name(node.name), domain=node.domain)
            copy.attribute.extend(node.attribute)
            nodes.append(copy)
            if branch == "else" and half:  # the FP16 node's output back in float32, as emission's Cast restores it
                back = self.name(f"{node.output[0]}_fp32")
                nodes.append(helper.make_node("Cast", [out], [back], name=self.name("to32"), to=TensorProto.FLOAT))
                out = back
            outputs.append(helper.make_graph(nodes, self.name(f"{node.name}_{branch}"), [],
                                             [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits))
        return outputs[0], outputs[1]


def gate_model(reference: onnx.ModelProto, candidate: onnx.ModelProto, units: Sequence[Sequence[str]],
               fp16: bool = False) -> GatedModel:
    """`candidate`: the run's Q/DQ model emitted with no fallback; `units`: groups of quantized node names;
    fp16: a unit gated off computes in FP16 as emission writes it (else in FP32)."""
    b = _Builder(reference, candidate, fp16)
    g = b.model.graph
    gate_of: dict[str, str] = {}
    gates = []
    for k, unit in enumerate(units):
        gate = f"{GATE_PREFIX}{k}"
        gates.append(gate)
        g.input.append(helper.make_tensor_value_info(gate, TensorProto.BOOL, []))
        for n in unit:
            gate_of[n] = gate
    # which gates quantize each dequantized activation, for its other readers
    readers_gates: dict[str, set[str]] = {}
    for node in g.node:
        if node.name in gate_of:
            for i in node.input:
                if i in b.dq_of and b.activation_source(i) is not None:
                    readers_gates.setdefault(i, set()).add(gate_of[node.name])
    new_nodes: list[onnx.NodeProto] = []
    any_gate = AnyGate(new_nodes, b.name)
    shared: dict[str, str] = {}

    for node in g.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            new_nodes.append(node)
            continue
        if node.name in gate_of and len(node.output) == 1:
            then_g, else_g = b.branch_pair(node)
            new_nodes.append(helper.make_node("If", [gate_of[node.name]], [node.output[0]], name=b.name(f"{node.name}_if"),
                                              then_branch=then_g, else_branch=else_g))
            continue
        for pos, name in enumerate(node.input):  # another reader of a dequantized activation
            if name in readers_gates:
                if name not in shared:
                    qdq = b.name(name)
                    then_g = helper.make_graph(b.qdq_nodes(name, qdq), b.name("reader_then"), [],
                                               [helper.make_tensor_value_info(qdq, TensorProto.FLOAT, None)])
                    source = b.activation_source(name)
                    out = b.name(f"{source}_ident")
                    else_g = helper.make_graph([helper.make_node("Identity", [source], [out], name=b.name("ident"))],
                                               b.name("reader_else"), [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)])
                    shared[name] = b.name(f"{name}_gated")
                    new_nodes.append(helper.make_node("If", [any_gate(readers_gates[name])], [shared[name]], name=b.name("reader_if"),
                                                      then_branch=then_g, else_branch=else_g))
                node.input[pos] = shared[name]
        new_nodes.append(node)
    del g.node[:]
    g.node.extend(new_nodes)
    drop_unread_qdq(b.model)  # the branches carry their own Q/DQ
    return GatedModel(b.model, tuple(tuple(u) for u in units), tuple(gates))


