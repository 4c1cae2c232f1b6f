"""Graph edits that only add outputs (how ONNX Runtime exposes intermediate tensors)."""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import TensorProto, helper

__all__ = ["with_outputs"]


def with_outputs(model: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    """A copy of `model` whose outputs are its own outputs plus `tensors` (marked as float32)."""
    if not tensors:
        return model
    m = onnx.ModelProto()
    m.CopyFrom(model)
    present = {o.name for o in m.graph.output}
    for t in tensors:
        if t not in present:
            m.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
            present.add(t)
    return m
