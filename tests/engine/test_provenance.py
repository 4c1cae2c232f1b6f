"""Where each prepared node came from in the user's file: a node ONNX Runtime fused keeps the node it started from."""

from __future__ import annotations

from onnx import TensorProto, helper

from engine.model.provenance import provenance


def _graph(nodes):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y]))


def test_a_matmul_add_fusion_names_both_of_the_files_nodes():
    """Seen on MobileNetV3's classifier head: 'MatMul.0/MatMulAddFusion' was shown as coming from Add.8 only."""
    original = _graph([helper.make_node("MatMul", ["x", "w"], ["mm"], name="MatMul.0"),
                       helper.make_node("Add", ["mm", "b"], ["y"], name="Add.8")])
    prepared = _graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="MatMul.0/MatMulAddFusion")])
    origins = provenance(original, original, prepared)["MatMul.0/MatMulAddFusion"]
    assert [o.name for o in origins] == ["MatMul.0", "Add.8"]


def test_a_name_with_slashes_is_not_taken_for_a_fusion():
    """Exporters name nodes like '/model.2/cv1/conv/Conv': only a '...Fusion' suffix means ONNX Runtime fused it."""
    original = _graph([helper.make_node("Relu", ["x"], ["y"], name="/model.2/cv1/act/Relu")])
    prepared = _graph([helper.make_node("Relu", ["x"], ["y"], name="/model.2/cv1/act/Relu")])
    assert [o.name for o in provenance(original, original, prepared)["/model.2/cv1/act/Relu"]] == ["/model.2/cv1/act/Relu"]
