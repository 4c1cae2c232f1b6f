"""A small model where the old introduced-noise ranking points at the wrong nodes (issue #11's failure, in miniature).

    x (channel 0 is 12x the others: the early conv's INT8 input is coarse, a mild error)
    -> early_conv -> Relu -> two 1x1 convs -> Mul (the two noisy branches multiply: noise amplified)
    -> Add (residual) -> mid_conv -> Mul(d, d) -> pool -> fc  (the main path)
    -> Mul by a 400x channel spike -> late_conv -> pool -> late_fc -> x0.02 (a late branch that barely reaches y)
The early conv's small error is amplified all the way to y; mid_conv adds more noise in absolute terms at its own
output (so introduced noise ranks it above early_conv) but falling it back gains little; the Mul of the late branch,
not quantized, tops the introduced-noise list."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["amplified_model", "amplified_data"]


def amplified_model(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)

    def w(shape):
        return (rng.standard_normal(shape) / np.sqrt(int(np.prod(shape[1:])))).astype(np.float32)

    inits = {"wa": w((8, 4, 3, 3)), "wb": w((8, 8, 1, 1)), "wc": w((8, 8, 1, 1)), "wd": w((8, 8, 3, 3)),
             "wl": w((8, 8, 1, 1)), "fc": w((5, 8)), "late_gain": np.array(0.02, np.float32),
             "spike": np.ones((1, 8, 1, 1), np.float32)}
    inits["spike"][0, 0] = 400.0
    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], name="early_conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ar"], name="early_relu"),
        helper.make_node("Conv", ["ar", "wb"], ["b1"], name="branch1_conv"),
        helper.make_node("Conv", ["ar", "wc"], ["b2"], name="branch2_conv"),
        helper.make_node("Mul", ["b1", "b2"], ["m"], name="gate_mul"),
        helper.make_node("Add", ["m", "ar"], ["r"], name="residual_add"),
        helper.make_node("Conv", ["r", "wd"], ["d"], name="mid_conv", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["d", "d"], ["dd"], name="square_mul"),
        helper.make_node("GlobalAveragePool", ["dd"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc"], ["main"], name="fc", transB=1),
        helper.make_node("Mul", ["r", "spike"], ["rs"], name="late_spike"),
        helper.make_node("Conv", ["rs", "wl"], ["l"], name="late_conv"),
        helper.make_node("GlobalAveragePool", ["l"], ["lp"], name="late_pool"),
        helper.make_node("Flatten", ["lp"], ["lf"], name="late_flatten"),
        helper.make_node("Gemm", ["lf", "fc"], ["lg"], name="late_fc", transB=1),
        helper.make_node("Mul", ["lg", "late_gain"], ["ls"], name="late_scale"),
        helper.make_node("Add", ["main", "ls"], ["y"], name="out_add"),
    ]
    g = helper.make_graph(nodes, "amplified", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def amplified_data(n: int = 64, seed: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 4, 8, 8)).astype(np.float32)
    x[:, 0] *= 12.0
    return x
