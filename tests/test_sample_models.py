"""The committed sample models are what catalog.json says they are."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

MODELS = ["resnet_digits", "resnet_digits_outlier"]


def run(path, x, extra_outputs=(), basic=True):
    m = onnx.load(path)
    for t in extra_outputs:
        m.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    if basic:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=["WeightBiasQuantization"])  # as QuantScope runs Q/DQ: float bias
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x})))


@pytest.mark.parametrize("name", MODELS)
def test_model_matches_catalog(catalog, samples, eval_data, name):
    entry = catalog["models"][name]
    path = samples / entry["file"]
    assert path.stat().st_size <= 5 * 1024**2
    model = onnx.load(path)
    onnx.checker.check_model(model)
    assert model.ir_version == 10 == entry["ir_version"]
    assert model.opset_import[0].version >= 13
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Add") >= 3 and "BatchNormalization" in ops and "GlobalAveragePool" in ops and "Gemm" in ops
    x, y = eval_data
    assert len(np.load(samples / entry["calibration"])["input"]) >= 128
    logits = run(path, x)["logits"]
    acc = float((logits.argmax(1) == y).mean())
    assert acc >= 0.95
    assert abs(acc - entry["fp32_accuracy"]) <= 0.005


def test_outlier_model_is_fp32_identical(samples, eval_data):
    x, _ = eval_data
    clean = run(samples / "resnet_digits.onnx", x)["logits"]
    planted = run(samples / "resnet_digits_outlier.onnx", x)["logits"]
    assert np.abs(clean - planted).max() < 1e-4


def test_outlier_channel_range_is_planted(catalog, samples):
    info = catalog["models"]["resnet_digits_outlier"]["outlier"]
    x = np.load(samples / "digits_calib.npz")["input"]
    acts = run(samples / "resnet_digits_outlier.onnx", x, [info["tensor"]])[info["tensor"]]
    per_channel = acts.max(axis=(0, 2, 3))
    others = np.delete(per_channel, info["channel"]).max()
    assert 50 <= per_channel[info["channel"]] / others <= 100


class _Reader(CalibrationDataReader):
    def __init__(self, x):
        self.chunks = iter([{"input": x[i : i + 16]} for i in range(0, len(x), 16)])

    def get_next(self):
        return next(self.chunks, None)


def _snr(a, b):
    return 10 * np.log10((a.astype(np.float64) ** 2).sum() / ((a.astype(np.float64) - b) ** 2).sum())


def test_per_tensor_int8_hurts_the_planted_node(catalog, samples, eval_data, tmp_path):
    """Independent of the engine: plain ORT QDQ quantization, SNR at the consumer of the outlier tensor."""
    consumer_out = catalog["models"]["resnet_digits_outlier"]["outlier"]["consumer_output_tensor"]
    x_cal = np.load(samples / "digits_calib.npz")["input"]
    x, _ = eval_data
    snrs = {}
    for name in MODELS:
        pre, q = tmp_path / f"{name}_pre.onnx", tmp_path / f"{name}_q.onnx"
        quant_pre_process(samples / f"{name}.onnx", pre)
        quantize_static(pre, q, _Reader(x_cal), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv", "Gemm"],
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
        ref = run(pre, x[:200], [consumer_out])[consumer_out]
        cand = run(q, x[:200], [consumer_out])[consumer_out]
        snrs[name] = _snr(ref, cand)
    assert snrs["resnet_digits"] > 20
    assert snrs["resnet_digits_outlier"] < snrs["resnet_digits"] - 15
