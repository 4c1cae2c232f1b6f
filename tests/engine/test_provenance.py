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


def test_an_opset_upgrade_that_expands_a_node_leaves_the_users_name_on_the_same_op():
    """Opset 12's Softmax over axis 1 of a 4-D tensor becomes Shape, Flatten, Softmax and Reshape at opset 13: the
    Reshape writing the Softmax's tensor took the user's name (PP-OCRv4's p2o.Softmax.0 became a Reshape in the
    downloaded model) and the Flatten was said to come from the node before it."""
    from engine.quantize.preprocess import preprocess

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="my.relu"),
             helper.make_node("Softmax", ["r"], ["y"], axis=1, name="my.softmax")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]), opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 8
    prepared = preprocess(model)
    ops = {n.name: n.op_type for n in prepared.model.graph.node}
    assert ops["my.softmax"] == "Softmax" and ops["my.relu"] == "Relu"
    for node in prepared.model.graph.node:  # every node the expansion added comes from the user's Softmax
        if node.name not in ("my.relu",):
            assert [o.name for o in prepared.provenance[node.name]] == ["my.softmax"], node.name
