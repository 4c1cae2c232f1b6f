"""Sensitivity and automatic fallback on the sample outlier model."""

from __future__ import annotations

import importlib
import json
import math
import re

import pandas as pd
import pytest

from engine import ConfigError, autofallback, compare, load_result, sensitivity
from engine.cli.main import main


def planted(catalog):
    info = catalog["models"]["resnet_digits_outlier"]["outlier"]
    return set(info["producer_nodes"]) | set(info["consumer_nodes"])


def test_the_no_calibration_fixture_catches_a_calibration(no_calibration, tiny, tmp_path):
    with pytest.raises(AssertionError, match="must not recalibrate"):
        compare(tiny / "tiny.onnx", tiny / "data.npz", out_dir=tmp_path / "run", batch_size=4, provider="cpu")


def test_sensitivity_both_views(run_copy, catalog, outlier_run, no_calibration):
    frame = sensitivity(run_copy, samples=None)
    assert (run_copy / "sensitivity.csv").is_file()
    ops = set(outlier_run.summary.config.op_types)
    assert set(frame["node"]) == set(outlier_run.layers.loc[outlier_run.layers["op_type"].isin(ops), "node"])
    worst_alone = frame.sort_values("only_this_quantized_snr_db").iloc[0]["node"]
    best_gain = frame.sort_values("all_but_this_snr_db", ascending=False).iloc[0]["node"]
    assert worst_alone in planted(catalog) and best_gain in planted(catalog)
    # view (b) of the planted node is exactly a rebuild with it in fallback: same final SNR
    row = frame[frame["node"] == best_gain].iloc[0]
    assert row["all_but_this_gain_db"] > 20
    assert list(pd.read_csv(run_copy / "sensitivity.csv").columns[:2]) == ["node", "op_type"]


def test_autofallback_finds_the_planted_node(run_copy, clean_run, catalog, no_calibration):
    target = f"snr_db={clean_run.final_output().snr_db - 1:.4f}"
    rc = main(["autofallback", str(run_copy), "--target", target, "--quiet"])
    assert rc == 0
    doc = json.loads((run_copy / "autofallback.json").read_text())
    assert {"fallback", "met", "target", "achieved", "steps"} <= set(doc)
    assert doc["met"] is True and float(doc["achieved"]) >= clean_run.final_output().snr_db - 1
    assert planted(catalog) & set(doc["fallback"]) and len(doc["fallback"]) <= 2
    for name, r in doc["strategies"].items():
        assert len(r["fallback"]) <= len(r["before_pruning"]), name  # pruning never grows a set
    assert doc["steps"] and all({"fallback", "value", "seconds"} <= set(s) for s in doc["steps"])
    summary = json.loads((run_copy / "summary.json").read_text())  # the run was rebuilt with that set
    assert summary["fallback"] == sorted(doc["fallback"]) and (run_copy / "history" / "1" / "summary.json").is_file()


def test_residual_units_are_probed_with_their_add_and_applied_as_their_quantized_nodes(run_copy, clean_run):
    said = []
    res = autofallback(run_copy, f"snr_db={clean_run.final_output().snr_db - 1}", units="residual", progress=said.append)
    assert res.met and "block3_2_conv" in res.fallback and "block3_add" not in res.fallback  # an Add has no Q/DQ to drop
    # each prune try is said before it runs, naming what it drops; a one-probe step no longer reads 'probe 1/1'
    tries = [ev.message for ev in said if re.match(r"(greedy|bisect) search, prune \d+/\d+: without \S+", ev.message)]
    assert tries and not any("probe 1/1 of this step" in ev.message for ev in said)
    assert any("block3_add" in step.fallback for step in res.steps)  # it travelled with its feeders in the probes
    assert load_result(run_copy).summary.fallback == tuple(sorted(res.fallback))  # and the rebuild took the set


def test_unreachable_target_reports_the_best_reached(run_copy):
    res = autofallback(run_copy, "snr_db=500", apply=False)
    assert res.met is False
    assert math.isfinite(res.achieved) and res.achieved > 40
    assert res.message.startswith("The target, final-output SNR of at least 500 dB, cannot be met even with every quantizable "
                                  "node in fallback: the best reached is final-output SNR ")


def test_unreachable_target_within_max_nodes_gives_the_closest_set_within_the_limit(run_copy):
    """Asked for at most 2 nodes, a search whose target no set reaches rebuilt all 10: it now offers the closest set of
    at most 2, measured by greedy's rounds, and says both figures."""
    res = autofallback(run_copy, "snr_db=500", max_nodes=2, apply=False)
    assert res.met is False and 1 <= len(res.fallback) <= 2
    everything = res.extra["all_fallback"]
    assert res.achieved < everything and res.achieved > res.extra["baseline"]  # closer than all INT8, short of all nodes
    assert res.strategy == "greedy" and res.strategies["greedy"].achieved == res.achieved
    assert re.fullmatch(r"The target, final-output SNR of at least 500 dB, cannot be met even with every quantizable node "
                        r"in fallback \(10 nodes reach final-output SNR [\d.]+ dB\)\. Within the 2 node\(s\) allowed, the "
                        r"closest, falling back 2 node\(s\) \([^)]+\), reaches final-output SNR [\d.]+ dB; found by greedy\.",
                        res.message), res.message


def test_no_set_within_the_limit_applies_nothing(run_copy, monkeypatch, capsys):
    """Where no unit fits --max-nodes (a residual unit of 2 nodes, at most 1) greedy chooses nothing: the search said
    'falling back 0 node(s) ()' and the CLI rebuilt plain INT8 over the user's fallback. Now it says so and rebuilds
    nothing."""
    af = importlib.import_module("engine.diagnose.autofallback")
    monkeypatch.setattr(af, "_greedy", lambda s, units, max_nodes: ([], []))
    before = (run_copy / "summary.json").read_text()
    assert main(["autofallback", str(run_copy), "--target", "snr_db=500", "--max-nodes", "1", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"No set of at most 1 node\(s\) improves on the full INT8 model \(final-output SNR [\d.]+ dB\), so there is "
                     r"nothing to fall back within that limit\.", out), out
    assert "left the build as it was (no set to apply)" in out
    assert (run_copy / "summary.json").read_text() == before and not (run_copy / "history").exists()
    assert json.loads((run_copy / "autofallback.json").read_text())["fallback"] == []


def test_bad_target_is_one_sentence(run_copy, capsys):
    assert main(["autofallback", str(run_copy), "--target", "speed=3", "--quiet"]) == 2
    assert capsys.readouterr().err == ("error: The target 'speed=3' is not METRIC=VALUE with METRIC one of cosine, snr_db, "
                                       "top1_agreement, accuracy_drop, text_agreement, e.g. snr_db=30.\n")


def test_a_target_the_run_cannot_measure_is_one_sentence(tiny, tmp_path):
    run = tmp_path / "run"  # the tiny model's output is N x 3 but the run has no labels
    compare(tiny / "tiny.onnx", tiny / "data.npz", out_dir=run, batch_size=4, provider="cpu", screen_samples=0)
    with pytest.raises(ConfigError) as err:
        autofallback(run, "accuracy_drop=0.01", apply=False)
    assert str(err.value) == ("The target accuracy_drop=0.01 cannot be measured on this run: the run has no labels (give --labels "
                              "to compare); target snr_db or cosine instead.")
    with pytest.raises(ConfigError) as err:  # a classifier has no text to read
        autofallback(run, "text_agreement=1", apply=False)
    assert str(err.value) == ("The target text_agreement=1 cannot be measured on this run: no output of the model holds a CTC "
                              "recogniser's scores; target snr_db or cosine instead.")


def test_a_set_over_max_nodes_is_never_picked_and_the_sentence_names_it():
    """A browser trial asked for at most 5 nodes and got bisect's 26, said to meet the target."""
    from engine.diagnose.autofallback import StrategyResult, pick_result
    from engine.diagnose.targets import Target

    target = Target.parse("snr_db=20")
    greedy = StrategyResult("greedy", ("a", "b", "c", "d", "e"), ("a", "b", "c", "d", "e"), False, 16.9, 109)
    bisect = StrategyResult("bisect", tuple(f"n{i}" for i in range(26)), (), True, 21.14, 37)
    best, sentence = pick_result({"greedy": greedy, "bisect": bisect}, target, 5)
    assert best is greedy
    assert sentence == ("No set of at most 5 node(s) meets the target, final-output SNR of at least 20 dB: the closest, "
                        "falling back 5 node(s) (a, b, c, d, e), reaches final-output SNR 16.9 dB; found by greedy; bisect "
                        "met it with 26 nodes, more than the 5 allowed.")
    best, sentence = pick_result({"greedy": greedy, "bisect": bisect}, target, None)  # no limit: the set that meets it
    assert best is bisect and sentence.startswith("Falling back 26 node(s) (n0,") and "(meets the target, final-output SNR of at least 20 dB); found by bisect." in sentence
    small = StrategyResult("bisect", ("a", "b"), (), True, 20.5, 30)
    assert pick_result({"greedy": greedy, "bisect": small}, target, 5)[0] is small  # within the limit and meeting it


def test_a_set_measured_on_the_way_competes_with_the_answers():
    """PP-OCRv4's detector, at most 3 nodes for 12 dB: greedy answered a 7.21 dB set, while bisect's pruning had measured
    a 3-node set at 10.12 dB, which the page's own chart showed; "Apply suggested fallback" ticked the worse one."""
    from engine.diagnose.autofallback import Step, StrategyResult, measured_sets, pick_result
    from engine.diagnose.targets import Target

    target = Target.parse("snr_db=12")
    greedy = StrategyResult("greedy", ("Conv.3", "Conv.0", "Conv.4"), ("Conv.3", "Conv.0", "Conv.4"), False, 7.21, 40)
    bisect = StrategyResult("bisect", ("Conv.0", "Conv.2", "Conv.3", "Conv.5"), (), True, 12.4, 12)
    steps = [Step("start", "all INT8", (), 4.45, False, 1.0),
             Step("bisect", "bisect", ("Add.1", "Conv.0", "Conv.2", "Conv.3", "Conv.5"), 12.4, True, 1.0),  # Add: not quantized
             Step("bisect", "prune 3/4", ("Add.1", "Conv.0", "Conv.2", "Conv.3"), 10.12, False, 1.0),
             Step("bisect", "prune 4/4", ("Conv.2", "Conv.3", "Conv.5"), 9.40, False, 1.0),
             Step("greedy", "greedy round 1", ("Conv.4",), 5.0, False, 1.0)]
    quantized = frozenset({"Conv.0", "Conv.2", "Conv.3", "Conv.4", "Conv.5"})
    measured = measured_sets(steps, quantized)
    assert [m.fallback for m in measured] == [(), ("Conv.0", "Conv.2", "Conv.3", "Conv.5"), ("Conv.0", "Conv.2", "Conv.3"),
                                              ("Conv.2", "Conv.3", "Conv.5"), ("Conv.4",)]
    best, sentence = pick_result({"greedy": greedy, "bisect": bisect}, target, 3, measured)
    assert best.fallback == ("Conv.0", "Conv.2", "Conv.3") and best.achieved == 10.12
    assert sentence == ("No set of at most 3 node(s) meets the target, final-output SNR of at least 12 dB: the closest, "
                        "falling back 3 node(s) (Conv.0, Conv.2, Conv.3), reaches final-output SNR 10.12 dB; found by bisect "
                        "(prune 3/4); bisect met it with 4 nodes, more than the 3 allowed.")
    # a set within the limit that met the target on the way is the answer, the smallest first
    steps.append(Step("greedy", "prune 1/3", ("Conv.0", "Conv.2"), 12.1, True, 1.0))
    best, sentence = pick_result({"greedy": greedy, "bisect": bisect}, target, 3, measured_sets(steps, quantized))
    assert best.fallback == ("Conv.0", "Conv.2") and best.met and sentence.endswith("found by greedy (prune 1/3).")
    # an answer equal to a set measured on the way is named as the answer
    assert pick_result({"bisect": bisect}, target, None, measured_sets(steps[:2], quantized))[0] is bisect


def test_the_probe_budget_counts_no_more_greedy_rounds_than_max_nodes():
    from engine.diagnose.autofallback import GREEDY_ROUND_WIDTH, probe_budget

    w = GREEDY_ROUND_WIDTH
    assert probe_budget(51, "greedy") == 2 + 51 + w * 50 + 51 + 2
    assert probe_budget(51, "greedy", 3) == 2 + 51 + w * 2 + 3 + 2  # at most 3 rounds, 3 to prune
    assert probe_budget(51, "both", 3) == probe_budget(51, "greedy", 3) + probe_budget(51, "bisect") - 2
    assert probe_budget(2, "greedy", 5) == probe_budget(2, "greedy")  # a limit above the unit count changes nothing
