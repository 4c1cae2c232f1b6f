"""Whether the batch cache should keep the reference's tensors for rebuilds, or only the inputs.

Keeping them means writing every observed tensor of the FP32 model to disk during the compare and reading it back in
each rebuild; not keeping them means each rebuild runs the FP32 model again. Which costs less depends on how much
computing each stored byte takes: a convolutional network with large activations (MobileNetV3 at 224: about 5
multiply-accumulates per byte of observed tensors; YOLOv8n at 320: about 26) recomputes them faster than a disk
round trip, a transformer (hundreds of multiply-accumulates per byte) does not. Measured on the 2-core CPU: writing
MobileNetV3's 2.4 GB of tensors made a compare 4.5 s slower and its rebuild 1.3 s faster; YOLOv8n's, 4.8 s slower and
1.6 s faster."""

from __future__ import annotations

import math

import onnx

from engine.compare.memory_plan import static_shape

__all__ = ["REFERENCE_MACS_PER_BYTE", "macs_per_sample", "recompute_is_cheaper"]

# Below this, running the FP32 model again costs less than writing its tensors and reading them back (a few rebuilds
# a compare): about 0.045 ns a multiply-accumulate in ONNX Runtime against about 2 ns a byte written and read, measured
# on the 2-core CPU; a machine with faster compute than disk only moves the line further up.
REFERENCE_MACS_PER_BYTE = 32


def macs_per_sample(model: onnx.ModelProto, types: dict[str, onnx.TypeProto.Tensor]) -> int:
    """Multiply-accumulates of the Conv, ConvTranspose, MatMul and Gemm nodes for one sample (nodes whose shapes are
    unknown count nothing)."""
    def shape(name: str) -> tuple[int, ...] | None:
        return static_shape(types.get(name))

    total = 0
    for node in model.graph.node:
        if len(node.input) < 2 or not node.output:
            continue
        a, w, y = shape(node.input[0]), shape(node.input[1]), shape(node.output[0])
        if node.op_type == "Conv" and w and y:
            total += math.prod(y) * math.prod(w[1:])
        elif node.op_type == "ConvTranspose" and w and a:
            total += math.prod(a) * math.prod(w[1:])
        elif node.op_type in ("MatMul", "Gemm") and a and y:
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            k = a[0] if node.op_type == "Gemm" and trans_a else a[-1]
            total += math.prod(y) * k
    return total


def recompute_is_cheaper(model: onnx.ModelProto, types: dict[str, onnx.TypeProto.Tensor] | None,
                         observed_bytes_per_sample: int) -> bool:
    """Whether the reference (`types`: sample_types of it) computes fewer than REFERENCE_MACS_PER_BYTE multiply-accumulates
    per byte of its observed tensors. False where shapes are unknown (the cache then keeps them, as before this policy)."""
    if types is None or observed_bytes_per_sample <= 0:
        return False
    return macs_per_sample(model, types) < REFERENCE_MACS_PER_BYTE * observed_bytes_per_sample
