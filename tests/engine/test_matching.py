"""Tensors are paired by exact name only: never by position, prefix or substring."""

from __future__ import annotations

from onnx import TensorProto, helper

from engine.compare.graph import observe


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
    view = observe(ref, cand)
    assert view.names == ["out"]
    assert view.missing_in_candidate == ("conv1", "b")


def test_same_names_in_other_order_pair_by_name():
    ref = _model(["a", "b", "c"])
    cand = _model(["b", "a", "c"])
    view = observe(ref, cand)
    assert view.names == ["a", "b", "c"]
    assert [t.node for t in view.tensors] == ["relu0", "relu1", "relu2"]  # the reference's nodes
