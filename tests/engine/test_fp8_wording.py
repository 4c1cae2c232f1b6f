"""An FP8 run says FP8 where it measured FP8: its headline said 'alone in INT8' and its tensor view clipped at INT8's
127 x scale, where FP8 E4M3 reaches 448 x scale."""

from __future__ import annotations

import pytest

from engine import compare, tensor_view
from engine.quantize.config import Precision, QuantConfig
from tests.engine.conftest import SAMPLES


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp8")
    kw = {"data": SAMPLES / "digits_eval.npz", "batch_size": 50, "provider": "cpu", "screen_samples": 8}
    int8 = compare(SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", out_dir=root / "int8", **kw)
    fp8 = compare(SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", out_dir=root / "fp8",
                  config=QuantConfig(precision=Precision.FP8), **kw)
    return int8, fp8


def test_the_headline_names_the_precision_measured(runs):
    int8, fp8 = runs
    assert "alone in INT8" in int8.summary.headline and "every node in INT8" in int8.summary.headline
    assert "alone in FP8" in fp8.summary.headline and "every node in FP8" in fp8.summary.headline
    assert "INT8" not in fp8.summary.headline


def test_the_tensor_view_clips_at_the_grid_of_the_run(runs):
    int8, fp8 = runs
    node = "block3_2_conv"
    a, b = tensor_view(int8.run_dir, node), tensor_view(fp8.run_dir, node)
    assert (a.grid, a.grid_max) == ("INT8", 127.0) and (b.grid, b.grid_max) == ("FP8 E4M3", 448.0)
    assert a.clip_high == pytest.approx(127 * a.scale) and a.clip_low == pytest.approx(-128 * a.scale)
    assert b.clip_high == pytest.approx(448 * b.scale) and b.clip_low == pytest.approx(-448 * b.scale)
    # both grids reach the calibrated range's largest magnitude: the scale is amax / 127 or amax / 448
    amax = max(abs(b.calibration_min), abs(b.calibration_max))
    assert b.clip_high == pytest.approx(amax, rel=1e-5) and a.clip_high == pytest.approx(max(abs(a.calibration_min), abs(a.calibration_max)), rel=1e-5)
