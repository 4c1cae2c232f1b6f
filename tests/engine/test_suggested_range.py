"""The custom-range editor's starting point stays inside the values it was computed from."""

from __future__ import annotations

import math

import numpy as np

from engine.node_view import ChannelStats, TensorView


def _view(values: np.ndarray, clip: float, calibrated: tuple[float, float]) -> TensorView:
    counts, edges = np.histogram(values, bins=64, range=(min(values.min(), -clip), max(values.max(), clip)))
    return TensorView("conv", "relu_out", *calibrated, clip / 127, -128 * clip / 127, clip, None,
                      tuple(int(c) for c in counts), tuple(float(e) for e in edges), 0.0, ChannelStats((1.0,), ()),
                      values.size, None, None, float(values.min()), float(values.max()))


def test_a_relu_output_gets_a_range_that_does_not_start_below_zero():
    values = np.maximum(np.random.default_rng(0).normal(1.0, 1.5, 100_000), 0.0)
    top = float(values.max())
    # the INT8 clip spans [-1.01 top, top], so the histogram's first edges lie below every value
    low, high = _view(values, top, (0.0, top)).suggested_range(99.0)
    assert low == 0.0 and np.quantile(values, 0.99) <= high <= top


def test_the_range_never_leaves_the_calibrated_range_or_the_observed_values():
    values = np.concatenate([np.random.default_rng(1).normal(0, 1, 50_000), [40.0]])  # one outlier past the calibration
    low, high = _view(values, 40.0, (-3.0, 3.0)).suggested_range(100.0)
    assert (low, high) == (-3.0, 3.0)
    low, high = _view(values, 40.0, (math.nan, math.nan)).suggested_range(100.0)
    assert low == float(values.min()) and high == 40.0
