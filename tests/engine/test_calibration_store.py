"""A second compare of the same model on the same calibration data takes the calibration (and the all-INT8 graph emitted
from it) from the runs root's store; other data or another method calibrates again, other ranges emit again."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

import engine.pipeline as pipeline
import engine.quantize.emit as emit
from engine import compare, rebuild
from engine.compare.tensor_keys import KEY_COLUMN
from engine.quantize.config import CalibrationMethod, FallbackPrecision, QuantConfig, RangeOverride
from engine.runs import RunFolder
from engine.settings import Settings
from tests.engine.conftest import SAMPLES

MODEL, CALIB, EVAL = SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", SAMPLES / "digits_eval.npz"


def test_the_same_model_and_data_reuse_the_calibration_and_other_data_or_methods_do_not(tmp_path, monkeypatch):
    settings = Settings.from_env({"QUANTSCOPE_RUNS_ROOT": str(tmp_path / "root")})
    calls: list[str] = []
    real = pipeline.calibrate
    monkeypatch.setattr(pipeline, "calibrate", lambda *a, **k: calls.append(a[2].calibration.value) or real(*a, **k))

    def run(name, calib=CALIB, config=QuantConfig(), **kw):
        return compare(MODEL, calib, out_dir=tmp_path / name, data=EVAL, config=config, batch_size=25, provider="cpu",
                       screen_samples=0, settings=settings, **kw)

    first = run("a")
    second = run("b", config=dataclasses.replace(QuantConfig(), fallback_precision=FallbackPrecision.FP32))  # other options
    assert calls == ["minmax"]
    assert RunFolder(tmp_path / "a").calibration_cache.read_bytes() == RunFolder(tmp_path / "b").calibration_cache.read_bytes()
    assert second.summary.timings["calibrate"] < first.summary.timings["calibrate"]
    again = run("c")
    # a reused calibration gives the same results (measured on other batch caches: their keys differ, see tensor_keys)
    pd.testing.assert_frame_equal(first.layers.drop(columns=KEY_COLUMN), again.layers.drop(columns=KEY_COLUMN))
    fewer = tmp_path / "fewer.npz"
    np.savez(fewer, **{k: v[:40] for k, v in np.load(CALIB).items()})
    run("d", calib=fewer)  # other data: calibrated again
    run("e", config=dataclasses.replace(QuantConfig(), calibration=CalibrationMethod.ENTROPY))  # another method too
    assert calls == ["minmax", "minmax", "entropy"]


def test_a_second_compare_takes_the_kept_all_int8_graph_and_other_ranges_emit_their_own(tmp_path, monkeypatch):
    settings = Settings.from_env({"QUANTSCOPE_RUNS_ROOT": str(tmp_path / "root")})
    emitted: list[int] = []
    real = emit.quantize_all
    monkeypatch.setattr(emit, "quantize_all", lambda *a, **k: emitted.append(1) or real(*a, **k))

    def run(name, config=QuantConfig()):
        return compare(MODEL, CALIB, out_dir=tmp_path / name, data=EVAL, config=config, batch_size=25, provider="cpu",
                       screen_samples=0, settings=settings)

    first = run("a")
    fallback = first.summary.culprits[0].node
    second = run("b", config=dataclasses.replace(QuantConfig(), fallback=frozenset({fallback})))  # only the fallback differs
    assert len(emitted) == 1  # the quantizer ran once: the second compare applied its fallback to the kept graph
    assert RunFolder(tmp_path / "b").int8_base.read_bytes() == RunFolder(tmp_path / "a").int8_base.read_bytes()
    rebuilt = rebuild(tmp_path / "a", fallback=[fallback])  # the same candidate as the run that emitted it
    assert RunFolder(tmp_path / "b").candidate.read_bytes() == RunFolder(tmp_path / "a").candidate.read_bytes()
    pd.testing.assert_frame_equal(second.layers.drop(columns=KEY_COLUMN), rebuilt.layers.drop(columns=KEY_COLUMN))
    tensor = first.layers["tensor"].iloc[0]
    run("c", config=dataclasses.replace(QuantConfig(), ranges=(RangeOverride(tensor, -1.0, 1.0),)))
    assert len(emitted) == 2  # other ranges: the same calibration, another all-INT8 graph


def test_the_int8_graph_key_tells_close_ranges_apart_and_ignores_the_order_of_op_types():
    """The kept INT8 graph is found by base_key: ranges that differ past six digits are other graphs (`:g` had made
    them one), op types in another order are the same graph, and the emission's version is part of it."""
    a = QuantConfig(ranges=(RangeOverride("t", -1.0, 123456.0),))
    b = QuantConfig(ranges=(RangeOverride("t", -1.0, 123456.4),))
    assert emit.base_key(a) != emit.base_key(b)
    assert emit.base_key(QuantConfig(op_types=("Conv", "MatMul"))) == emit.base_key(QuantConfig(op_types=("MatMul", "Conv")))
    assert emit.base_key(a)["emit"] == emit.EMIT_VERSION


def test_a_range_reads_back_as_the_same_floats():
    """config.json keeps ranges as TENSOR=MIN,MAX text: a rebuild must use the range the user set, not a rounding."""
    for lo, hi in ((-1.0, 123456.4), (0.1, 0.30000000000000004), (-4.0, 4.0), (1e-7, 2.5e-3)):
        r = RangeOverride("conv1_out", lo, hi)
        assert RangeOverride.parse(str(r)) == r
    assert str(RangeOverride("x", -4.0, 4.0)) == "x=-4,4"
    cfg = QuantConfig(ranges=(RangeOverride("t", -1.0, 123456.4),))
    assert QuantConfig.from_dict(cfg.to_dict()) == cfg
