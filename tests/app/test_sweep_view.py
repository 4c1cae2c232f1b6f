"""The Sweep page's pure pieces: its chart, its table, its plan's checks and the configuration it opens."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

import engine
from app.plots import SNR_DISPLAY_CAP, sweep_figure


def sweep_rows(*rows: dict) -> engine.SweepResult:
    """A sweep's result written by hand: each dict names its calibration, percentile, precision and numbers."""
    base = {"model": "m.onnx", "op_types": list(engine.TRT_INT8_OP_TYPES), "percentile": 99.999, "precision": "int8",
            "snr_db": None, "cosine": None, "first_output_snr_db": None, "culprit_alone_snr_db": None}
    return engine.SweepResult(Path("sweep"), tuple(engine.SweepRow.from_dict({**base, **r}) for r in rows), "snr_db")


def test_sweep_figure_draws_each_configuration_with_the_best_highlighted_and_a_note_in_the_hover():
    from app.plots import COLORS

    note = "ONNX Runtime could not run FP8 (no kernel); the other configurations are unaffected."
    df = pd.DataFrame({"config": ["minmax", "percentile 99.9", "entropy", "minmax fp8"], "snr_db": [11.7, 21.3, math.inf, None],
                       "latency_ms": [0.8, 0.9, 1.2, None], "note": ["", "", "", note], "best": [False, True, False, False]})
    fig = sweep_figure(df)
    bars, latency, missing = fig.data
    assert list(bars.y) == list(df["config"]) and fig.layout.yaxis.autorange == "reversed"  # the sweep's order, top down
    assert list(bars.x[:3]) == [11.7, 21.3, SNR_DISPLAY_CAP] and math.isnan(bars.x[3])  # exact drawn at the cap
    assert list(bars.text) == ["11.70 dB", "best: 21.30 dB", "exact", ""]
    assert list(bars.marker.color) == [COLORS["int8"], COLORS["best"], COLORS["int8"], COLORS["int8"]]
    assert list(latency.x[:3]) == [0.8, 0.9, 1.2] and latency.marker.color[1] == COLORS["best"]
    assert (missing.name, list(missing.y), list(missing.x), list(missing.text)) == ("no result", ["minmax fp8"], [0.0], [note])
    # another metric: its own axis title, starting below the lowest value (fractions near 1 are not all bars at full length)
    cos = sweep_figure(df.assign(cosine=[0.96, 0.99, 1.0, None]), "cosine")
    assert cos.layout.annotations[0].text.startswith("final-output cosine")
    assert cos.layout.xaxis.range[0] == pytest.approx(0.96 - 0.2 * 0.04) and cos.layout.xaxis.range[1] == 1.0
    assert len(sweep_figure(df.assign(latency_ms=None)).data) == 2  # nothing timed: no latency panel
    # the timed batch's size in the panel title, where the sweep cut it to the memory setting (one size for all)
    assert fig.layout.annotations[1].text.startswith("latency of a batch (ms)")
    titled = sweep_figure(df.assign(latency_batch=[7, 7, 7, None]))
    assert titled.layout.annotations[1].text.startswith("latency of a batch of 7 (ms)")


def test_sweep_table_stars_one_best_blanks_what_a_configuration_lacks_and_keeps_its_note():
    from app import sweeps

    result = sweep_rows(
        {"calibration": "minmax", "snr_db": 11.7, "cosine": 0.96, "first_output_snr_db": 11.7, "quantized_nodes": 10, "culprit": "c"},
        {"calibration": "percentile", "percentile": 99.9, "snr_db": 21.3, "cosine": 0.99, "first_output_snr_db": 21.3,
         "quantized_nodes": 10, "culprit": "c", "best": True, "latency_ms": 0.9},
        {"calibration": "minmax", "precision": "fp8", "note": "FP8 cannot run here."})
    table = sweeps.table_frame(result)
    assert table["best"].fillna("").tolist() == ["", sweeps.BEST, ""]
    assert list(table["calibration"]) == ["MinMax", "Percentile", "MinMax"]
    assert table["percentile"].iloc[1] == 99.9 and table["percentile"].isna().tolist() == [True, False, True]
    assert list(table["precision"]) == ["INT8", "INT8", "FP8"] and table["op_types"].iloc[0] == "Conv, ConvTranspose, Gemm, MatMul"
    assert table[["snr_db", "quantized_nodes", "culprit"]].iloc[2].isna().all()  # blank in the table, never 0
    assert table["note"].fillna("").tolist() == ["", "", "FP8 cannot run here."]
    assert set(sweeps.column_config(__import__("streamlit").column_config, "snr_db")) <= set(table.columns)
    # shown: the numbers before the settings, nothing no configuration has, the first output's SNR only where it differs
    assert sweeps.column_order(table) == ["best", "configuration", "snr_db", "cosine", "culprit", "quantized_nodes",
                                          "latency_ms", "seconds", "note", "calibration", "percentile", "op_types", "precision"]
    several = table.assign(first_output_snr_db=[2.4, 3.1, None])  # a layout detector's first of 8 outputs
    assert sweeps.column_order(several)[2:5] == ["snr_db", "first_output_snr_db", "cosine"]
    assert sweeps.best_sentence(result) == ("Best by final-output SNR: percentile 99.9 / Conv+ConvTranspose+Gemm+MatMul / int8 "
                                            "(final-output SNR 21.30 dB; its culprit c).")
    assert sweeps.best_sentence(sweep_rows({"calibration": "minmax", "note": "no numbers"})) is None


def test_a_sweep_plan_is_checked_before_anything_runs_each_refusal_naming_its_control():
    from app import sweeps

    four = tuple(engine.TRT_INT8_OP_TYPES)
    sets = sweeps.op_type_sets(["Relu", "Conv", "Add", "Gemm"])
    assert list(sets.values()) == [four, four + ("Add",), four + ("Relu",), four + ("Add", "Relu")]
    assert list(sweeps.op_type_sets(["Conv", "Relu"]).values()) == [four, four + ("Relu",)]  # one other: no "all" set
    plan = sweeps.plan_sweep(["minmax", "percentile"], "99.9, 99.999; 99.9", [four, four + ("Add",)], ["int8", "fp8"], "snr_db",
                             has_labels=False)
    assert plan.percentiles == (99.9, 99.999) and plan.size == 3 * 2 * 2
    assert sweeps.plan_sweep(["entropy"], "not read", [four], ["int8"], "cosine", False).percentiles == ()

    def refused(*args):
        with pytest.raises(engine.ConfigError) as err:
            sweeps.plan_sweep(*args)
        return str(err.value), err.value.option

    assert refused([], "", [four], ["int8"], "snr_db", True) == ("Choose at least one calibration method to sweep.", "methods")
    assert refused(["minmax"], "", [], ["int8"], "snr_db", True) == ("Choose at least one set of op types to sweep.", "op_types")
    assert refused(["minmax"], "", [four], [], "snr_db", True) == ("Choose at least one precision to sweep (INT8, FP8).", "precisions")
    assert refused(["percentile"], "99.9, abc", [four], ["int8"], "snr_db", True) == (
        "The percentiles '99.9, abc' are not comma-separated numbers, e.g. 99.9, 99.999.", "percentiles")
    assert refused(["percentile"], " ", [four], ["int8"], "snr_db", True)[1] == "percentiles"
    assert refused(["percentile"], "80", [four], ["int8"], "snr_db", True) == (
        "The percentile 80 is outside 90 to 100 (the Compare page's range); use e.g. 99.999.", "percentiles")
    assert refused(["minmax"], "", [four], ["int8"], "accuracy", False)[1] == "select"  # accuracy needs labels


def test_an_opened_configuration_sets_the_compare_pages_controls():
    from app.sweeps import compare_settings

    config = engine.QuantConfig(calibration=engine.CalibrationMethod.PERCENTILE, percentile=99.9, op_types=("Conv", "Add"),
                                precision=engine.Precision.FP8)
    assert compare_settings(config, 25, "cpu") == {"cmp_method": "percentile", "cmp_percentile": 99.9, "cmp_ops": ["Conv", "Add"],
                                                   "cmp_precision": "fp8", "cmp_batch": 25, "cmp_provider": "cpu"}


def test_shown_columns_keep_the_order_and_leave_out_what_no_row_fills():
    """The Sweep table's and History's columns: numbers first, and no column of blanks (History cut its culprit off at
    1400 px behind empty ones)."""
    from app.table_columns import filled_columns

    table = pd.DataFrame({"run": [1, 2], "snr_db": [12.0, math.nan], "top1_agreement": [math.nan, math.nan],
                          "top_culprit": ["", ""], "message": ["", "done"], "kind": ["compare", "rebuild"]})
    assert filled_columns(table, ("run", "kind", "snr_db", "top1_agreement", "top_culprit", "message", "absent")) == \
        ["run", "kind", "snr_db", "message"]
    assert filled_columns(table, ("run", "top_culprit"), always=("top_culprit",)) == ["run", "top_culprit"]


def test_labels_name_what_differs_and_say_once_what_is_shared():
    from app.sweeps import short_labels

    labels = ["minmax / Conv+ConvTranspose+Gemm+MatMul / int8", "entropy / Conv+ConvTranspose+Gemm+MatMul / int8",
              "entropy / Conv+ConvTranspose+Gemm+MatMul / fp8"]
    assert short_labels(labels) == (["minmax / int8", "entropy / int8", "entropy / fp8"], "Conv+ConvTranspose+Gemm+MatMul")
    assert short_labels(labels[:1]) == (labels[:1], "")  # one configuration: its whole label
    assert short_labels([labels[0], labels[0]]) == ([labels[0]] * 2, "")  # nothing differs (two models): whole labels

