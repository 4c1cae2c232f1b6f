"""The gated candidate computes exactly what emission computes: one session answers every probe."""

from __future__ import annotations

import random

import numpy as np
import onnx
import pytest

from engine.backends.onnxrt import OnnxRuntimeBackend
from engine.compare.graph import fallback_candidates
from engine.diagnose.gated import gate_model
from engine.quantize.config import FallbackPrecision, QuantConfig
from engine.quantize.emit import emit_candidate
from tests.engine.conftest import SAMPLES


@pytest.fixture(scope="module")
def emitted(outlier_run):
    run = outlier_run.run_dir
    reference = onnx.load(run / "reference.onnx")

    def emit(fallback=frozenset(), precision=FallbackPrecision.FP32):
        cfg = QuantConfig().with_fallback(fallback, precision)
        return emit_candidate(reference, run / "reference.onnx", run / "calibration_cache.json", cfg).model

    return reference, emit


def _outputs(backend, model, feed):
    with backend.runner(model) as r:
        return r.infer(feed)["logits"]


def test_gates_reproduce_emission_bit_for_bit(emitted):
    reference, emit = emitted
    candidate = emit()
    nodes = fallback_candidates(candidate, QuantConfig().op_types)
    assert "block1_add" not in nodes and len(nodes) == 10  # the Add reading a dequantized skip branch is not a unit
    gated = gate_model(reference, candidate, [(n,) for n in nodes])
    assert sum(n.op_type == "If" for n in gated.model.graph.node) == 10 + 1  # one per unit, one for block1_add reading the quantized skip branch
    feed = {"input": np.load(SAMPLES / "digits_eval.npz")["input"][:16]}
    backend = OnnxRuntimeBackend("cpu")
    with backend.runner(gated.model) as g:
        def gated_out(fallback):
            return g.infer({**feed, **gated.feed(fallback)})["logits"]

        assert np.array_equal(gated_out(()), _outputs(backend, candidate, feed))
        assert np.array_equal(gated_out(nodes), _outputs(backend, reference, feed))
        rng = random.Random(0)
        for _ in range(4):
            fallback = frozenset(rng.sample(nodes, rng.randint(1, len(nodes) - 1)))
            assert np.array_equal(gated_out(fallback), _outputs(backend, emit(fallback), feed)), sorted(fallback)
        only = gated.feed_only(nodes.index("block3_2_conv"))
        assert np.array_equal(g.infer({**feed, **only})["logits"],
                              _outputs(backend, emit(frozenset(nodes) - {"block3_2_conv"}), feed))


def test_fp16_gates_reproduce_fp16_emission_bit_for_bit(emitted):
    """FP16 fallback as emission writes it, FP16 kernels and all: ONNX Runtime 1.32's CPU FP16 Conv rounds differently
    from FP32 arithmetic on FP16-rounded values (the emulation probes used before), which put ddddocr's recogniser's
    automatic fallback at 25.1 dB in probes and 21.7 dB in the build it emitted."""
    reference, emit = emitted
    candidate = emit()
    nodes = fallback_candidates(candidate, QuantConfig().op_types)
    gated = gate_model(reference, candidate, [(n,) for n in nodes], fp16=True)
    feed = {"input": np.load(SAMPLES / "digits_eval.npz")["input"][:16]}
    backend = OnnxRuntimeBackend("cpu")
    with backend.runner(gated.model) as g:
        rng = random.Random(1)
        for fallback in [frozenset(nodes), *(frozenset(rng.sample(nodes, rng.randint(1, len(nodes) - 1))) for _ in range(3))]:
            ours = g.infer({**feed, **gated.feed(fallback)})["logits"]
            assert np.array_equal(ours, _outputs(backend, emit(fallback, FallbackPrecision.FP16), feed)), sorted(fallback)



def test_fp16_probes_keep_what_emission_keeps_in_fp32():
    """A Resize unit (--op-types beyond the default four): emission keeps it in FP32 in an FP16 fallback (its scales are
    not one type T with its data), and every gated graph must too; converting it made ONNX Runtime refuse all three."""
    from onnx import TensorProto, helper, numpy_helper

    from engine.diagnose.gated_tiled import gate_model_tiled, tiled_gates
    from engine.diagnose.gated_where import gate_model_where

    def graph(nodes, inits):
        g = helper.make_graph(nodes, "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2, 8, 8])], inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 10
        return m

    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    resize = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="linear")
    reference = graph([resize], [scales])
    q = [numpy_helper.from_array(np.float32(0.05), "s"), numpy_helper.from_array(np.int8(0), "z")]
    candidate = graph([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="xq"),
                       helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="xd"),
                       helper.make_node("Resize", ["xd", "", "scales"], ["y"], name="up", mode="linear")], [scales, *q])
    feed = {"x": np.random.default_rng(8).standard_normal((3, 2, 4, 4)).astype(np.float32)}
    backend = OnnxRuntimeBackend("cpu")
    fp32, int8 = _outputs_named(backend, reference, feed, "y"), _outputs_named(backend, candidate, feed, "y")
    assert not np.array_equal(fp32, int8)
    for build in (gate_model, gate_model_where):
        gated = build(reference, candidate, [("up",)], fp16=True)
        with backend.runner(gated.model) as r:
            assert np.array_equal(r.infer({**feed, **gated.feed(["up"])})["y"], fp32), build.__name__
            assert np.array_equal(r.infer({**feed, **gated.feed([])})["y"], int8), build.__name__
    tiled = gate_model_tiled(reference, candidate, [("up",)], fp16=True)
    with backend.runner(tiled.model) as r:
        out = r.infer({"x": np.concatenate([feed["x"]] * 2), **tiled_gates(tiled, [tiled.feed(["up"]), tiled.feed([])], 3)})["y"]
    assert np.array_equal(out[:3], fp32) and np.array_equal(out[3:], int8)


def _outputs_named(backend, model, feed, name):
    with backend.runner(model) as r:
        return r.infer(feed)[name]
