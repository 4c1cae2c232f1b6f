"""FP8 E4M3 explicit quantization: the same Q/DQ placement as INT8, with float8e4m3fn Q/DQ (ONNX opset 19), which
TensorRT runs on Hopper and later and ONNX Runtime runs as written.

The FP8 graph is written from the INT8 one, tensor for tensor: a symmetric INT8 scale is amax/127, the FP8 scale is
amax/448 (E4M3's largest finite value), zero points become float8 zeros, and weights are rounded to float8 from the
float reference weights (not from their INT8 codes, which would round twice)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper, version_converter

from engine.errors import ModelError

__all__ = ["to_fp8", "fp8_reference", "FP8_MAX", "FP8_OPSET"]

FP8_MAX = 448.0
INT8_MAX = 127.0
FP8_OPSET = 19


def _float8(values: np.ndarray) -> np.ndarray:
    import ml_dtypes

    return np.clip(values, -FP8_MAX, FP8_MAX).astype(ml_dtypes.float8_e4m3fn)


def fp8_reference(reference: onnx.ModelProto) -> onnx.ModelProto:
    """The reference at opset 19, where QuantizeLinear/DequantizeLinear take float8 (names and IR version kept)."""
    opset = next((o.version for o in reference.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset >= FP8_OPSET:
        return reference
    try:
        upgraded = version_converter.convert_version(reference, FP8_OPSET)
    except Exception as err:  # noqa: BLE001 - the converter raises bare RuntimeErrors
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ModelError(f"FP8 Q/DQ needs opset {FP8_OPSET}, and converting this model from opset {opset} failed ({first}); "
                         "the INT8 configurations are unaffected.", option="precision") from None
    for new, old in zip(upgraded.graph.node, reference.graph.node):  # the converter renames nodes; give the names back
        if list(new.output) == list(old.output):
            new.name = old.name
    upgraded.ir_version = reference.ir_version
    return upgraded


def to_fp8(int8: onnx.ModelProto, reference: onnx.ModelProto) -> onnx.ModelProto:
    """The FP8 E4M3 version of a symmetric INT8 Q/DQ graph (opset >= 19)."""
    model = onnx.ModelProto()
    model.CopyFrom(int8)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    ref_inits = {i.name: i for i in reference.graph.initializer}
    replaced: dict[str, onnx.TensorProto] = {}

    def put(name: str, array: np.ndarray) -> None:
        replaced[name] = numpy_helper.from_array(array, name)

    for node in g.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        data, scale_name, zero_name = node.input[0], node.input[1], node.input[2]
        if scale_name in inits and scale_name not in replaced:
            scale = numpy_helper.to_array(inits[scale_name]).astype(np.float32)
            put(scale_name, (scale * np.float32(INT8_MAX / FP8_MAX)).astype(np.float32))
        if zero_name in inits and zero_name not in replaced:
            put(zero_name, _float8(np.zeros(numpy_helper.to_array(inits[zero_name]).shape, np.float32)))
        if node.op_type == "DequantizeLinear" and data in inits and data not in replaced:  # a weight
            scale = numpy_helper.to_array(replaced[scale_name]).astype(np.float32)
            codes = numpy_helper.to_array(inits[data]).astype(np.float32)
            source = ref_inits.get(data.removesuffix("_quantized"))
            weight = numpy_helper.to_array(source).astype(np.float32) if source is not None else \
                codes * numpy_helper.to_array(inits[scale_name]).astype(np.float32).reshape(_shape(codes, scale, node))
            put(data, _float8(weight / scale.reshape(_shape(weight, scale, node))))
    kept = [replaced.get(i.name, i) for i in g.initializer]
    del g.initializer[:]
    g.initializer.extend(kept)
    return model


def _shape(values: np.ndarray, scale: np.ndarray, node: onnx.NodeProto) -> tuple[int, ...]:
    """Where a per-channel scale broadcasts against the weight (the DequantizeLinear's axis)."""
    if scale.size <= 1:
        return ()
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    shape = [1] * values.ndim
    shape[axis % values.ndim] = scale.size
    return tuple(shape)
