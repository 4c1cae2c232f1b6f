"""TensorRT backend: runs wherever `import tensorrt` works (and a GPU is there); skipped elsewhere."""

from __future__ import annotations

import json
import math

import pytest

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (import tensorrt fails)")

from engine import compare  # noqa: E402
from engine.backends.tensorrt import TensorRTBackend, trt_capabilities  # noqa: E402
from tests.engine.conftest import SAMPLES  # noqa: E402

pytestmark = pytest.mark.trt
KW = {"data": SAMPLES / "digits_eval.npz", "labels": SAMPLES / "digits_eval_labels.npy", "batch_size": 50}


def test_capabilities_are_read_from_the_real_module():
    caps = trt_capabilities()
    assert caps["version"] == trt.__version__
    assert TensorRTBackend().path in ("strongly-typed", "classic")


def test_tensorrt_finds_the_planted_node_and_saves_the_engine(tmp_path, catalog):
    out = tmp_path / "run"
    result = compare(SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", out_dir=out, provider="tensorrt", **KW)
    assert result.summary.backend.startswith("tensorrt-")
    assert result.summary.culprits[0].node in catalog["models"]["resnet_digits_outlier"]["outlier"]["consumer_nodes"]
    assert (out / "candidate.engine").stat().st_size > 0
    engine = json.loads((out / "summary.json").read_text())["engine"]
    assert engine["layers"] > 0 and engine["reformat_layers"] >= 0
    # observed tensors are never paired by position: every row is either measured or listed as not observable
    unobserved = set(result.summary.not_observable)
    for _, row in result.layers.iterrows():
        assert (row["tensor"] in unobserved) == math.isnan(row["snr_db"])


def test_tensorrt_final_output_agrees_with_onnxruntime(tmp_path):
    a = compare(SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", out_dir=tmp_path / "ort", provider="cpu", **KW)
    b = compare(SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", out_dir=tmp_path / "trt", provider="tensorrt", **KW)
    # TensorRT picks its own INT8 kernels; the same Q/DQ model must land within a dB of ORT's simulation
    assert abs(a.final_output().snr_db - b.final_output().snr_db) < 1.0
