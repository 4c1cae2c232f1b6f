"""MinMax calibration on a dynamic batch cuts batches into parts of MINMAX_MICRO samples (so ORT's calibrator never
holds a whole large batch of activations): the ranges must be exactly those of calibrating batch by batch."""

from __future__ import annotations

import json

from engine import compare
from engine.quantize.calibration import MINMAX_MICRO
from tests.engine.conftest import SAMPLES


def _ranges(run) -> dict:
    return json.loads((run / "calibration_cache.json").read_text())["data"]


def test_minmax_ranges_do_not_depend_on_how_batches_are_cut(tmp_path):
    model, calib = SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz"
    big, small = 25, MINMAX_MICRO  # 25 is cut into 8+8+8+1 parts; 8 runs as it is
    compare(model, calib, out_dir=tmp_path / "big", batch_size=big, provider="cpu", screen_samples=0)
    compare(model, calib, out_dir=tmp_path / "small", batch_size=small, provider="cpu", screen_samples=0)
    a, b = _ranges(tmp_path / "big"), _ranges(tmp_path / "small")
    assert a and a == b
