from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine import compare

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"


def tiny_model() -> onnx.ModelProto:
    """Conv -> Relu -> Conv -> Add(skip) -> GlobalAveragePool -> Flatten -> Gemm, some nodes unnamed."""
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((4, 2, 3, 3)).astype(np.float32) * 0.5
    w2 = rng.standard_normal((4, 4, 1, 1)).astype(np.float32) * 0.5
    fc = rng.standard_normal((3, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),  # unnamed: gets a generated name
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("Add", ["c2", "r1"], ["a"], name="add"),
        helper.make_node("GlobalAveragePool", ["a"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fc"], ["y"], name="fc", transB=1),
    ]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
                          [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (fc, "fc"))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    return m


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    onnx.save(tiny_model(), d / "tiny.onnx")
    x = np.random.default_rng(2).standard_normal((10, 2, 8, 8)).astype(np.float32)
    np.savez(d / "data.npz", x=x)
    return d


@pytest.fixture(scope="session")
def outlier_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("outlier") / "run"
    result = compare(SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", data=SAMPLES / "digits_eval.npz",
                     labels=SAMPLES / "digits_eval_labels.npy", out_dir=out, batch_size=25)
    return result


@pytest.fixture()
def run_copy(outlier_run, tmp_path):
    """A copy of the outlier run's folder (no history) that a test may rebuild or probe freely."""
    dst = tmp_path / "run"
    shutil.copytree(outlier_run.run_dir, dst, ignore=shutil.ignore_patterns("history"))
    return dst


@pytest.fixture(scope="session")
def clean_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "run"
    return compare(SAMPLES / "resnet_digits.onnx", SAMPLES / "digits_calib.npz", data=SAMPLES / "digits_eval.npz",
                   labels=SAMPLES / "digits_eval_labels.npy", out_dir=out, batch_size=25)


@pytest.fixture()
def no_calibration(monkeypatch):
    """Every way QuantScope or ONNX Runtime could calibrate raises: the pipeline's calibrate() and ORT's calibrator
    factory, in both modules that call it. test_the_no_calibration_fixture_catches_a_calibration proves it can fail."""
    import sys

    import onnxruntime.quantization.calibrate as ort_calibrate

    import engine.pipeline as pipeline

    def forbidden(*a, **k):
        raise AssertionError("this must not recalibrate")

    monkeypatch.setattr(pipeline, "calibrate", forbidden)
    monkeypatch.setattr(ort_calibrate, "create_calibrator", forbidden)
    monkeypatch.setattr(sys.modules["onnxruntime.quantization.quantize"], "create_calibrator", forbidden)


@pytest.fixture(scope="session")
def all_int8(outlier_run):
    """(reference, the all-INT8 candidate, its fallback units one node each) of the outlier run: what gated graphs start from."""
    from engine.compare.graph import fallback_candidates
    from engine.quantize.config import QuantConfig
    from engine.quantize.emit import quantize_all

    run = outlier_run.run_dir
    reference = onnx.load(run / "reference.onnx")
    candidate = quantize_all(reference, run / "reference.onnx", run / "calibration_cache.json", QuantConfig())
    return reference, candidate, [(n,) for n in fallback_candidates(candidate, QuantConfig().op_types)]
