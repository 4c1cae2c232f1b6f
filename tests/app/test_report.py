"""The HTML report: small, plotly.js loaded once or, offline, inside; its tables read without scripts."""

from __future__ import annotations

import dataclasses
import re

import engine
from app.report import build_report


def test_the_offline_report_carries_plotly_and_otherwise_matches(mobile):
    """A browser trial's report read 'The plots need plotly.js' with no network and nothing beside it."""
    from app.report import plotly_js

    inputs, result = mobile
    args = (result.layers, result.summary, result.layers, result.summary, "quantscope compare m.onnx", ("a note",))
    online, offline = build_report(*args), build_report(*args, offline=True)
    assert plotly_js().decode() in offline and "qsNoPlotly" not in offline and "plotly.min.js beside" not in offline  # no loader
    assert offline.count("Plotly.newPlot") == 1 and offline.count("<script>") == 2
    assert offline.split("<p class=\"note\">plotly.js")[0] == online.split("<p class=\"note\">Plots load")[0]  # same page


def test_report_is_small_loads_plotly_once_and_reads_without_scripts(mobile):
    inputs, result = mobile
    html = build_report(result.layers, result.summary, result.layers, result.summary, "quantscope compare m.onnx <x>",
                        ("a note",))
    assert len(html.encode()) < 1_000_000
    assert "function(t,e){" not in html[:200_000] and html.count("cdn.plot.ly/plotly-") == 1  # not inlined; one loader
    assert html.count("Plotly.newPlot") == 1 and "qs-before-after" in html
    # without plotly.js the page points at the download that carries it (it sent users to a file the dashboard lacks)
    assert "HTML report, offline" in html and "(from the dashboard)" not in html
    assert "\\'" not in html.split("function qsNoPlotly")[1].split("</script>")[0]  # a stray quote broke the whole script
    assert "quantscope compare m.onnx &lt;x&gt;" in html
    assert "FP32 accuracy" in html and "<pre>" in html and '"top1_agreement"' not in html  # a table, not pasted JSON
    assert "mix_conv, mix_bn" in html  # culprits with the names of the user's file
    assert not re.search(r"\d\.\d{9,}", html.split("<script>")[0])  # no raw floats in the tables
    # a culprit that adds no measurable noise reads so, as the app's hover does, not as "none" (which read as 'no noise at all')
    quiet = dataclasses.replace(result.summary, culprits=(dataclasses.replace(result.summary.culprits[0], introduced_db=engine.FLOOR_DB),))
    html = build_report(result.layers, quiet, None, None, "quantscope compare m.onnx", ())
    assert "<td>none measurable</td>" in html and "<td>none</td>" not in html
    assert "computed as written with float biases (what TensorRT computes)" in html  # which execution the figures are of
    # a model with several outputs: the headline's figure, every output together, is a row of its own
    second = engine.OutputMetrics.from_dict("extra", {**next(iter(result.summary.outputs.values())).to_dict(), "snr_db": 10.0})
    two = dataclasses.replace(result.summary, outputs={**result.summary.outputs, "extra": second},
                              float_outputs=(*result.summary.outputs, "extra"))
    html = build_report(result.layers, two, None, None, "", ())
    row = html.split("all 2 outputs together (each against its own signal)</td>")[1].split("</tr>")[0]
    assert row == "<td></td><td></td><td>" + engine.format_metric("snr_db", two.outputs_together_snr_db()) + "</td>" + "<td></td>" * 4
    assert "all 2 outputs" not in build_report(result.layers, result.summary, None, None, "", ())
    label = dataclasses.replace(two, float_outputs=tuple(result.summary.outputs))  # 'extra' an integer label output
    assert "its 1 float output together" in build_report(result.layers, label, None, None, "", ())


def test_an_fp8_build_gets_the_fp8_note_not_the_int8_one(mobile):
    """A trial's FP8 run read the INT8 note (int32 biases, ONNX Runtime's own INT8 kernels) and nothing said that the
    CPU emulates FP8."""
    import dataclasses

    from app.report import EXECUTION_NOTE, FP8_NOTE, execution_note

    _, result = mobile
    fp8 = dataclasses.replace(result.summary, config=dataclasses.replace(result.summary.config, precision=engine.Precision.FP8))
    assert execution_note(fp8.config.precision) == FP8_NOTE and "emulates" in FP8_NOTE
    assert execution_note(result.summary.config.precision) == EXECUTION_NOTE
    html = build_report(result.layers, fp8, result.layers, fp8, "quantscope compare m.onnx", ())
    assert "emulates it" in html and "int32" not in html
