"""The culprit ranking ranks by measured harm to the final outputs: known answers on a model built to fool the old
introduced-noise ranking (tests/engine/amplified_model.py)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx
import pandas as pd
import pytest

import engine
from engine import compare, rebuild
from engine.cli.main import main
from tests.engine.amplified_model import amplified_data, amplified_model
from tests.engine.conftest import SAMPLES

QUANTIZED = {"early_conv", "branch1_conv", "branch2_conv", "mid_conv", "fc", "late_conv", "late_fc"}


@pytest.fixture(scope="module")
def amplified(tmp_path_factory):
    d = tmp_path_factory.mktemp("amplified")
    onnx.save(amplified_model(), d / "m.onnx")
    np.savez(d / "x.npz", x=amplified_data())
    return d


@pytest.fixture()
def run(amplified, tmp_path):
    return compare(amplified / "m.onnx", amplified / "x.npz", out_dir=tmp_path / "run", batch_size=16, provider="cpu")


def test_the_old_introduced_noise_ranking_is_fooled(run):
    """What the previous headline and 'Tick the top-k' used: a node that is not quantized, then a harmless late conv."""
    old = run.layers.sort_values("introduced_db", ascending=False).drop_duplicates("node")
    assert old.iloc[0]["node"] == "late_spike" and not old.iloc[0]["quantized"]
    assert old[old["quantized"]].iloc[0]["node"] == "mid_conv"


def test_the_ranking_puts_the_amplified_early_node_first(run):
    s = run.summary
    assert [c.node for c in s.culprits][0] == "early_conv"
    assert {c.node for c in s.culprits} == QUANTIZED  # every fallback candidate, and nothing else
    assert s.headline.startswith("Quantizing early_conv (Conv) hurts the final outputs most: alone in INT8 it brings them to")
    # one stage for 7 units: both views of each (14), the all-INT8 baseline, and each view's top three together
    assert s.ranking.method == "measured harm" and s.ranking.samples == 32 and s.ranking.probes == 17
    assert s.ranking.view == "alone" and s.ranking.top_set_gain_db["alone"] > 3
    assert s.timings["rank"] > 0
    # the Mul that amplifies noise is shown as that, beside the ranking, never in it
    spike = next(a for a in s.amplifiers if a.node == "late_spike")
    assert spike.source == "residual_add" and spike.amplification_db > 3
    assert spike.sentence.startswith("late_spike (Mul) is not quantized but amplifies the noise from residual_add by ")
    ranked = run.layers.drop_duplicates("node").set_index("node")
    assert ranked.loc["early_conv", "rank"] == 1 and ranked["rank"].isna().loc["late_spike"]


def test_falling_back_the_headline_gains_what_the_old_headline_did_not(run):
    before = run.final_output().snr_db
    ours = rebuild(run.run_dir, fallback=["early_conv"]).final_output().snr_db - before
    old = rebuild(run.run_dir, fallback=["mid_conv"]).final_output().snr_db - before
    assert ours > 2.0 and old < 1.0


def test_a_rebuild_reuses_the_ranking_and_drops_the_fallback_units(run):
    again = rebuild(run.run_dir, fallback=["early_conv"])
    assert again.summary.ranking.reused and again.summary.ranking.probes == run.summary.ranking.probes
    assert [c.node for c in again.summary.culprits] == [c.node for c in run.summary.culprits][1:]
    # the unit in fallback keeps what the all-INT8 ranking measured, without a place, so it can be judged before unticking
    first = run.summary.culprits[0]
    (held,) = again.summary.held
    assert (held.node, held.rank, held.alone_snr_db, held.gain_db, held.samples) == ("early_conv", 0, first.alone_snr_db,
                                                                                     first.gain_db, first.samples)
    row = again.layers.drop_duplicates("node").set_index("node").loc["early_conv"]
    assert pd.isna(row["rank"]) and (row["alone_snr_db"], row["gain_db"]) == (first.alone_snr_db, first.gain_db)
    assert engine.load_result(again.run_dir).summary.held == again.summary.held  # summary.json keeps it
    # the headline's ranking figures are the all-INT8 build's, its layerwise curve this build's: it says which is which
    assert "on this build's layerwise curve its SNR" in again.summary.headline
    assert "on the layerwise curve its SNR" in run.summary.headline


def test_a_node_that_is_not_quantized_cannot_be_fallen_back(run, capsys):
    assert main(["rebuild", str(run.run_dir), "--fallback", "late_spike", "--quiet", "--no-index"]) == 2
    assert capsys.readouterr().err == ("error: --fallback: The node 'late_spike' (Mul) is not quantized, so falling it back "
                                       "would change nothing; pick a Conv/ConvTranspose/Gemm/MatMul node from the ranking.\n")


def test_ranking_can_be_skipped(amplified, tmp_path):
    r = compare(amplified / "m.onnx", amplified / "x.npz", out_dir=tmp_path / "r", batch_size=16, provider="cpu", screen_samples=0)
    assert r.summary.ranking.method == "introduced noise" and r.summary.culprits[0].node == "mid_conv"
    assert r.summary.headline.startswith("Error is introduced at node mid_conv (Conv)")


def test_a_ranking_where_no_fallback_helps_says_so_instead_of_a_negative_recovery():
    """Seen on MobileNetV3 with 12 images (3 ranked): 'alone in fallback it raises the final outputs by -5.2 dB'."""
    import pandas as pd

    from engine.diagnose.harm_ranking import HarmRanking
    from engine.results import Culprit
    from engine.summarize import _headline

    def headline(gain):
        top = Culprit(1, "Conv.12", ("Conv.12",), "Conv", 40.0, gain, 20.0, 25.0, 10.0)
        return _headline((top,), HarmRanking((), 63.9, 3, 10, 1.0, view="gain"), pd.DataFrame())

    assert headline(-5.2).startswith("No single fallback raises the final outputs on the 3 samples the ranking measured "
                                     "(every node in INT8: 63.9 dB; the best, Conv.12 (Conv), changes them by -5.2 dB)")
    assert "--screen-samples" in headline(0.0)
    # after a rebuild the list holds the nodes still in INT8 only: the sentence says so (ShuffleNet trial read 'no single
    # fallback' against the +1.0 dB its ticked node had shown)
    top = Culprit(1, "Conv.12", ("Conv.12",), "Conv", 40.0, -2.1, 20.0, 25.0, 10.0)
    rebuilt = _headline((top,), HarmRanking((), 63.9, 3, 10, 1.0, view="gain"), pd.DataFrame(), fallback=frozenset({"n201"}))
    assert rebuilt.startswith("Of the nodes still in INT8, none raises the final outputs on the 3 samples the ranking measured")
    assert headline(2.5).startswith("Falling back Conv.12 (Conv) recovers the most: alone in fallback it raises the final "
                                    "outputs by +2.5 dB on 3 samples (every node in INT8: 63.9 dB; the list is ordered by "
                                    "this gain because falling back its top three together recovered more")


def test_the_headline_gives_the_sample_counts_of_a_budget_limited_ranking():
    """Every unit on 1 sample, the all-INT8 figure on 16: the headline quoted one count for both."""
    import dataclasses

    import pandas as pd

    from engine.diagnose.harm_ranking import HarmRanking
    from engine.results import Culprit
    from engine.summarize import _headline

    top = Culprit(1, "Conv.12", ("Conv.12",), "Conv", 40.0, 1.0, 20.0, 25.0, 10.0, samples=1)
    said = _headline((top,), HarmRanking((), 63.9, 16, 10, 1.0), pd.DataFrame())
    assert said.startswith("Quantizing Conv.12 (Conv) hurts the final outputs most: alone in INT8 it brings them to 40.0 dB "
                           "SNR on 1 sample (every node in INT8: 63.9 dB on 16 samples)")
    # one sample decides nothing: the headline says so (8 samples in all left a browser trial's ranking one, where a node
    # alone in INT8 read worse than every node in INT8)
    # ... and what to do: here its time budget stopped it (PP-OCRv4's detector, 16 pages: "compare on more samples" told
    # a user to add data the ranking had not used)
    assert said.endswith(" That is 1 sample, too few to trust for this ranking, which measured what its time budget "
                         "allowed: sensitivity (its page, or `quantscope sensitivity`) measures every node alone on up to 64 "
                         "samples.")
    given = _headline((top,), HarmRanking((), 63.9, 1, 10, 1.0), pd.DataFrame(), samples=100, screen_samples=1)
    assert given.endswith(" That is 1 sample, too few to trust for this ranking: give it more (--screen-samples, or Ranking "
                          "samples on the Compare page).")  # its sample count stopped it, not the time budget
    few = _headline((top,), HarmRanking((), 63.9, 1, 10, 1.0), pd.DataFrame(), samples=1)  # the data had one sample
    assert few.endswith(" That is 1 sample, too few to trust for this ranking: compare on more samples (the ranking uses "
                        "up to its sample count, --screen-samples, within its time budget).")
    same = _headline((dataclasses.replace(top, samples=16),),
                     HarmRanking((), 63.9, 16, 10, 1.0), pd.DataFrame())
    assert same.startswith("Quantizing Conv.12 (Conv) hurts the final outputs most: alone in INT8 it brings them to 40.0 dB "
                           "SNR on 16 samples (every node in INT8: 63.9 dB);")
    # a comparison on more samples than the ranking used gives the all-INT8 figure on both (PP-OCRv4's recogniser:
    # '14.7 dB' on 16 samples sat beside the page's 'Final-output SNR 14.05 dB' on 64, unexplained)
    whole = _headline((dataclasses.replace(top, samples=16),), HarmRanking((), 63.9, 16, 10, 1.0), pd.DataFrame(),
                      outputs_snr_db=61.04, samples=64)
    assert "SNR on 16 samples (every node in INT8: 63.9 dB on 16 samples, 61.0 dB on all 64);" in whole
    rebuilt = _headline((dataclasses.replace(top, samples=16),), HarmRanking((), 63.9, 16, 10, 1.0), pd.DataFrame(),
                        frozenset({"Conv.3"}), outputs_snr_db=70.0, samples=64)
    assert "(every node in INT8: 63.9 dB);" in rebuilt and "on all 64" not in rebuilt  # a rebuild's 64-sample figure is its own


def test_the_headline_says_whether_the_culprits_snr_falls_or_rises_across_it():
    """PP-OCRv4's recogniser: 'its SNR falls from 12.3 dB at its input to 12.6 dB at its output'."""
    import math

    import pandas as pd

    from engine.diagnose.harm_ranking import HarmRanking
    from engine.results import Culprit
    from engine.summarize import _headline

    def headline(before, after):
        top = Culprit(1, "Conv.12", ("Conv.12",), "Conv", 14.0, 1.0, after, before, 10.0)
        return _headline((top,), HarmRanking((), 14.7, 16, 10, 1.0), pd.DataFrame())

    assert headline(12.3, 12.6).endswith("its SNR rises from 12.3 dB at its input to 12.6 dB at its output.")
    assert headline(30.0, 12.6).endswith("its SNR falls from 30.0 dB at its input to 12.6 dB at its output.")
    assert headline(12.61, 12.64).endswith("its SNR stays at 12.6 dB from its input to its output.")
    assert headline(math.inf, 12.6).endswith("its SNR falls from exact (inf dB) at its input to 12.6 dB at its output.")
    assert headline(math.nan, 12.6).endswith("its SNR is 12.6 dB at its output (its input was not measured).")
    assert headline(12.6, math.nan).endswith("its SNR was not measured at its output.")
    assert headline(12.0, -math.inf).endswith("its SNR falls from 12.0 dB at its input to -inf dB (no signal) at its output.")


def test_a_rebuilds_headline_says_the_ranking_was_measured_against_every_node_in_int8():
    """After a rebuild the headline quoted the all-INT8 ranking's 14.7 dB beside the build's 14.46 dB as if one baseline."""
    import pandas as pd

    from engine.diagnose.harm_ranking import HarmRanking
    from engine.results import Culprit
    from engine.summarize import _headline

    top = Culprit(1, "Conv.12", ("Conv.12",), "Conv", 14.0, 1.0, 20.0, 25.0, 10.0)
    ranking = HarmRanking((), 14.7, 16, 10, 1.0)
    assert "The ranking measured" not in _headline((top,), ranking, pd.DataFrame())
    said = _headline((top,), ranking, pd.DataFrame(), frozenset({"Conv.3"}), 14.46, 64)
    assert said.startswith("Quantizing Conv.12 (Conv) hurts the final outputs most")
    assert said.endswith("The ranking measured each node against every node in INT8 (14.7 dB on 16 samples), not against "
                         "this build with 1 node(s) in fallback (14.5 dB on 64 samples): with those in fallback, another "
                         "node's effect can differ.")


def test_sensitivity_says_what_it_will_cost_before_it_runs():
    """PP-OCRv4's recogniser: 51 candidates, 103 probes on 64 samples, six minutes, nothing said before the click."""
    from types import SimpleNamespace

    from engine import sensitivity_estimate

    unranked = engine.RankingInfo("introduced noise", 0, 0, math.nan)
    ppocr = SimpleNamespace(samples=64, quantized_nodes=51, fallback=(), passes=1, timings={"candidate": 5.12}, ranking=unranked)
    est = sensitivity_estimate(ppocr)
    assert (est.probes, est.samples, est.seconds) == (103, 64, pytest.approx(103 * 5.12))
    assert est.sentence().startswith("103 probe runs of the INT8 model on 64 samples each (one with every node in INT8, "
                                     "then two per fallback candidate): about 527 s here")
    big = sensitivity_estimate(SimpleNamespace(samples=500, quantized_nodes=10, fallback=(), passes=2, timings={"candidate": 10.0},
                                               ranking=unranked))
    assert (big.samples, big.seconds) == (64, pytest.approx(21 * 64 * 0.01))  # the first 64 samples; per pass of the data
    untimed = sensitivity_estimate(SimpleNamespace(samples=8, quantized_nodes=2, fallback=(), passes=1, timings={}, ranking=unranked))
    assert untimed.sentence() == ("5 probe runs of the INT8 model on 8 samples each (one with every node in INT8, then "
                                  "two per fallback candidate).")
    # a measured ranking prices a probe sample itself: 300 sample-passes in 6 s is 20 ms a sample-pass (captcha
    # recogniser: the candidate pass said 76 s for a 33 s sensitivity)
    ranked = dataclasses.replace(unranked, method="measured harm", seconds=6.0, work=300.0)
    est = sensitivity_estimate(SimpleNamespace(samples=32, quantized_nodes=22, fallback=(), passes=1, timings={"candidate": 9.0},
                                               ranking=ranked))
    assert (est.probes, est.samples, est.seconds) == (45, 32, pytest.approx(45 * 33 * 0.02))
    assert est.sentence().endswith(": about 30 s here, a rough guide from what the culprit ranking's probes cost a sample "
                                   "(not counting the probe session's start).")


def test_a_rebuilds_outputs_are_measured_as_the_ranking_measures_them():
    """Every float output against its own signal (the ranking's measure), not the first output alone."""
    import math
    from types import SimpleNamespace as Out

    from engine.results import outputs_together as _outputs_together

    assert _outputs_together({"boxes": Out(snr_db=20.0), "scores": Out(snr_db=10.0)}) == pytest.approx(-10 * math.log10(0.055))
    assert _outputs_together({"logits": Out(snr_db=20.0)}) == pytest.approx(20.0)
    assert _outputs_together({"logits": Out(snr_db=20.0), "label": Out(snr_db=math.nan)}) == pytest.approx(20.0)
    assert _outputs_together({"logits": Out(snr_db=math.inf)}) == math.inf
    # an integer output (an ArgMax label) the same in both builds is left out where the float outputs are known
    assert _outputs_together({"logits": Out(snr_db=20.0), "label": Out(snr_db=math.inf)}, ("logits",)) == pytest.approx(20.0)


def test_a_label_output_is_not_counted_with_the_float_outputs(tmp_path):
    """A classifier exporting its logits and their ArgMax: the label, equal in both builds, flattered the figure the
    headline and the tiles give for every output together."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from engine import compare
    from tests.engine.conftest import tiny_model

    m = tiny_model()
    m.graph.node.append(helper.make_node("ArgMax", ["y"], ["label"], axis=1, keepdims=0))
    m.graph.output.append(helper.make_tensor_value_info("label", TensorProto.INT64, ["n"]))
    onnx.save(m, tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(3).standard_normal((12, 2, 8, 8)).astype(np.float32))
    s = compare(tmp_path / "m.onnx", tmp_path / "d.npz", out_dir=tmp_path / "run", batch_size=4, provider="cpu",
                screen_samples=0).summary
    assert list(s.outputs) == ["y", "label"] and s.float_outputs == ("y",)
    assert s.outputs_together_snr_db() == pytest.approx(s.outputs["y"].snr_db)


def test_the_sensitivity_estimate_counts_the_probes_sensitivity_runs_after_a_rebuild(tmp_path):
    """It probes every unit of the all-INT8 build whatever the fallback set: 15 estimated, 21 run (review)."""
    from engine import sensitivity, sensitivity_estimate

    compare(SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", out_dir=tmp_path, provider="cpu", screen_samples=0)
    rebuilt = rebuild(tmp_path, fallback=["block3_2_conv", "stem_conv", "block1_1_conv"])
    est = sensitivity_estimate(rebuilt.summary)
    frame = sensitivity(tmp_path, samples=8)
    assert est.probes == 1 + 2 * len(frame) and len(frame) > 3


def test_the_ranking_says_it_is_starting_before_it_builds_its_probe_session(amplified, tmp_path):
    """After the last batch the captcha recogniser's page sat ~3 s with nothing said while the gated model was built."""
    from engine import Stage

    said = []
    compare(amplified / "m.onnx", amplified / "x.npz", out_dir=tmp_path / "run", batch_size=16, provider="cpu", progress=said.append)
    ranking = [ev for ev in said if ev.stage == Stage.RANK]
    assert (ranking[0].done, ranking[0].total, ranking[0].message) == (
        0, 1, "starting: building the probes' gated model and its session (0/1)")
    assert ranking[1] == ranking[0]  # said again inside the first probe (a cancel's chance), which carries the warm-up
    ranking = [ev for k, ev in enumerate(ranking) if k == 0 or ev != ranking[k - 1]]  # what a user sees change
    assert ranking[1].message.startswith("every unit on ") and ranking[-1].done == ranking[-1].total > 1


def test_a_model_that_ignores_its_input_says_so_instead_of_naming_a_culprit(tmp_path):
    """ShuffleNet from onnx's test data ('light', every weight 0.02) outputs the same for any input: the dashboard read
    'Quantizing n0 hurts the final outputs most: alone in INT8 it brings them to exact SNR'."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from tests.engine.conftest import tiny_model

    m = tiny_model()
    w1 = next(t for t in m.graph.initializer if t.name == "w1")
    w1.CopyFrom(numpy_helper.from_array(np.zeros((4, 2, 3, 3), np.float32), "w1"))  # every output is then 0
    onnx.save(m, tmp_path / "flat.onnx")
    x = np.random.default_rng(2).standard_normal((10, 2, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    r = compare(tmp_path / "flat.onnx", tmp_path / "x.npz", out_dir=tmp_path / "r", batch_size=4, provider="cpu")
    want = "The FP32 model gives the same outputs for all 10 samples: it ignores its input"
    assert r.summary.headline.startswith(want) and r.summary.warnings[0].startswith(want)
    onnx.save(tiny_model(), tmp_path / "tiny.onnx")  # its trained-like weights: outputs vary, the usual headline
    normal = compare(tmp_path / "tiny.onnx", tmp_path / "x.npz", out_dir=tmp_path / "n", batch_size=4, provider="cpu")
    assert not normal.summary.headline.startswith("The FP32 model gives the same outputs")
    assert not any(w.startswith("The FP32 model gives the same outputs") for w in normal.summary.warnings)


def test_a_ranking_where_no_node_alone_changes_the_outputs_says_so():
    import math

    import pandas as pd

    from engine.diagnose.harm_ranking import HarmRanking
    from engine.results import Culprit
    from engine.summarize import _headline

    top = Culprit(1, "n0", ("n0",), "Conv", math.inf, math.nan, math.inf, 25.0, 10.0)
    text = _headline((top,), HarmRanking((), math.inf, 3, 10, 1.0, view="alone"), pd.DataFrame())
    assert text.startswith("No node alone in INT8 changes the final outputs on 3 samples: each such build gave FP32's "
                           "outputs exactly"), text
