"""A fallback set applied by graph surgery to the all-INT8 graph computes, bit for bit, what ONNX Runtime's
quantize_static writes with nodes_to_exclude (a rebuild no longer runs the quantizer)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import onnx
import pytest

from engine import compare
from engine.backends.onnxrt import OnnxRuntimeBackend
from engine.compare.graph import fallback_candidates
from engine.quantize.config import QuantConfig
from engine.quantize.emit import apply_fallback, quantize_all
from tests.engine.amplified_model import amplified_data, amplified_model
from tests.engine.conftest import SAMPLES

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_squeezenet.onnx"


def _cases(tmp_path, outlier_run):
    yield "sample", outlier_run.run_dir, {"input": np.load(SAMPLES / "digits_eval.npz")["input"][:8]}
    onnx.save(amplified_model(), tmp_path / "amp.onnx")
    np.savez(tmp_path / "amp.npz", x=amplified_data(16))
    compare(tmp_path / "amp.onnx", tmp_path / "amp.npz", out_dir=tmp_path / "amp", batch_size=8, provider="cpu", screen_samples=0)
    yield "amplified", tmp_path / "amp", {"x": amplified_data(8, seed=5)}
    if LIGHT.is_file():  # a model-zoo graph nobody here wrote (SqueezeNet)
        x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
        np.savez(tmp_path / "sq.npz", data_0=x)
        compare(LIGHT, tmp_path / "sq.npz", out_dir=tmp_path / "sq", batch_size=1, provider="cpu", screen_samples=0)
        yield "squeezenet", tmp_path / "sq", {"data_0": x[:1]}


def test_surgery_equals_quantize_static_with_exclusions(tmp_path, outlier_run):
    backend = OnnxRuntimeBackend("cpu")
    config = QuantConfig()
    seen = []
    for name, run, feed in _cases(tmp_path, outlier_run):
        reference = onnx.load(run / "reference.onnx")
        base = quantize_all(reference, run / "reference.onnx", run / "calibration_cache.json", config)
        nodes = list(fallback_candidates(base, config.op_types))
        rng = random.Random(1)
        for k in (1, len(nodes) // 2, len(nodes)):
            fallback = frozenset(rng.sample(nodes, k))
            want = quantize_all(reference, run / "reference.onnx", run / "calibration_cache.json", config, exclude=fallback)
            got = apply_fallback(base, reference, fallback, config.op_types)
            assert sorted(n.op_type for n in got.graph.node) == sorted(n.op_type for n in want.graph.node), (name, k)
            with backend.runner(want) as a, backend.runner(got) as b:
                wa, ga = a.infer(feed), b.infer(feed)
            for o in wa:
                assert np.array_equal(wa[o], ga[o]), (name, sorted(fallback), o)
        seen.append(name)
    assert seen[:2] == ["sample", "amplified"]


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_a_rebuild_does_not_run_the_quantizer(outlier_run, tmp_path, monkeypatch, precision):
    import shutil

    import engine.quantize.emit as emit
    from engine import rebuild

    run = tmp_path / "run"
    shutil.copytree(outlier_run.run_dir, run, ignore=shutil.ignore_patterns("history"))
    rebuild(run, fallback=["stem_conv"], fallback_precision=precision)  # writes candidate_int8.onnx if missing
    monkeypatch.setattr(emit, "quantize_all", lambda *a, **k: pytest.fail("the quantizer ran again"))
    again = rebuild(run, fallback=["block3_2_conv"])
    assert again.summary.fallback == ("block3_2_conv",)


def _model_with_an_if() -> onnx.ModelProto:
    """MatMul 'mm', then an If whose branches read the main graph's initializer 'c' (post-processing as detectors
    write it)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    then = helper.make_graph([helper.make_node("Add", ["y", "c"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, ["n", 3])])
    other = helper.make_graph([helper.make_node("Sub", ["y", "c"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, ["n", 3])])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
             helper.make_node("ReduceSum", ["y"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["out"], name="post", then_branch=then, else_branch=other)]
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.arange(3, dtype=np.float32), "c"), numpy_helper.from_array(np.float32(0), "zero")]
    g = helper.make_graph(nodes, "if", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 3])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    return m


def test_a_fallback_keeps_what_only_a_subgraph_reads(tmp_path):
    from engine import rebuild

    onnx.save(_model_with_an_if(), tmp_path / "if.onnx")
    x = np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    compare(tmp_path / "if.onnx", tmp_path / "d.npz", out_dir=tmp_path / "run", batch_size=4, provider="cpu", screen_samples=0)
    result = rebuild(tmp_path / "run", fallback=["mm"], fallback_precision="fp32")  # 'c' is read only inside the If's branches
    assert result.summary.fallback == ("mm",)
    with OnnxRuntimeBackend("cpu").runner(onnx.load(tmp_path / "run" / "candidate.onnx")) as r:
        got = r.infer({"x": x[:4]})["out"]
    y = x[:4] @ onnx.numpy_helper.to_array(_model_with_an_if().graph.initializer[0])
    np.testing.assert_allclose(got, y + np.arange(3) if y.sum() > 0 else y - np.arange(3), rtol=1e-5, atol=1e-5)


def test_emission_keeps_onnx_runtimes_scratch_file_out_of_the_run_folder(outlier_run, monkeypatch):
    """quantize_static writes '<model>-inferred.onnx' beside the model it is given: two emissions from one reference at
    once (a sweep's configurations on Ray) would overwrite and delete each other's."""
    written = []
    real = onnx.shape_inference.infer_shapes_path

    def spy(model_path, output_path="", *a, **k):
        written.append(Path(output_path or model_path))
        return real(model_path, output_path, *a, **k)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes_path", spy)
    run = outlier_run.run_dir
    quantize_all(onnx.load(run / "reference.onnx"), run / "reference.onnx", run / "calibration_cache.json", QuantConfig())
    assert written and all(p.parent != run and p.name.endswith("-inferred.onnx") for p in written)
    assert not list(run.glob("*-inferred.onnx"))


def test_a_half_written_all_int8_base_is_emitted_again(outlier_run, tmp_path):
    import shutil

    from engine import rebuild
    from engine.runs import RunFolder

    run = tmp_path / "run"
    shutil.copytree(outlier_run.run_dir, run)
    base = RunFolder(run).int8_base
    rebuild(run, fallback=["block3_2_conv"])  # writes the base and its key
    want = base.read_bytes()
    base.write_bytes(want[: len(want) // 3])  # killed mid-write, its key still in place
    assert rebuild(run, fallback=["block1_1_conv"]).summary.fallback == ("block1_1_conv",)
    assert base.read_bytes() == want  # emitted again, identical


def test_opset_imports_no_node_uses_are_dropped_from_the_emitted_model():
    """ONNX Runtime's optimizer declares every domain it knows; YOLOv8n's download carried eight unused ones."""
    from onnx import TensorProto, helper

    from engine.quantize.emit import drop_unused_opsets

    inner = helper.make_graph([helper.make_node("FusedGemm", ["a", "a"], ["b"], domain="com.microsoft")], "then", [],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])])
    other = helper.make_graph([helper.make_node("Identity", ["a"], ["c"])], "else", [],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1])])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["a"]),
                           helper.make_node("If", ["cond"], ["y"], then_branch=inner, else_branch=other)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
                           helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 5),
                                            helper.make_opsetid("com.microsoft", 1), helper.make_opsetid("org.pytorch.aten", 1)])
    drop_unused_opsets(m)
    assert [(o.domain, o.version) for o in m.opset_import] == [("", 17), ("com.microsoft", 1)]  # the subgraph's kept
