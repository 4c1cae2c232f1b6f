"""FP16 fallback: the chosen nodes compute in float16, with casts at their boundaries.

Output tensors keep their names (the node writes `<name>__fp16`, a Cast restores `<name>` in float32),
so the layerwise comparison still pairs them by exact name. A runtime runs its own FP16 kernel where it has one (ONNX
Runtime 1.32's CPU has an FP16 Conv, which rounds differently from FP32 arithmetic on FP16-rounded values) and
otherwise inserts casts of its own. Probes (engine/diagnose/gated*.py) write the same nodes by the same rule."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["convert_nodes_to_fp16", "FP16_UNSAFE_OPS", "fp16_capable", "float_tensors"]

# Ops whose float inputs are not all of one type T (sizes, scales, quantization parameters...).
FP16_UNSAFE_OPS = frozenset({
    "Resize", "Upsample", "Cast", "CastLike", "QuantizeLinear", "DequantizeLinear", "Shape", "Size",
    "ConstantOfShape", "Range", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
    "NonMaxSuppression", "RoiAlign", "TopK", "Loop", "If", "Scan",
})


def fp16_capable(node: onnx.NodeProto) -> bool:
    """Whether FP16 fallback converts `node`; the others stay in FP32 (their float inputs are not all one type T)."""
    return node.op_type not in FP16_UNSAFE_OPS and node.domain in ("", "ai.onnx")


def float_tensors(model: onnx.ModelProto) -> set[str]:
    """The float32 tensors of `model` as shape inference types them, and its float32 initializers."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    out = {v.name for v in list(g.value_info) + list(g.input) + list(g.output)
           if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    return out | {i.name for i in g.initializer if i.data_type == TensorProto.FLOAT}


def convert_nodes_to_fp16(model: onnx.ModelProto, nodes: frozenset[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Rewrites `model` in place. Returns (nodes now in fp16, nodes left in fp32 because the op is unsafe)."""
    floats = float_tensors(model)
    inits = {i.name: i for i in model.graph.initializer}
    fp16_inits: dict[str, str] = {}
    half_of: dict[str, str] = {}  # float32 tensor -> its fp16 twin, for outputs of converted nodes
    new_nodes: list[onnx.NodeProto] = []
    done, kept = [], []
    for node in model.graph.node:
        if node.name not in nodes:
            new_nodes.append(node)
            continue
        if not fp16_capable(node):
            kept.append(node.name)
            new_nodes.append(node)
            continue
        for i, name in enumerate(node.input):
            if not name or name not in floats:
                continue
            if name in half_of:  # produced by a converted node: use its fp16 tensor, no cast round trip
                node.input[i] = half_of[name]
            elif name in inits:
                if name not in fp16_inits:
                    half = numpy_helper.from_array(numpy_helper.to_array(inits[name]).astype(np.float16), f"{name}__fp16")
                    model.graph.initializer.append(half)
                    fp16_inits[name] = half.name
                node.input[i] = fp16_inits[name]
            else:
                cast_out = f"{name}__to_fp16__{node.name}"
                new_nodes.append(helper.make_node("Cast", [name], [cast_out], name=f"{node.name}__cast_in{i}", to=TensorProto.FLOAT16))
                node.input[i] = cast_out
        casts = []
        for j, name in enumerate(node.output):
            if name and name in floats:
                node.output[j] = half_of[name] = f"{name}__fp16"
                casts.append(helper.make_node("Cast", [node.output[j]], [name], name=f"{node.name}__cast_out{j}", to=TensorProto.FLOAT))
        new_nodes.append(node)
        new_nodes.extend(casts)
        done.append(node.name)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    used = {i for n in model.graph.node for i in n.input}
    orphans = [i for i in model.graph.initializer if i.name not in used]
    for init in orphans:
        model.graph.initializer.remove(init)
    # value_info entries for renamed outputs would now lie about the type; drop them.
    keep = [v for v in model.graph.value_info if not v.name.endswith("__fp16")]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
    return tuple(done), tuple(kept)
