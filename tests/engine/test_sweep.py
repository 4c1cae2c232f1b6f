"""The calibration sweep: every configuration compared, what they share computed once, the best one usable by compare."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

from engine import ConfigError, compare
from engine.cli.main import main
from engine.quantize.config import CalibrationMethod, QuantConfig
from engine.sweep import load_sweep, sweep
from tests.engine.conftest import SAMPLES

sweep_module = importlib.import_module("engine.sweep")  # the module: engine.sweep is also the function engine exports

KW = {"batch_size": 50, "provider": "cpu", "latency_runs": 2, "screen_samples": 8}


@pytest.fixture(scope="module")
def eval_100(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep_data")
    np.savez(d / "eval.npz", input=np.load(SAMPLES / "digits_eval.npz")["input"][:100])
    np.save(d / "labels.npy", np.load(SAMPLES / "digits_eval_labels.npy")[:100])
    return d


@pytest.fixture(scope="module")
def swept(eval_100, tmp_path_factory):
    calls, timed = [], []
    real, real_latency = sweep_module.calibrate_many, sweep_module._latency

    def counting(*a, **k):
        calls.append(a[3])
        return real(*a, **k)

    def counting_latency(backend, model, feed, runs):
        if runs > 0:
            timed.append(sum(n.op_type == "QuantizeLinear" for n in model.graph.node))
        return real_latency(backend, model, feed, runs)

    sweep_module.calibrate_many, sweep_module._latency = counting, counting_latency
    try:
        out = tmp_path_factory.mktemp("sweep") / "s"
        result = sweep([SAMPLES / "resnet_digits_outlier.onnx"], SAMPLES / "digits_calib.npz", data=eval_100 / "eval.npz",
                       labels=eval_100 / "labels.npy", out_dir=out, methods=("minmax", "entropy"), precisions=("int8", "fp8"), **KW)
    finally:
        sweep_module.calibrate_many, sweep_module._latency = real, real_latency
    return result, calls, timed


def test_every_configuration_once_with_one_calibration_pass(swept):
    result, calls, _ = swept
    assert len(calls) == 1 and {s.method for s in calls[0]} == {CalibrationMethod.MINMAX, CalibrationMethod.ENTROPY}
    labels = [r.config.label for r in result.rows]
    assert len(labels) == 4 and len(set(labels)) == 4
    assert sum(r.best for r in result.rows) == 1 and all(not r.note for r in result.rows)
    best = result.best()
    assert best.snr_db == max(r.snr_db for r in result.rows)
    doc = json.loads((result.folder / "sweep.json").read_text())
    assert [r["config"] for r in doc["rows"]] == labels and (result.folder / "sweep.csv").is_file()
    assert {r["percentile"] for r in doc["rows"]} == {None}  # meaningless for MinMax and Entropy, so not written
    assert load_sweep(result.folder).best().config == best.config


def test_latency_is_timed_once_per_graph_and_shared_by_its_calibrations(swept):
    result, _, timed = swept
    assert len(timed) == 2 and all(q > 0 for q in timed)  # INT8 and FP8: two graphs, each timed once
    by_precision: dict[str, set] = {}
    for r in result.rows:
        by_precision.setdefault(r.config.precision.value, set()).add(r.latency_ms)
    assert sorted(by_precision) == ["fp8", "int8"]
    assert all(len(v) == 1 and None not in v for v in by_precision.values())  # MinMax and Entropy: the same number


def test_a_graph_whose_timed_configuration_failed_is_timed_on_another(eval_100, tmp_path, monkeypatch):
    """MinMax (the first of its graph, the one timed) fails; Entropy, the same graph, still gets a latency."""
    real = sweep_module.measure_model
    calls = []

    def first_fails(backend, candidate, data):
        calls.append(1)
        if len(calls) == 1:
            raise ConfigError("this calibration produced a range ONNX Runtime refuses")
        return real(backend, candidate, data)

    monkeypatch.setattr(sweep_module, "measure_model", first_fails)
    result = sweep([SAMPLES / "resnet_digits_outlier.onnx"], SAMPLES / "digits_calib.npz", data=eval_100 / "eval.npz",
                   out_dir=tmp_path / "s", methods=("minmax", "entropy"), **{**KW, "screen_samples": 0})
    failed, kept = result.rows
    assert failed.config.calibration.method is CalibrationMethod.MINMAX and "refuses" in failed.note
    assert failed.latency_ms is None and not kept.note and kept.latency_ms is not None and kept.latency_ms > 0


def test_a_configuration_equals_a_compare_with_those_settings(swept, eval_100, tmp_path):
    result, _, _ = swept
    row = next(r for r in result.rows if r.config.calibration.method is CalibrationMethod.ENTROPY and r.config.precision.value == "int8")
    ran = compare(SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", data=eval_100 / "eval.npz",
                  labels=eval_100 / "labels.npy", out_dir=tmp_path / "c", batch_size=50, provider="cpu", screen_samples=0,
                  config=QuantConfig(calibration=CalibrationMethod.ENTROPY))
    assert row.snr_db == pytest.approx(ran.final_output().snr_db, rel=1e-6)  # float64 sums vs float32 chunks
    assert row.top1_agreement == ran.summary.task.top1_agreement and row.accuracy == ran.summary.task.candidate_accuracy
    minmax = next(r for r in result.rows if r.config.calibration.method is CalibrationMethod.MINMAX and r.config.precision.value == "int8")
    assert minmax.culprit == "block3_2_conv"  # the planted outlier, found by the quick screen too
    # entropy clips the outlier channel's range, so it is not MinMax under another name (ORT's 128-bin default was)
    assert abs(row.snr_db - minmax.snr_db) > 0.5


def test_fp8_spares_the_outlier_layer(swept):
    result, _, _ = swept
    by = {(r.config.calibration.method.value, r.config.precision.value): r for r in result.rows}
    assert by[("minmax", "fp8")].snr_db > by[("minmax", "int8")].snr_db + 8  # ~24 dB against ~11.7 dB
    assert by[("minmax", "fp8")].culprit != "block3_2_conv"


def test_compare_starts_from_the_best_configuration(swept, tmp_path, capsys):
    result, _, _ = swept
    out = tmp_path / "run"
    assert main(["compare", str(SAMPLES / "resnet_digits_outlier.onnx"), "--calib", str(SAMPLES / "digits_calib.npz"),
                 "--sweep", str(result.folder), "--out", str(out), "--batch", "50", "--provider", "cpu", "--screen-samples", "0",
                 "--quiet", "--no-index"]) == 0
    cfg = json.loads((out / "config.json").read_text())["quant"]
    best = result.best().config
    assert (cfg["calibration"], cfg["precision"]) == (best.calibration.method.value, best.precision.value)


def test_a_bad_select_metric_is_one_sentence(capsys, tmp_path):
    assert main(["sweep", str(SAMPLES / "resnet_digits.onnx"), "--calib", str(SAMPLES / "digits_calib.npz"), "--out",
                 str(tmp_path / "s"), "--methods", "magic", "--quiet"]) == 2
    assert capsys.readouterr().err == "error: Unknown calibration method 'magic'; use one of: minmax, entropy, percentile.\n"


@pytest.mark.parametrize(("percentiles", "sentence"), [
    ((), "The sweep has the percentile method but no percentile; give one or more, e.g. 99.99 99.999."),
    ((99.9, 150), "The percentile 150 is outside (0, 100]; use e.g. 99.99 or 99.999."),
])
def test_bad_percentiles_are_one_sentence_before_anything_runs(percentiles, sentence, tmp_path):
    with pytest.raises(ConfigError) as err:
        sweep([SAMPLES / "resnet_digits_outlier.onnx"], SAMPLES / "digits_calib.npz", out_dir=tmp_path / "s",
              methods=("minmax", "percentile"), percentiles=percentiles, **KW)
    assert str(err.value) == sentence and not (tmp_path / "s").exists()


def test_the_sweep_checks_batches_as_compare_does(tmp_path):
    import onnx

    from engine import DataError
    from tests.engine.conftest import tiny_model

    with pytest.raises(ConfigError, match=r"^The batch size 0 is not positive; use 1 or more\.$"):
        sweep([SAMPLES / "resnet_digits_outlier.onnx"], SAMPLES / "digits_calib.npz", out_dir=tmp_path / "a",
              methods=("minmax",), **{**KW, "batch_size": 0})
    m = tiny_model()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4  # batch fixed at 4
    onnx.save(m, tmp_path / "fixed.onnx")
    np.savez(tmp_path / "six.npz", x=np.zeros((6, 2, 8, 8), np.float32))
    with pytest.raises(DataError, match=r"fixed at 4 but the calibration data has 6 samples; provide a multiple of 4"):
        sweep([tmp_path / "fixed.onnx"], tmp_path / "six.npz", out_dir=tmp_path / "b", methods=("minmax",), **KW)


def test_the_table_names_a_model_as_the_user_does(eval_100, tmp_path):
    """The dashboard stores an upload as model.onnx: its sweep table and progress named that, not the user's file."""
    events = []
    result = sweep([SAMPLES / "resnet_digits_outlier.onnx"], SAMPLES / "digits_calib.npz", data=eval_100 / "eval.npz",
                   out_dir=tmp_path / "s", methods=("minmax",), model_names=["yolo_from_the_user.onnx"],
                   progress=events.append, **{**KW, "latency_runs": 0, "screen_samples": 0})
    assert [r.model for r in result.rows] == ["yolo_from_the_user.onnx"]
    assert any("yolo_from_the_user.onnx: configuration 1/1 done" in (e.message or "") for e in events)


def test_a_model_with_several_outputs_is_swept_by_every_output_together(tmp_path):
    """The sweep picked and showed a several-output model by its first output where Compare's headline, the ranking and
    History give every float output together; its 'worst output SNR' column was that together figure, not a worst."""
    from onnx import TensorProto, helper, save

    from tests.engine.conftest import tiny_model

    m = tiny_model()
    m.graph.output.append(helper.make_tensor_value_info("f", TensorProto.FLOAT, ["n", 4]))
    save(m, tmp_path / "two.onnx")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(2).standard_normal((10, 2, 8, 8)).astype(np.float32))
    result = sweep([tmp_path / "two.onnx"], tmp_path / "d.npz", out_dir=tmp_path / "s", methods=("minmax",),
                   batch_size=5, provider="cpu", latency_runs=0, screen_samples=0)
    (row,) = result.rows
    s = compare(tmp_path / "two.onnx", tmp_path / "d.npz", out_dir=tmp_path / "c", batch_size=5, provider="cpu",
                screen_samples=0).summary
    assert s.outputs["y"].snr_db != pytest.approx(s.outputs["f"].snr_db, rel=1e-3)  # the two outputs' figures differ
    assert row.snr_db == pytest.approx(s.outputs_together_snr_db(), rel=1e-5)
    assert row.first_output_snr_db == pytest.approx(s.outputs["y"].snr_db, rel=1e-5)
    assert load_sweep(tmp_path / "s").rows[0].snr_db == row.snr_db  # what sweep.json keeps


def test_a_sweep_written_before_the_together_figure_reads_the_same(tmp_path):
    """sweep.json files of earlier versions kept the first output's SNR as snr_db and the together figure as
    outputs_snr_db: reading one gives the figures their present names."""
    from engine.sweep import SweepRow

    old = {"model": "m.onnx", "op_types": ["Conv"], "calibration": "minmax", "percentile": 99.999, "precision": "int8",
           "snr_db": 1.47, "cosine": 0.9, "outputs_snr_db": 2.41, "culprit_alone_snr_db": 0.5}
    row = SweepRow.from_dict(old)
    assert (row.snr_db, row.first_output_snr_db) == (2.41, 1.47)
    assert SweepRow.from_dict(row.to_dict()) == row


def test_a_serial_sweep_says_each_step_of_a_configuration(tmp_path):
    """A PP-OCRv4 detector's configuration ran 80 s with the bar at 0 and nothing to cancel at."""
    events = []
    sweep([SAMPLES / "resnet_digits_outlier.onnx"], SAMPLES / "digits_calib.npz", out_dir=tmp_path / "s",
          methods=("minmax", "entropy"), progress=events.append, **{**KW, "latency_runs": 0, "screen_samples": 0})
    said = [(e.done, e.total, e.message) for e in events if e.stage == "sweep"]
    assert [(d, t) for d, t, _ in said] == [(0, 8), (0, 8), (1, 8), (2, 8), (3, 8), (4, 8), (4, 8), (5, 8), (6, 8), (7, 8), (8, 8)]
    name = "resnet_digits_outlier.onnx"
    assert [m for _, _, m in said[:6]] == [
        f"{name}: 0/2 configurations done", f"{name}: configuration 1/2, emitting its Q/DQ model",
        f"{name}: configuration 1/2, running it on the evaluation data; the time left is known after the first configuration",
        f"{name}: configuration 1/2, ranking its culprit; the time left is known after the first configuration",
        f"{name}: configuration 1/2, timing it; the time left is known after the first configuration",
        f"{name}: configuration 1/2 done"]
    assert said[6][2].startswith(f"{name}: configuration 2/2, emitting its Q/DQ model, about ")


def test_a_cancel_at_a_configuration_step_stops_the_sweep(tmp_path):
    """A cancel said at a step inside a configuration was caught as that configuration's error and saved as its note."""
    from engine import Cancelled

    def cancel_at_a_step(ev):
        if "emitting its Q/DQ model" in ev.message:
            raise Cancelled()

    with pytest.raises(Cancelled):
        sweep([SAMPLES / "resnet_digits_outlier.onnx"], SAMPLES / "digits_calib.npz", out_dir=tmp_path / "s",
              methods=("minmax",), progress=cancel_at_a_step, **{**KW, "latency_runs": 0, "screen_samples": 0})


def test_evaluation_and_latency_batches_stay_within_the_memory_setting(eval_100, tmp_path, capsys):
    """PP-OCRv4's detector at batch 25 timed 16 pages at once and its sweep peaked at 2.2 GB (its compare: 1.6 GB). The
    evaluation's batches (and so the timed one) are cut to what QUANTSCOPE_MEMORY_MB fits, at the numbers of a whole
    batch; the table says the timed batch's size."""
    from dataclasses import replace

    from engine.compare.memory_plan import PEAK_FACTOR, live_bytes_per_sample
    from engine.settings import Settings

    model = SAMPLES / "resnet_digits_outlier.onnx"
    live = live_bytes_per_sample(__import__("onnx").load(model), {"input": (1, 32, 32)})
    assert live and live > 1000
    settings = replace(Settings.from_env({"QUANTSCOPE_RUNS_ROOT": str(tmp_path / "root")}),
                       memory_bytes=int(PEAK_FACTOR * live * 7.5))  # fits 7 samples
    seen = []
    real = sweep_module.measure_model

    def recording(backend, candidate, data):
        seen.append([len(b["input"]) for b in data.batches])
        return real(backend, candidate, data)

    kw = {**KW, "screen_samples": 0, "latency_runs": 1}
    sweep_module.measure_model = recording
    try:
        small = sweep([model], SAMPLES / "digits_calib.npz", data=eval_100 / "eval.npz", out_dir=tmp_path / "small",
                      methods=("minmax",), settings=settings, **kw)
    finally:
        sweep_module.measure_model = real
    assert seen == [[7] * 14 + [2]]
    whole = sweep([model], SAMPLES / "digits_calib.npz", data=eval_100 / "eval.npz", out_dir=tmp_path / "whole",
                  methods=("minmax",), settings=replace(settings, memory_bytes=1 << 30), **kw)
    (a,), (b,) = small.rows, whole.rows
    assert (a.latency_batch, b.latency_batch) == (7, 50)
    assert a.snr_db == pytest.approx(b.snr_db, abs=1e-6) and a.top1_agreement == b.top1_agreement
    assert load_sweep(small.folder).rows[0].latency_batch == 7
    assert main(["sweep", str(model), "--calib", str(SAMPLES / "digits_calib.npz"), "--data", str(eval_100 / "eval.npz"),
                 "--methods", "minmax", "--batch", "50", "--screen-samples", "0", "--latency-runs", "1", "--provider", "cpu",
                 "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    assert "ms: median latency of a batch of 50 sample(s)" in capsys.readouterr().out
