"""Plot functions are pure: DataFrame in, Figure out; tested without Streamlit."""

from __future__ import annotations

import math

import pandas as pd

from app.plots import SNR_DISPLAY_CAP, before_after_figure, layer_figure
from app.report import build_report, cli_command


def frame(n=5):
    return pd.DataFrame({
        "tensor": [f"t{i}" for i in range(n)], "node": [f"n{i}" for i in range(n)], "op_type": ["Conv"] * n,
        "quantized": [True, False, True, True, False][:n], "cosine": [0.999, 0.998, 0.7, 0.9, 0.95][:n],
        "cosine_min": [0.99] * n, "snr_db": [40.0, math.inf, 3.0, 10.0, 12.0][:n],
        "introduced_db": [-40.0, -120.0, -3.0, -15.0, -30.0][:n], "mse": [0.1] * n, "max_abs_err": [0.5] * n,
        "mean_abs_err": [0.1] * n, "rel_err_median": [0.01] * n, "input_snr_db": [math.inf] * n, "order": list(range(n)),
    })


def test_layer_figure_has_one_point_per_layer_and_marks_the_culprit():
    df = frame()
    fig = layer_figure(df, cosine_threshold=0.98, snr_threshold=25, fallback={"n3"})
    cos, snr, bars = fig.data
    assert cos.type == "scattergl" and snr.type == "scattergl" and bars.type == "bar"
    assert len(cos.x) == len(snr.x) == len(bars.x) == 5
    assert snr.y[1] == SNR_DISPLAY_CAP  # inf drawn at the cap
    assert cos.customdata[1][4] == "inf"  # ...and hover says inf
    assert bars.marker.color[2] == "#d62728"  # the highest introduced_db stands out
    assert cos.marker.symbol[3] == "diamond" and cos.marker.color[3] == "#d62728"  # fallback node
    assert {s.y0 for s in fig.layout.shapes} == {0.98, 25}


def test_before_after_matches_by_tensor_name():
    a = frame()
    b = frame().iloc[::-1].assign(snr_db=[1.0, 2.0, 3.0, 4.0, 5.0])
    fig = before_after_figure(a, b)
    after_snr = list(fig.data[2].y)
    assert after_snr == [5.0, 4.0, 3.0, 2.0, 1.0]  # re-ordered to a's topological order by tensor name


def test_report_is_self_contained():
    summary = {"model": "m", "headline": "h <b>", "backend": "onnxruntime-cpu", "samples": 3, "fallback": ["n2"],
               "fallback_precision": "fp16", "outputs": {"y": {"cosine": 0.99, "snr_db": 20.0}}, "task": {},
               "culprit_details": [{"node": "n2", "op_type": "Conv", "introduced_db": -3.0}]}
    html = build_report(frame(), summary, frame(), summary, "quantscope compare m.onnx")
    assert "<script src=" not in html and "Plotly" in html and "h &lt;b&gt;" in html
    cmd = cli_command("m.onnx", "c.npz", None, None, {"calibration": "minmax", "op_types": ["Conv"]}, 8, "cpu", ["n2"])
    assert "--fallback n2" in cmd and "--calib-method minmax" in cmd


def test_sensitivity_and_tradeoff_figures():
    from app.plots import sensitivity_figure, tradeoff_figure

    sens = pd.DataFrame({"node": ["a", "b"], "only_this_quantized_snr_db": [40.0, 5.0], "all_but_this_snr_db": [10.0, 35.0]})
    fig = sensitivity_figure(sens)
    assert list(fig.data[0].y) == ["b", "a"]  # most harmful first
    steps = pd.DataFrame({"strategy": ["greedy", "greedy", "bisect"], "nodes": [0, 1, 3], "value": [10.0, 35.0, 36.0],
                          "fallback": [[], ["b"], ["a", "b", "c"]]})
    t = tradeoff_figure(steps, 30.0)
    assert [tr.name for tr in t.data] == ["greedy", "bisect"] and list(t.data[0].x) == [0, 1]
    assert t.layout.shapes[0].y0 == 30.0
