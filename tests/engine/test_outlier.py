"""On the sample outlier model: the planted node is found, and a rebuild fixes it without recalibrating."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import onnxruntime as ort
import pytest

from engine import rebuild
from tests.engine.conftest import SAMPLES


def planted(catalog):
    info = catalog["models"]["resnet_digits_outlier"]["outlier"]
    return set(info["producer_nodes"]) | set(info["consumer_nodes"])


def test_planted_node_is_top_culprit(outlier_run, catalog):
    s = outlier_run.summary
    assert s.culprits[0].node in planted(catalog)
    assert s.headline.startswith(f"Quantizing {s.culprits[0].node} (Conv) hurts the final outputs most: alone in INT8 it brings them to")
    assert s.ranking.method == "measured harm" and s.ranking.samples == 32 and s.ranking.probes == 2 * len(s.culprits) + 3
    # every fallback candidate is listed, in ranking order, and each is a quantized node
    assert len(s.culprits) == s.quantized_nodes == outlier_run.layers.drop_duplicates("node")["quantized"].sum()
    alone = [c.alone_snr_db for c in s.culprits]
    assert alone == sorted(alone)
    top = outlier_run.layers.sort_values("introduced_db", ascending=False).iloc[0]
    assert top["node"] == s.culprits[0].node and bool(top["quantized"])  # here the introduced-noise view agrees


def test_clean_model_has_no_dominant_culprit(clean_run, outlier_run):
    assert clean_run.summary.culprits[0].alone_snr_db > outlier_run.summary.culprits[0].alone_snr_db + 10
    assert clean_run.final_output().snr_db > outlier_run.final_output().snr_db + 10


def _session(path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=["WeightBiasQuantization"])  # as QuantScope runs Q/DQ: float bias


def test_summary_outputs_are_the_unmodified_candidate_run(outlier_run):
    run = outlier_run.run_dir
    x = np.load(SAMPLES / "digits_eval.npz")["input"]
    ref = _session(run / "reference.onnx").run(None, {"input": x})[0].astype(np.float64)
    cand = _session(run / "candidate.onnx").run(None, {"input": x})[0].astype(np.float64)
    assert len(_session(run / "candidate.onnx").get_outputs()) == 1  # no extra outputs in the saved candidate
    want = 10 * math.log10((ref**2).sum() / ((ref - cand) ** 2).sum())
    saved = json.loads((run / "summary.json").read_text())
    assert float(saved["outputs"]["logits"]["snr_db"]) == pytest.approx(want, abs=1e-3)
    labels = np.load(SAMPLES / "digits_eval_labels.npy")
    assert saved["task"]["candidate_accuracy"] == pytest.approx((cand.argmax(1) == labels).mean())
    assert saved["task"]["top1_agreement"] == pytest.approx((cand.argmax(1) == ref.argmax(1)).mean())


def test_rebuild_fixes_the_outlier_without_recalibrating(outlier_run, clean_run, catalog, no_calibration):
    run = outlier_run.run_dir
    before = json.loads((run / "summary.json").read_text())
    consumer = catalog["models"]["resnet_digits_outlier"]["outlier"]["consumer_nodes"][0]
    fixed = rebuild(run, fallback=[consumer])
    assert fixed.summary.recalibrated is False
    assert fixed.summary.data_sha256 == before["data_sha256"] != "" and fixed.summary.model_sha256 == before["model_sha256"]
    assert fixed.summary.fallback == (consumer,) and fixed.summary.fp16_nodes == (consumer,)
    assert fixed.final_output().snr_db >= clean_run.final_output().snr_db - 1.0
    assert not bool(fixed.layers.loc[fixed.layers["node"] == consumer, "quantized"].item())
    # history keeps the earlier result, byte for byte
    history = json.loads((run / "history" / "1" / "summary.json").read_text())
    assert history == before and history["fallback"] == []
    assert (run / "history" / "1" / "candidate.onnx").is_file()


def test_unknown_fallback_node_is_a_clear_error(outlier_run):
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match="^The fallback node 'no_such_node' is not in the compared graph; use a node name from layers.csv.$"):
        rebuild(outlier_run.run_dir, fallback=["no_such_node"])


def test_load_result_reads_back_the_same_typed_summary(clean_run):
    from engine import load_result

    loaded = load_result(clean_run.run_dir)
    assert loaded.summary.outputs == clean_run.summary.outputs
    assert loaded.final_output().fusion_disagrees is False
    assert [c.node for c in loaded.summary.culprits] == [c.node for c in clean_run.summary.culprits]


def test_downloads_are_named_after_the_users_model_and_the_build(clean_run):
    from dataclasses import replace

    from engine.quantize.config import CalibrationMethod, FallbackPrecision, Precision, RangeOverride

    s = clean_run.summary  # compared from resnet_digits.onnx, nothing in fallback
    assert re.fullmatch(r"resnet_digits_int8_[0-9a-f]{6}", s.file_stem())
    two = replace(s, model="my model (v2).onnx", fallback=("a", "b"), fallback_precision=FallbackPrecision.FP32,
                  config=replace(s.config, precision=Precision.FP8))
    assert two.file_stem().startswith("my_model_v2_fp8_2fp32_")  # what a browser saves, never candidate.onnx
    assert replace(s, model="../..onnx").file_stem().startswith("model_int8_")  # nothing usable left of the name
    # builds the words do not tell apart get other names; the same build, the same name
    ranged = replace(s, config=replace(s.config, ranges=(RangeOverride.parse("x=-1,1"),)))
    others = [ranged, replace(s, config=replace(s.config, calibration=CalibrationMethod.ENTROPY)),
              replace(two, fallback=("a", "c")), two]
    names = [s.file_stem()] + [o.file_stem() for o in others]
    assert len(set(names)) == len(names) and ranged.file_stem().startswith("resnet_digits_int8_1ranges_")
    assert replace(s, samples=7).file_stem() == s.file_stem()


def test_two_results_say_when_they_are_not_like_for_like(clean_run, outlier_run):
    from dataclasses import replace

    from engine import load_result, not_like_for_like
    from engine.data.source import ArraySource

    a = load_result(clean_run.run_dir).summary  # as History reads it back from summary.json
    with np.load(SAMPLES / "digits_eval.npz") as z:
        assert a.data_sha256 == ArraySource(dict(z)).content_digest()  # the compared samples, not the calibration's
    assert a.model_sha256 and a.model_sha256 != outlier_run.summary.model_sha256
    assert not_like_for_like(a, clean_run.summary) is None
    assert not_like_for_like(a, outlier_run.summary) == ("These runs are of different model files (resnet_digits.onnx and "
                                                         "resnet_digits_outlier.onnx), so their difference is not the build's alone.")
    other = replace(a, data_sha256="0" * 64)
    assert not_like_for_like(a, other).startswith(f"These runs compared on different data ({a.samples} samples each)")
    assert not_like_for_like(a, replace(a, samples=7)).startswith(f"These runs compared on different data ({a.samples} and 7 samples)")
    assert not_like_for_like(a, replace(a, data_sha256="")) is None  # an image folder's digest is not known: no claim
    # a run from before digests were recorded: the model names are all there is to go by
    old = replace(outlier_run.summary, model_sha256="")
    assert not_like_for_like(a, old).startswith("These runs are of different model files (resnet_digits.onnx and resnet_digits_outlier.onnx)")
    assert not_like_for_like(a, replace(a, model_sha256="")) is None
