"""The pure pieces of the dashboard, tested without Streamlit: plots, the fallback table's logic, the node views, the
equivalent command. Most use one real run of the mobile_digits sample, whose pre-processing renames,
fuses and expands nodes."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import engine
from app import layer_table as lt
from app.command import cli_command
from app.inputs import Inputs
from app.node_plots import channel_figure, histogram_figure, neighbourhood_dot
from app.plots import SNR_DISPLAY_CAP, before_after_figure, exact_level, layer_figure, node_ticks, op_type_figure

ROOT = Path(__file__).resolve().parents[2]


def frame(n=5):
    return pd.DataFrame({
        **{m.column: [0.1] * n for m in engine.METRICS},  # every engine metric, those below with chosen values
        "tensor": [f"t{i}" for i in range(n)], "node": [f"n{i}" for i in range(n)], "op_type": ["Conv"] * n,
        "quantized": [True, False, True, True, False][:n], "cosine": [0.999, 0.998, 0.7, 0.9, 0.95][:n],
        "cosine_min": [0.99] * n, "snr_db": [40.0, math.inf, 3.0, 10.0, 12.0][:n],
        "introduced_db": [-40.0, -120.0, -3.0, -15.0, -30.0][:n], "mse": [0.1] * n, "max_abs_err": [0.5] * n,
        "mean_abs_err": [0.1] * n, "rel_err_median": [0.01] * n, "input_snr_db": [math.inf] * n, "order": list(range(n)),
        "original": ["#0 Conv, #1 BatchNormalization", "", "block_a", "n3", "#7 HardSwish"][:n],
    })


def test_layer_figure_has_one_point_per_layer_a_legend_and_labelled_thresholds():
    df = frame()
    fig = layer_figure(df, cosine_threshold=0.98, snr_threshold=25, fallback={"n3"}, inspect="n2")
    cos, snr, bars = fig.data[:3]
    assert cos.type == "scatter" and snr.type == "scatter" and bars.type == "bar"  # SVG: a click selects a point
    assert len(cos.x) == len(snr.x) == len(bars.x) == 5
    assert snr.y[1] == 50  # exact drawn at the next ten above the highest finite SNR (40) plus ten, not at 100
    assert any(a.text == "SNR in dB (higher is better; exact drawn at 50; dashed: threshold 25 dB)" for a in fig.layout.annotations)
    assert exact_level(pd.Series([15.2, math.inf, 37.0])) == 50 and exact_level(pd.Series([95.0, math.inf])) == SNR_DISPLAY_CAP
    assert exact_level(pd.Series([math.inf])) == 10
    assert "SNR (dB): exact" in snr.text[1] and "from your file: #0 Conv, #1 BatchNormalization" in snr.text[0]
    assert all(m.label in snr.text[0] for m in engine.METRICS)  # the full hover iterates the engine's metrics
    assert cos.text[0].startswith("n0 (Conv)<br>from your file: #0 Conv")
    assert "from your file" not in snr.text[3]  # the same name: nothing to add
    assert cos.marker.symbol[3] == "diamond" and cos.marker.color[3] == "#d62728"  # ticked
    assert [t.name for t in fig.data if t.showlegend is not False and t.name] == [
        "INT8 (fallback candidate)", "ticked for fallback", "not quantized (runs in float)", "inspected node"]
    assert {s.y0 for s in fig.layout.shapes} == {0.98, 25, -25}
    # the thresholds and the bars' colours are said in the titles: labels on the plots sat on points and bars (PP-OCRv4)
    assert [a.text for a in fig.layout.annotations] == [
        "cosine similarity (higher is better; dashed: threshold 0.98)", "SNR in dB (higher is better; exact drawn at 50; "
        "dashed: threshold 25 dB)", "noise each node adds, dB of its output's signal (higher is worse): red above -25 dB, "
        "the SNR threshold's level (dashed), orange below it"]
    # only noise above the SNR threshold's level is red; 'none measurable' is grey, never -120 in a hover
    assert list(bars.marker.color) == ["#ff7f0e", "#c7c7c7", "#d62728", "#d62728", "#ff7f0e"]
    assert "introduced noise: none measurable" in snr.text[1] and "-120" not in " ".join(snr.text + bars.text)
    assert list(fig.layout.xaxis3.ticktext) == ["n0", "n1", "n2", "n3", "n4"]


def test_the_first_culprit_is_labelled_only_while_it_harms_the_outputs():
    df = frame().assign(rank=[pd.NA, pd.NA, 1, 2, pd.NA], alone_snr_db=[math.nan, math.nan, 12.0, 30.0, math.nan])
    assert any("#1 culprit: n2" == a.text for a in layer_figure(df, snr_threshold=20, top="n2").layout.annotations)
    assert not any("culprit" in (a.text or "") for a in layer_figure(df, snr_threshold=10, top="n2").layout.annotations)


def test_node_names_on_the_x_axis_are_thinned_only_for_large_graphs():
    assert node_ticks([f"n{i}" for i in range(40)])[0] == list(range(40))
    pos, names = node_ticks([f"n{i}" for i in range(200)])
    assert pos[:3] == [0, 5, 10] and names[1] == "n5" and len(pos) <= 48


def test_before_after_matches_by_tensor_name():
    a = frame()
    b = frame().iloc[::-1].assign(snr_db=[1.0, 2.0, 3.0, 4.0, 5.0])
    fig = before_after_figure(a, b)
    assert list(fig.data[2].y) == [5.0, 4.0, 3.0, 2.0, 1.0]  # re-ordered to a's topological order by tensor name
    assert list(fig.data[0].y) == [40.0, 50.0, 3.0, 10.0, 12.0]  # before's exact tensor at the level both runs share
    # the first run wide and light under the second, so equal stretches show both (grey had sat hidden under green)
    assert fig.data[0].line.width > fig.data[2].line.width and len(fig.data) == 4
    marked = before_after_figure(a, b, changed={a["node"].iloc[1]})
    assert marked.data[-1].name == "precision changed" and list(marked.data[-1].x) == [1]


def test_op_type_chart_writes_every_label_in_full_most_frequent_first():
    hist = {"Conv": 32, "BatchNormalization": 27, "HardSwish": 28, "Identity": 7, "MatMul": 1, "Softmax": 1}
    fig = op_type_figure(hist)
    assert list(fig.data[0].y) == ["Conv", "HardSwish", "BatchNormalization", "Identity", "MatMul", "Softmax"]
    assert fig.layout.yaxis.dtick == 1 and fig.layout.yaxis.automargin and fig.layout.yaxis.autorange == "reversed"


def test_sensitivity_keeps_the_engines_order_most_harmful_at_the_top():
    from app.plots import COLORS, sensitivity_figure

    sens = pd.DataFrame({"node": ["b", "a"], "only_this_quantized_snr_db": [5.0, 40.0], "all_but_this_snr_db": [35.0, 10.0]})
    fig = sensitivity_figure(sens)
    assert list(fig.data[0].y) == ["b", "a"] and fig.layout.yaxis.autorange == "reversed"
    # each axis spans its values: clustered SNRs (YOLOv8n's 26.5-32.5 dB) no longer draw as equal bars from zero
    assert fig.layout.xaxis.range == (1.5, 43.5) and fig.layout.xaxis2.range == (7.5, 37.5)
    # with the gains, the all-INT8 level is drawn in the second panel and a fallback that lowers the SNR is red
    gains = sensitivity_figure(sens.assign(all_but_this_gain_db=[20.0, -5.0]))  # every node INT8: 15 dB
    assert gains.layout.shapes[0].x0 == 15.0 and list(gains.data[1].marker.color) == ["#2ca02c", COLORS["harm"]]
    assert all(len(a.text) <= 50 for a in fig.layout.annotations)  # the panel titles fit (one was cut)
    assert gains.data[1].base == 15.0 and list(gains.data[1].x) == [20.0, -5.0]  # bars from that level
    assert all(len(line) <= 50 for a in gains.layout.annotations for line in a.text.split("<br>"))


def test_tradeoff_strategies_look_different_and_the_chosen_set_stands_out():
    from app.plots import tradeoff_figure

    steps = pd.DataFrame({"strategy": ["start", "greedy", "greedy", "bisect"], "phase": ["start", "round 1", "result", "step"],
                          "nodes": [0, 0, 1, 3], "value": [10.0, 10.0, 35.0, 36.0], "fallback": [[], [], ["b"], ["a", "b", "c"]]})
    t = tradeoff_figure(steps, 30.0, chosen=(("b",), 35.0))
    assert [tr.name for tr in t.data] == ["start", "greedy", "bisect", "chosen set"]
    styles = {(tr.marker.symbol, tr.marker.color, tr.marker.size) for tr in t.data}
    assert len(styles) == 4  # no two alike; sizes differ so coinciding probes stay visible
    assert t.data[0].marker.size > t.data[1].marker.size
    assert t.data[3].marker.symbol == "star" and list(t.data[3].x) == [1] and t.layout.shapes[0].y0 == 30.0
    # the measured sizes only, in numeric order and evenly spaced: small sets no longer crowd the origin of a 0-64 axis
    assert t.layout.xaxis.type == "category" and list(t.layout.xaxis.categoryarray) == [0, 1, 3]
    wide = tradeoff_figure(pd.concat([steps, pd.DataFrame({"strategy": ["start"], "phase": ["all fallback"], "nodes": [64],
                                                           "value": [40.0], "fallback": [["x"] * 64]})]), 30.0)
    assert list(wide.layout.xaxis.categoryarray) == [0, 1, 3, 64]


def test_table_rows_follow_the_engines_ranking_and_show_where_nodes_came_from(mobile):
    _, result = mobile
    rows = lt.node_rows(result, show_all=False)
    assert list(rows["node"]) == [c.node for c in result.summary.culprits]  # the engine's order, not re-sorted
    assert rows["node"].iloc[0] == "mix_conv" and rows["original"].iloc[0] == "mix_conv, mix_bn"
    everything = lt.node_rows(result, show_all=True)
    assert len(everything) == result.layers["node"].nunique()
    expanded = everything[everything["original"] == "#2 HardSwish"]
    assert sorted(expanded["op_type"]) == ["HardSigmoid", "Mul"]  # HardSwish became two nodes; the user finds both by its index
    assert list(lt.filter_rows(everything, [], "hardswish")["node"]) == ["HardSigmoid_0", "Mul_0"]  # '#2 HardSwish' (unnamed)
    assert set(lt.filter_rows(everything, [], "#2 Hard")["node"]) == set(expanded["node"])
    assert list(lt.filter_rows(everything, [], "MIX_BN")["node"]) == ["mix_conv"]  # the fused BatchNormalization's name
    cands = lt.candidates(result)
    table = lt.table_frame(everything, {"mix_conv"}, cands)
    assert bool(table.loc[table["node"] == "mix_conv", lt.TICK].item()) is True and table[lt.TICK].dtype == "boolean"
    assert lt.table_frame(everything.iloc[:0], {"mix_conv"}, cands)[lt.TICK].dtype == "boolean"  # a filter that left no row
    assert table.loc[table["node"].str.startswith("Mul"), lt.TICK].isna().all()  # not tickable
    assert (table["introduced_db"].dropna() > -120).all()  # the floor shows blank, never -120
    metric_columns = [m.column for m in engine.METRICS]
    assert [c for c in table.columns if c in metric_columns] == metric_columns
    # after a rebuild the nodes in fallback come first, where they can be unticked
    held = result.summary.culprits[2].node
    layers = result.layers.copy()
    layers.loc[layers["node"] == held, ["quantized", "rank"]] = [False, pd.NA]
    rebuilt = dataclasses.replace(result, layers=layers, summary=dataclasses.replace(result.summary, fallback=(held,)))
    assert list(lt.node_rows(rebuilt, show_all=False)["node"]) == [held] + [c.node for c in result.summary.culprits if c.node != held]


def test_table_edits_tick_candidates_and_refuse_other_nodes(mobile):
    _, result = mobile
    nodes = list(lt.node_rows(result, show_all=True)["node"])
    cands = lt.candidates(result)
    mul = next(n for n in nodes if n.startswith("Mul"))
    edits = {0: {lt.TICK: True}, 1: {lt.TICK: True}, nodes.index(mul): {lt.TICK: True}, 2: {lt.INSPECT: "x"}}
    ticks, refused = lt.apply_edits(frozenset({nodes[2]}), nodes, edits, cands)
    assert ticks == {nodes[0], nodes[1], nodes[2]} and refused == [mul]
    ticks, _ = lt.apply_edits(frozenset({nodes[0]}), nodes, {"0": {lt.TICK: False}}, cands)
    assert ticks == set()
    assert lt.refusal(mul, "Mul", result.summary.config.op_types) == (
        f"The node '{mul}' (Mul) is not quantized, so falling it back would change nothing; pick a "
        "Conv/ConvTranspose/Gemm/MatMul node from the ranking.")


def test_the_cli_refuses_the_same_node_in_one_sentence(mobile, capsys):
    from engine.cli.main import main

    _, result = mobile
    mul = next(n for n in result.layers["node"] if n.startswith("Mul"))
    assert main(["rebuild", str(result.run_dir), "--fallback", mul, "--no-index", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --fallback: {lt.refusal(mul, 'Mul', result.summary.config.op_types)}\n"


def test_graph_view_names_nodes_as_the_user_knows_them_and_marks_qdq_edges(mobile):
    _, result = mobile
    from engine.report_data import run_neighbourhood

    nb = run_neighbourhood(result.run_dir, result.layers, "mix_conv", hops=1)
    dot = neighbourhood_dot(nb, {"mix_conv"})
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    assert '"mix_conv" [label="mix_conv\\nConv, ticked for fallback\\nfrom your file: mix_conv, mix_bn"' in dot
    assert "from your file: mix_act" in dot  # the HardSwish it feeds, now HardSigmoid + Mul
    qdq = [line for line in dot.splitlines() if "Q/DQ (INT8)" in line]
    assert len(qdq) == 1 and qdq[0].startswith('"features_relu" -> "mix_conv"')


def test_tensor_view_figures_show_the_planted_outlier_channel_and_the_clipping(mobile):
    _, result = mobile
    tv = engine.tensor_view(result.run_dir, "mix_conv")
    planted = 5  # sample_models/catalog.json: mobile_digits outlier channel
    fig = channel_figure(tv.channels.max_abs, tv.clip_high, what=tv.tensor, limit_label="INT8 limit")
    assert fig.data[0].marker.color[planted] == "#d62728" and sum(c == "#d62728" for c in fig.data[0].marker.color) == 1
    hist = histogram_figure(tv)
    assert {a.text for a in hist.layout.annotations} >= {"INT8 clips below", "INT8 clips above", "calibrated max"}
    assert sum(hist.data[0].y) == np.prod([tv.samples, *[16, 16, 16]])  # every reference value counted


def test_the_command_reproduces_the_run_with_the_users_own_file_names_and_image_preprocessing(mobile):
    inputs, result = mobile
    cfg = engine.RunFolder(result.run_dir).read_config()
    cmd = cli_command(cfg, inputs)
    assert cmd.startswith("quantscope compare sample_models/mobile_digits.onnx \\\n  --calib sample_models/digits_calib.npz")
    assert "--image-" not in cmd and "--percentile" not in cmd and "--fallback" not in cmd
    images = engine.ImagePreprocess(height=224, width=224, layout="NCHW", color="BGR", mean=(0.485, 0.456, 0.406),
                                    std=(0.229, 0.224, 0.225))
    uploaded = Inputs("mnv3.onnx", "/srv/runs/ws/uploads/ab12/model.onnx", "/srv/runs/ws/uploads/ab12/calib.zip",
                      images=images, uploaded_as=(("model", "mnv3 final.onnx"), ("calib", "photos.zip")))
    quant = dataclasses.replace(cfg.quant, calibration=engine.CalibrationMethod.PERCENTILE, percentile=99.99,
                                fallback=frozenset({"mix_conv"}), fallback_precision=engine.FallbackPrecision.FP32,
                                ranges=(engine.RangeOverride("features_relu_out", 0.0, 8.0),))
    cmd = cli_command(dataclasses.replace(cfg, quant=quant, images=images, screen_samples=16), uploaded)
    flat = cmd.replace(" \\\n  ", " ")
    assert "/srv/" not in cmd and "uploads" not in cmd  # never the server's own paths
    assert flat.startswith("quantscope compare 'mnv3 final.onnx' --calib photos.zip --batch 50 --calib-method percentile "
                           "--percentile 99.99 --op-types Conv ConvTranspose Gemm MatMul --provider cpu --screen-samples 16 "
                           "--fallback mix_conv --fallback-precision fp32 --range features_relu_out=0,8 --image-layout NCHW "
                           "--image-color BGR --image-size 224x224 --image-scale 0.00392156862745098 "
                           "--image-mean 0.485,0.456,0.406 --image-std 0.229,0.224,0.225 --out runs/triage")


def test_the_command_parses_back_to_the_same_settings():
    import shlex

    from engine.cli.main import build_parser

    images = engine.ImagePreprocess(height=32, width=32, layout="NCHW", color="GRAY", mean=(0.5,), std=(0.25,))
    cfg = engine.RunConfig(model="m.onnx", batch_size=25, requested_provider="auto", provider="cpu", backend="onnxruntime-cpu",
                           quant=engine.QuantConfig(fallback=frozenset({"a b"}), ranges=(engine.RangeOverride("t", -1.5, 2.0),)),
                           samples=1, calibration_samples=1, has_labels=False, cache_bytes=0, memory_bytes=0, images=images)
    cmd = cli_command(cfg, Inputs("m.onnx", "/x/model.onnx", "/x/calib.zip", images=images,
                                  uploaded_as=(("model", "m.onnx"), ("calib", "digits.zip"))))
    args = build_parser().parse_args(shlex.split(cmd.replace("\\\n", " "))[1:])
    assert (args.model, args.calib, args.batch, args.fallback, args.ranges) == ("m.onnx", "digits.zip", 25, ["a b"], ["t=-1.5,2"])
    assert (args.image_layout, args.image_color, args.image_size, args.image_scale, args.image_mean, args.image_std) == (
        "NCHW", "GRAY", "32x32", 1 / 255, "0.5", "0.25")


def test_the_layer_figure_of_a_large_graph_stays_well_under_a_megabyte():
    rows = 1000
    df = pd.concat([frame()] * (rows // 5), ignore_index=True)
    df["tensor"] = [f"/model/block.{i}/conv/Conv_output_0" for i in range(rows)]
    df["node"] = [f"/model/block.{i}/conv/Conv" for i in range(rows)]
    df["original"] = [f"/model/block.{i}/conv/Conv, /model/block.{i}/bn/BatchNormalization" for i in range(rows)]
    df["order"] = range(rows)
    assert len(layer_figure(df, full_hover=False).to_json()) < 800_000  # what the report draws for a graph this large
    assert "from your file: /model/block.7/conv/Conv" in layer_figure(df, full_hover=False).data[1].text[7]


def test_origins_of_a_layers_csv_read_back_are_blank_not_nan(tmp_path):
    path = tmp_path / "layers.csv"
    frame().assign(original=["#0 Conv", "", "block_a", "", ""]).to_csv(path, index=False)
    back = pd.read_csv(path)  # empty cells come back as NaN
    assert back["original"].isna().sum() == 3
    assert lt.origins(back) == {"n0": "#0 Conv", "n1": "", "n2": "block_a", "n3": "", "n4": ""}
    assert lt.origins(back.drop(columns="original")) == {}


def test_the_table_shows_each_nodes_gain_and_the_samples_it_was_ranked_on(mobile):
    """A staged ranking measures every node on a few samples, then the strongest on more: PP-OCRv4's recogniser showed
    82 dB beside 29 dB with nothing to say the first came from 2 samples, the second from 16."""
    _, result = mobile
    s = result.summary
    table = lt.table_frame(lt.node_rows(result, show_all=False), set(), lt.candidates(result))
    by_node = table.set_index("node")
    for c in s.culprits:
        assert by_node.loc[c.node, "ranked_on"] == c.samples > 0
        assert by_node.loc[c.node, "gain_db"] == pytest.approx(c.gain_db)
    assert s.culprits[0].samples == s.ranking.samples
    again = engine.Culprit.from_dict(s.culprits[0].to_dict(), 1)
    assert again == s.culprits[0]  # summary.json keeps the count


def test_the_ranking_sentence_names_the_view_that_orders_the_list():
    """With the gain view the caption said the list was ordered by the SNR with only that node in INT8 (it was not)."""
    alone = engine.RankingInfo("measured harm", 16, 40, 14.7, view="alone", plan="every unit on 2 samples, the 10 strongest of both views on 16")
    gain = dataclasses.replace(alone, view="gain")
    assert lt.ranking_sentence(alone).startswith("Ranked by measured harm: the final outputs' SNR with only that node in INT8")
    assert lt.ranking_sentence(gain).startswith("Ranked by measured gain: how much falling back only that node raises the "
                                                "final outputs' SNR from 14.70 dB with every node in INT8 (higher first; this order was chosen because "
                                                "falling back its top three together recovered more")
    assert "the top of the list on 16 samples" in lt.ranking_sentence(gain)
    one = engine.Culprit(1, "Conv.3", ("Conv.3",), "Conv", 30.0, 2.0, 20.0, 25.0, 10.0, samples=1)  # a budget-limited plan
    assert "the top of the list on 1 sample, each node on as many as its ranked-on column says" in lt.ranking_sentence(alone, (one,))
    assert lt.ranking_sentence(dataclasses.replace(alone, method="introduced noise")).startswith("Ranked by the noise")
    # after a rebuild the list is still the all-INT8 build's ranking, and the caption says so (PP-OCRv4 trial)
    assert lt.ranking_sentence(alone, (one,), 3).endswith(
        " Measured against every node in INT8, not against this build with 3 node(s) in fallback: with those in fallback, "
        "another node's effect can differ.")
    assert "Measured against" not in lt.ranking_sentence(alone, (one,), 0)
    # a staged list: the refined block first, then the rest in their first-stage order (captcha trial: rank 6 at 30.1 dB
    # above rank 7 at 23.0 dB read as a broken sort)
    staged = [dataclasses.replace(one, rank=i + 1, samples=n) for i, n in enumerate((8, 8, 4, 4))]
    assert lt.ranking_sentence(alone, tuple(staged)) == (
        "Ranked by measured harm: the final outputs' SNR with only that node in INT8 (lower is worse). The first 2 were "
        "measured again on 8 samples and come first, in order among themselves; the rest follow in their order on 4 "
        "samples, so a value further down can be worse than one above it (probes: every unit on 2 samples, the 10 "
        "strongest of both views on 16).")
    assert "measured harm: the final outputs' SNR with only that node in INT8 (lower is worse). Below the 3 node(s) in " \
           "fallback, the first 2 were measured again on 8 samples" in lt.ranking_sentence(alone, tuple(staged), 3)
    # first-stage figures that disagreed with the refined ones are not given, and the caption says why (PP-OCRv4 trial:
    # a node shown at +26.91 dB on 2 samples cost 0.6 dB when it was fallen back)
    rough = [c if c.samples == 8 else dataclasses.replace(c, alone_snr_db=math.nan, gain_db=math.nan) for c in staged]
    assert lt.ranking_sentence(dataclasses.replace(alone, first_stage_error_db=26.94), tuple(rough)) == (
        "Ranked by measured harm: the final outputs' SNR with only that node in INT8 (lower is worse). The first 2 were "
        "measured again on 8 samples and come first, in order among themselves. The rest follow in a rough order, without "
        "figures: for the nodes measured both ways, figures on 4 samples were off by up to 26.9 dB from those on 8, too few "
        "samples for this model's outputs; the Sensitivity page measures every node on more (probes: every unit on 2 "
        "samples, the 10 strongest of both views on 16).")


def test_a_delta_of_no_change_is_grey_not_a_gain():
    """The captcha re-trial read 'Text read the same as FP32 90.62% +0.00%' under a green arrow up as a gain."""
    from app.summary_view import delta_color

    assert [delta_color(d) for d in ("+0.00%", "-0.00 dB", "+0.000000", None)] == ["off", "off", "off", "normal"]
    assert [delta_color(d) for d in ("+2.89 dB", "-0.01%", "+0.00681")] == ["normal"] * 3


def test_an_fp8_run_names_fp8_in_the_legend_and_hover():
    """An FP8 run's Layers plot said 'INT8 (fallback candidate)' (browser re-check)."""
    df = frame()
    df["quantized"] = [True, False, True, False, True]
    fp8 = layer_figure(df, quantized="FP8")
    names = {t.name for t in fp8.data if t.name}
    assert "FP8 (fallback candidate)" in names and not any("INT8" in n for n in names)
    assert any("FP8 (fallback candidate)" in str(t.hovertext or t.text or "") for t in fp8.data)
    assert "INT8 (fallback candidate)" in {t.name for t in layer_figure(df).data if t.name}


def test_the_neighbourhood_names_the_precision():
    from app.node_plots import neighbourhood_dot
    from engine.node_view import Edge, Neighbour, Neighbourhood

    nb = Neighbourhood("b", (Neighbour("a", "Conv", True, 20.0, "a", 1), Neighbour("b", "Relu", False, 18.0, "b", 0)),
                       (Edge("a", "b", "t", 12.0, True),), ())
    dot = neighbourhood_dot(nb, quantized="FP8")
    assert "Q/DQ (FP8)" in dot and "INT8" not in dot
    assert "Q/DQ (INT8)" in neighbourhood_dot(nb)


def test_a_result_on_images_is_not_of_arrays_applied_since(mobile, tmp_path):
    """A trial compared a zip of photos, then applied an .npz: the 9-sample result stayed on every page without a word
    (image runs have no content digest, so only differing digests were caught)."""
    import dataclasses
    import shutil

    from app.summary_view import _other_samples

    _, result = mobile
    run = tmp_path / "run"
    shutil.copytree(result.run_dir, run, ignore=shutil.ignore_patterns("history", "cache"))
    folder = engine.RunFolder(run)
    on_arrays = dataclasses.replace(result, run_dir=run)
    assert result.summary.data_sha256  # arrays: told apart by digest
    assert _other_samples(on_arrays, "0" * 64, None) and not _other_samples(on_arrays, result.summary.data_sha256, None)
    photos = engine.ImagePreprocess(height=8, width=8, layout="NCHW", color="GRAY")
    folder.write_config(dataclasses.replace(folder.read_config(), images=photos))
    on_images = dataclasses.replace(on_arrays, summary=dataclasses.replace(result.summary, data_sha256=""))
    assert _other_samples(on_images, result.summary.data_sha256, None)  # arrays applied after a run on images
    assert _other_samples(on_images, "", dataclasses.replace(photos, height=16))  # images prepared another way
    assert not _other_samples(on_images, "", photos)  # the same preparation: nothing to tell by
