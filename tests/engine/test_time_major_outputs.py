"""An output whose axis 0 is not the batch: a CTC recogniser writes T x N x classes (ddddocr's captcha recogniser, batch
fixed at 1, declares [1, seqlen] and returns 32 x 1 x 8210). Its probes must score the whole output, not its first
time step: they once cut the cached reference to axis 0's first `batch` rows, paired nothing and ranked every node NaN."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine import compare


def _time_major_model() -> onnx.ModelProto:
    """x: 1 x 2 x 4 x W -> Conv -> ReduceMean(H) -> Transpose -> W x 1 x 4 -> MatMul -> W x 1 x 5 (time-major)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32) * 0.5
    fc = rng.standard_normal((4, 5)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("ReduceMean", ["r"], ["m"], name="mean_h", axes=[2], keepdims=0),
        helper.make_node("Transpose", ["m"], ["t"], name="time_major", perm=[2, 0, 1]),
        helper.make_node("MatMul", ["t", "fc"], ["y"], name="classes"),
    ]
    g = helper.make_graph(nodes, "ctc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, "w"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["t", 1, 5])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    return m


def test_a_time_major_output_is_ranked_on_all_its_time_steps(tmp_path):
    onnx.save(_time_major_model(), tmp_path / "ctc.onnx")
    x = np.random.default_rng(4).standard_normal((8, 2, 4, 16)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    result = compare(tmp_path / "ctc.onnx", tmp_path / "d.npz", out_dir=tmp_path / "run", batch_size=1, provider="cpu")
    s = result.summary
    assert s.ranking.method == "measured harm" and s.ranking.samples == 8  # two units: every unit on all 8 samples
    assert {c.node for c in s.culprits} == {"conv", "classes"}
    assert all(math.isfinite(c.alone_snr_db) and math.isfinite(c.gain_db) for c in s.culprits)
    # with every unit in INT8 the probe computes the candidate: the same final-output SNR the compare measured
    assert s.ranking.all_int8_snr_db == pytest.approx(result.final_output().snr_db, abs=0.01)
