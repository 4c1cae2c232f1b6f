"""--fallback takes the names of the user's own file: an original node that was fused resolves to the node it became,
and one that became only non-quantized nodes is refused in one sentence that names what it became."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine import ConfigError, compare, rebuild


def _fused_model() -> onnx.ModelProto:
    """Conv 'stem' + BatchNormalization 'bn' (fused into the conv by pre-processing), an unnamed HardSwish (split into
    HardSigmoid + Mul) and a Conv 'head'."""
    rng = np.random.default_rng(0)
    arrays = {"w": rng.standard_normal((4, 2, 3, 3)), "w2": rng.standard_normal((4, 4, 1, 1)),
              "sc": np.abs(rng.standard_normal(4)) + 0.5, "b": rng.standard_normal(4), "mean": rng.standard_normal(4),
              "var": np.abs(rng.standard_normal(4)) + 0.5}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="stem", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "sc", "b", "mean", "var"], ["bn_out"], name="bn"),
             helper.make_node("HardSwish", ["bn_out"], ["h"]),
             helper.make_node("Conv", ["h", "w2"], ["y"], name="head")]
    g = helper.make_graph(nodes, "fused", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 8, 8])],
                          [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    return m


@pytest.fixture(scope="module")
def fused_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("fused")
    onnx.save(_fused_model(), d / "m.onnx")
    np.savez(d / "d.npz", x=np.random.default_rng(1).standard_normal((6, 2, 8, 8)).astype(np.float32))
    compare(d / "m.onnx", d / "d.npz", out_dir=d / "run", batch_size=2, provider="cpu")
    return d / "run"


def test_a_fused_original_node_falls_back_as_the_node_it_became(fused_run):
    assert rebuild(fused_run, fallback=["bn"]).summary.fp16_nodes == ("stem",)


def test_an_original_node_that_became_only_unquantized_nodes_names_them(fused_run):
    before = (fused_run / "summary.json").read_bytes()
    with pytest.raises(ConfigError) as err:
        rebuild(fused_run, fallback=["#2"])  # the unnamed HardSwish, by its index in the file
    assert str(err.value) == ("The node '#2' of your file became HardSigmoid_0+Mul_0 (HardSigmoid+Mul) in the compared graph, "
                              "which are not quantized, so falling it back would change nothing; "
                              "pick a Conv/ConvTranspose/Gemm/MatMul node from the ranking.")
    assert (fused_run / "summary.json").read_bytes() == before


def test_an_unknown_name_is_still_one_sentence(fused_run):
    with pytest.raises(ConfigError, match="'nope' is not in the compared graph"):
        rebuild(fused_run, fallback=["nope"])
