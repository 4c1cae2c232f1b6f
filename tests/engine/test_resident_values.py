"""Values kept in a runner's own memory (what a probe on a GPU feeds run after run): overwritten in place when reused,
fed without a copy, on the CPU device here (the same runner class binds CUDA memory on a GPU)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from engine.backends.onnxrt import OnnxRuntimeBackend
from engine.quantize.preprocess import MAX_IR_VERSION


def _where_model() -> onnx.ModelProto:
    g = helper.make_graph([helper.make_node("Where", ["gate", "a", "b"], ["y"])], "w",
                          [helper.make_tensor_value_info("gate", TensorProto.BOOL, []),
                           helper.make_tensor_value_info("a", TensorProto.FLOAT, [2]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=MAX_IR_VERSION)


def test_a_reused_value_is_overwritten_in_place_and_fed_as_it_is():
    a, b = np.array([1.0, 2.0], np.float32), np.array([3.0, 4.0], np.float32)
    with OnnxRuntimeBackend("cpu").runner(_where_model(), on_device=True) as runner:
        data = runner.resident({"a": a, "b": b})
        gates = runner.resident({"gate": np.array(True)})
        first = runner.infer({**data, **gates})["y"].numpy().copy()
        again = runner.resident({"gate": np.array(False)}, reuse=gates)
        assert again["gate"] is gates["gate"]  # the same value, so a binding made with it stays valid
        second = runner.infer({**data, **again})["y"].numpy()
        grown = runner.resident({"gate": np.array([True, False])}, reuse=gates)  # another shape: a new value
        assert grown["gate"] is not gates["gate"]
    np.testing.assert_array_equal(first, a)
    np.testing.assert_array_equal(second, b)
