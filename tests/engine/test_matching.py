"""Tensors are paired by exact name only: never by position, prefix or substring."""

from __future__ import annotations

from onnx import TensorProto, helper

from engine.compare.graph import observe
from engine.quantize import TRT_INT8_OP_TYPES
from tests.engine.fakes import FakeBackend


def _model(names):
    nodes, prev = [], "x"
    for i, n in enumerate(names):
        nodes.append(helper.make_node("Relu", [prev], [n], name=f"relu{i}"))
        prev = n
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 4])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_renamed_or_substring_tensors_are_not_paired():
    ref = _model(["conv1", "b", "out"])
    cand = _model(["conv10", "b_renamed", "out"])  # same positions, similar names
    view = observe(ref, cand, TRT_INT8_OP_TYPES)
    assert view.names == ["out"]
    assert view.missing_in_candidate == ("conv1", "b")


def test_same_names_in_other_order_pair_by_name():
    ref = _model(["a", "b", "c"])
    cand = _model(["b", "a", "c"])
    view = observe(ref, cand, TRT_INT8_OP_TYPES)
    assert view.names == ["a", "b", "c"]
    assert [t.node for t in view.tensors] == ["relu0", "relu1", "relu2"]  # the reference's nodes


def test_tensors_a_backend_does_not_return_are_not_observable_never_paired():
    """A backend that fuses a tensor away (TensorRT) simply does not return it: it is listed, not paired."""
    import numpy as np

    from engine.compare.layerwise import run_layerwise

    ref, cand = _model(["a", "b", "out"]), _model(["a", "b", "out"])
    view = observe(ref, cand, TRT_INT8_OP_TYPES)

    def fusing(feed, observing, model):
        x = np.maximum(feed["x"], 0)
        return {"a": x, "out": x + (0.01 if model is cand else 0.0)}  # "b" fused away

    x = np.ones((1, 4), np.float32)
    pairs = iter([({"x": x}, {"a": x, "b": x, "out": x})])
    lw = run_layerwise(view, ref, cand, FakeBackend(fusing), pairs, 1)
    assert lw.unobservable == ("b",)
    row = lw.layers.set_index("tensor").loc["b"]
    assert np.isnan(row["snr_db"]) and np.isnan(row["cosine"])
    assert lw.layers.set_index("tensor").loc["a", "snr_db"] == float("inf")
