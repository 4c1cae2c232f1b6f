"""Entropy calibration searches TensorRT's way (entropy.py): a 2048-bin |x| histogram and every threshold from bin 128
on, scored by the KL divergence to its 128-level quantization. ONNX Runtime's default (128 bins, 128 levels) had one
candidate, the whole range, and so gave MinMax's ranges exactly."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engine import compare
from engine.quantize.config import CalibrationMethod, QuantConfig
from engine.quantize.entropy import entropy_amax, entropy_ranges
from tests.engine.conftest import SAMPLES


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p, q = p / p.sum(), q / q.sum()
    m = p > 0
    if np.any(q[m] == 0):
        return math.inf
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


def _reference_amax(hist: np.ndarray, edges: np.ndarray, levels: int = 128) -> float:
    """The search written plainly, one candidate and one level at a time (the first bin counted as the second: zero
    quantizes exactly at any scale)."""
    h = hist.astype(np.float64)
    h[0] = h[1]
    best_kl, best_i = math.inf, len(h)
    for i in range(levels, len(h) + 1):
        p = h[:i].copy()
        p[-1] += h[i:].sum()
        group = np.arange(i) * levels // i
        q = np.zeros(i)
        for g in range(levels):
            members = group == g
            filled = members & (h[:i] > 0)
            if filled.any():
                q[filled] = h[:i][members].sum() / filled.sum()
        if q.sum() == 0 or len({g for g, c in zip(group, h[:i]) if c > 0}) < 2:  # one level left: not a candidate
            continue
        kl = _kl(p, q)
        tie = math.isfinite(best_kl) and kl <= best_kl + 1e-12 * max(1.0, abs(best_kl))
        if tie or kl < best_kl:  # the widest of equal thresholds
            best_kl, best_i = kl, i
    return float(edges[best_i])


@pytest.mark.parametrize("case", range(5))
def test_the_vectorised_search_equals_the_plain_one(case):
    rng = np.random.default_rng(case)
    x = np.abs(np.concatenate([rng.standard_normal(50_000), rng.standard_normal(20) * (6 + 4 * case)]))
    if case % 2:
        x = np.concatenate([x, np.zeros(30_000)])  # a ReLU's spike at zero
    hist, edges = np.histogram(x, bins=260 + 9 * case)
    if case == 4:
        hist[200:] = 0
        hist[-1] = 3  # outliers beyond an empty stretch: thresholds whose last bin is empty are infinitely bad
    assert entropy_amax(hist, edges) == _reference_amax(hist, edges)


def test_known_answers():
    edges = np.linspace(0, 1, 2049)
    flat = np.full(2048, 1000)
    assert entropy_amax(flat, edges) == 1.0  # nothing to gain by clipping a flat distribution
    rng = np.random.default_rng(0)
    gauss = np.abs(rng.standard_normal(1_000_000))
    x = np.concatenate([gauss, [40.0]])  # one value 40 sigma out
    hist, edges = np.histogram(x, bins=2048)
    amax = entropy_amax(hist, edges)
    assert 3.0 < amax < 8.0  # clips the lone outlier, keeps the Gaussian's tails
    assert entropy_amax(np.zeros(2048), np.linspace(0, 1, 2049)) == 1.0  # nothing seen: the whole range
    relu = np.concatenate([[10_000_000], np.full(2047, 1000)])  # a ReLU: most values exactly zero, the rest flat
    assert entropy_amax(relu, np.linspace(0, 1, 2049)) == 1.0  # the zeros do not pull the threshold in


def _collected(*chunks: np.ndarray):
    from onnxruntime.quantization.calibrate import HistogramCollector

    collector = HistogramCollector("percentile", True, 2048, 2048, 99.999, "same")  # as calibrate() collects
    for chunk in chunks:
        collector.collect({"t": [chunk.astype(np.float32)]})
    return collector.histogram_dict


def test_histograms_not_starting_at_zero_are_searched_from_zero():
    """ORT's collector starts its bins at the first chunk's smallest |x| (at -0.5 for an all-zero first chunk) and adds
    bins as values grow; the search works on 2048 bins from zero, as TensorRT's calibrator keeps them."""
    rng = np.random.default_rng(0)
    relu = np.maximum(rng.standard_normal((4, 20_000)), 0)
    low, high = entropy_ranges(_collected(np.zeros((4, 100)), relu))["t"][:2]
    assert low == 0 and 3.0 < high <= relu.max()  # not 0.0005: the zeros first put them mid-histogram
    assert high == pytest.approx(float(entropy_ranges(_collected(relu))["t"][1]), rel=0.05)
    shifted = 3.7 + 2.6 * rng.random((4, 20_000))  # |x| in [3.7, 6.3]: nothing to clip
    assert float(entropy_ranges(_collected(shifted))["t"][1]) == pytest.approx(shifted.max(), rel=1e-3)
    grown = entropy_ranges(_collected(rng.standard_normal((4, 10_000)), 100 * rng.standard_normal((4, 10_000))))["t"][1]
    assert 150 < float(grown) <= 500  # a 100x jump grew ORT's histogram to 200,000 bins; searched on 2048


def _high(value: dict) -> float:
    x = value["highest"]
    return float(np.ravel(x["data"])[0] if isinstance(x, dict) else x)


def _ranges(run) -> dict:
    return json.loads((run / "calibration_cache.json").read_text())["data"]


def test_entropy_ranges_are_not_minmax_and_the_sweep_pass_gives_the_same(tmp_path):
    """On the outlier sample (a channel scaled 79x): entropy clips where MinMax keeps every value, and the sweep's shared
    calibration pass gives the very ranges a compare calibrated with entropy alone gets."""
    from engine import sweep

    model, calib, data = SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", SAMPLES / "digits_eval.npz"
    kw = {"batch_size": 25, "provider": "cpu", "screen_samples": 0}
    compare(model, calib, data=data, out_dir=tmp_path / "minmax", **kw)
    compare(model, calib, data=data, out_dir=tmp_path / "entropy", config=QuantConfig(calibration=CalibrationMethod.ENTROPY), **kw)
    mm, en = _ranges(tmp_path / "minmax"), _ranges(tmp_path / "entropy")
    assert mm.keys() == en.keys()
    high = {k: (_high(v), _high(en[k])) for k, v in mm.items()}
    clipped = [k for k, (a, b) in high.items() if b < a * 0.999]
    assert len(clipped) >= len(high) // 2, high  # most tensors: the histogram's tail is cut
    assert all(b <= a * (1 + 1e-6) for a, b in high.values())  # never wider than what was seen
    sweep([model], calib, data=data, out_dir=tmp_path / "sweep", methods=("entropy", "percentile"), latency_runs=0, **kw)
    shared = json.loads(next((tmp_path / "sweep").rglob("calibration_entropy.json")).read_text())["data"]
    assert {k: shared[k] for k in en} == en
