"""AppTest: a smoke test per page, and the whole triage flow on the sample outlier model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import engine
from app import state
from tests.app.apptest import APP, GatedCompare, click, fresh, wait_for_job

PAGES = ["views/load.py", "views/compare.py", "views/sweep.py", "views/layers.py", "views/rebuild.py", "views/sensitivity.py",
         "views/latency.py", "views/history.py"]
CATALOG = json.loads((Path(APP).parents[1] / "sample_models" / "catalog.json").read_text())


@pytest.mark.parametrize("page", PAGES)
def test_page_smoke(page):
    at = fresh()
    at.switch_page(page).run()
    assert not at.exception
    assert not at.error


def test_no_pages_folder_next_to_the_main_script():
    """A pages/ folder makes Streamlit run page scripts without main.py (no password gate) until st.navigation has run
    once; tests/app/test_browser.py shows the bypass against a real server."""
    assert not (Path(APP).parent / "pages").exists()


def test_load_page_defaults_to_the_sample():
    at = fresh()
    assert at.session_state[state.INPUTS].name == "resnet_digits_outlier" and at.session_state[state.INPUTS].sample
    assert {m.label: m.value for m in at.metric}["Nodes"] == "31"


def test_uploaded_inputs_survive_a_trip_to_another_page():
    at = fresh()
    at.radio(key="load_source").set_value("Upload").run()
    custom = dataclasses.replace(at.session_state[state.INPUTS], name="custom.onnx", sample=False)
    at.session_state[state.INPUTS] = custom
    at.run()
    at.switch_page("views/compare.py").run()
    at.switch_page("views/load.py").run()  # Streamlit drops the radio's own state on the way: the choice must stay
    assert at.radio(key="load_source").value == "Upload"
    assert at.session_state[state.INPUTS] == custom


def test_triage_flow_finds_and_fixes_the_planted_node():
    planted = set(CATALOG["models"]["resnet_digits_outlier"]["outlier"]["consumer_nodes"])
    at = fresh()
    at.switch_page("views/compare.py").run()
    click(at, "Run comparison")
    assert not at.error
    result = at.session_state[state.RESULT]
    top = result.summary.culprits[0].node
    assert top in planted
    assert any(i.value.startswith(f"Quantizing {top} (Conv) hurts the final outputs most") for i in at.info)
    assert not at.success  # a finding, not a success: a bad build's headline was green
    shown = {m.label: m.value for m in at.metric}
    assert shown["FP32 accuracy"] == "99.80%" and shown["INT8 accuracy"] == "99.20%"
    # the candidate count says which other nodes read a quantized tensor, and why they are not candidates
    assert any("10 fallback candidate(s) in INT8" in c.value and "block1_add (Add) reads stem_relu's output stem_relu_out after "
               "its Q/DQ pair, but runs in float itself" in c.value for c in at.caption)

    at.switch_page("views/rebuild.py").run()  # nothing ticked yet: nothing to rebuild, and the page says so
    assert next(b for b in at.button if b.label == "Rebuild with fallback").disabled
    assert any(c.value.startswith("Nothing to rebuild yet: tick nodes for fallback on the Layers page") for c in at.caption)

    at.switch_page("views/layers.py").run()
    top3 = {n for c in result.summary.culprits[:3] for n in c.nodes}
    assert len(result.summary.culprits) >= 3 and len(top3) >= 3
    assert at.number_input(key="topk").value == 3  # the set the ranking chose its view by
    click(at, "Tick the top-k culprits")
    assert at.session_state[state.FALLBACK] == top3
    click(at, "Clear all ticks")
    at.number_input(key="topk").set_value(1).run()
    click(at, "Tick the top-k culprits")
    assert at.session_state[state.FALLBACK] == {top}
    at.text_input(key="flt_name").input("no such node").run()  # an empty table (it took the page below it down)
    assert not at.exception and at.session_state[state.FALLBACK] == {top}
    assert any(i.value.startswith("No node matches this filter; turn on **Every node**") for i in at.info)
    assert any(c.value.startswith(f"1 node(s) ticked for fp16 fallback: {top}") for c in at.caption)
    at.text_input(key="flt_name").input("").run()

    at.switch_page("views/rebuild.py").run()
    assert top in at.markdown[0].value
    click(at, "Rebuild with fallback")
    after = at.session_state[state.RESULT]
    before_snr = result.final_output().snr_db
    after_snr = after.final_output().snr_db
    assert after.summary.fallback == (top,) and after_snr > before_snr + 10
    shown = {m.label: m for m in at.metric}["Final-output SNR"]
    assert shown.value == f"{after_snr:.2f} dB"
    assert shown.delta == f"{after_snr - before_snr:+.2f} dB"  # the improvement the engine reports
    labels = {d.label for d in at.get("download_button")}
    assert {"Model (.onnx)", "layers.csv", "summary.json", "HTML report"} <= labels
    # every download made on the click, and no click reruns the page: a rerun drops the files the last run registered,
    # and a second download clicked during the first one's rerun failed
    assert all(d.proto.deferred_file_id and not d.proto.url and d.proto.ignore_rerun for d in at.get("download_button"))
    # the build just made is the current one: the page says so, not "nothing to rebuild" (browser trial)
    assert any(c.value.startswith("This build already has these ticks, ranges and precision: tick or untick nodes on the "
                                  "Layers page to rebuild again.") for c in at.caption)

    at.switch_page("views/history.py").run()
    assert not at.exception
    rows = at.dataframe[0].value
    assert list(rows["kind"]) == ["compare", "rebuild"] and list(rows["status"]) == ["done", "done"]
    assert list(rows["snr_db"]) == pytest.approx([before_snr, after_snr])
    # which data each run compared on (two runs of one model on other data looked the same)
    assert list(rows["data"]) == [f"{result.summary.samples} samples, labelled; minmax, int8"] * 2
    assert not any("different data" in w.value or "different model" in w.value for w in at.warning)  # A/B: like for like

    # other files applied on the Load page: the last result stays, but says it is not of them
    from app.samples import sample_inputs
    assert not any("in use now" in w.value for w in at.warning)
    at.session_state[state.INPUTS] = sample_inputs("mobile_digits")
    # each page says how to see the new files, and what its buttons act on (Sensitivity and Latency ran on the old
    # model without a word)
    for page, ends in (("views/compare.py", ": press **Run comparison** to see that one."),
                       ("views/layers.py", ": run a comparison on the Compare page to see that one. **Tick the top-k "
                                           "culprits** and **Use on the next rebuild** here work on this result's run, not on "
                                           "the files in use."),
                       ("views/rebuild.py", " **Rebuild with fallback** here works on this result's run, not on the files in use."),
                       ("views/sensitivity.py", " **Run sensitivity** and **Find fallback automatically** here work on this "
                                                "result's run, not on the files in use."),
                       ("views/latency.py", " **Measure latency** here works on this result's run, not on the files in use.")):
        at.switch_page(page).run()
        assert any(w.value.startswith("This result is of **resnet_digits_outlier**, not of the model in use now "
                                      "(**mobile_digits**)") and w.value.endswith(ends) for w in at.warning), page
    # a comparison of the new files already running: the page says it will show them, not to press the button again
    from app.jobs import Job
    at.session_state[state.JOB] = Job(99, "compare", state="running")
    at.switch_page("views/compare.py").run()
    assert any(w.value.startswith("This result is of **resnet_digits_outlier**") and
               "the comparison running now shows that one when it finishes" in w.value for w in at.warning)
    at.session_state[state.JOB] = None
    same = sample_inputs("resnet_digits_outlier")
    at.session_state[state.INPUTS] = dataclasses.replace(same, data=same.calib, labels=None)  # the same model, other samples
    at.switch_page("views/layers.py").run()
    assert any(w.value.startswith("This result compared resnet_digits_outlier on other samples") for w in at.warning)
    at.session_state[state.INPUTS] = dataclasses.replace(same, name="renamed.onnx")  # the same files under another name
    at.switch_page("views/layers.py").run()
    assert not any("in use now" in w.value for w in at.warning)


def test_engine_error_is_shown_as_its_sentence_and_keeps_the_previous_result(tmp_path):
    at = fresh()
    at.switch_page("views/compare.py").run()
    click(at, "Run comparison")
    good = at.session_state[state.RESULT]
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((4, 3, 32, 32), np.float32))  # wrong channel count
    at.session_state[state.INPUTS] = dataclasses.replace(at.session_state[state.INPUTS], calib=str(bad), data=None, labels=None)
    at.run()
    click(at, "Run comparison")
    assert [e.value for e in at.error] == [
        "Input 'input' in 'bad.npz' (calibration data) has size 3 on axis 1 but the model expects 1 "
        "(model shape [batch, 1, 32, 32], data sample shape [3, 32, 32])."
    ]
    assert at.session_state[state.RESULT] is good


def test_an_engine_error_is_shown_next_to_the_control_it_concerns():
    at = fresh()
    at.switch_page("views/compare.py").run()
    at.multiselect(key="cmp_ops").set_value([]).run()
    next(b for b in at.button if b.label == "Run comparison").click().run()
    assert [e.value for e in at.error] == ["No op types to quantize were given; name at least one, e.g. Conv."]
    assert state.JOB not in at.session_state  # refused before anything was queued
    layout = [getattr(el, "key", None) or type(el).__name__ for el in at.main]
    assert layout.index("Error") == layout.index("cmp_ops") + 1  # right under the op types


def test_sensitivity_page_suggests_and_applies_the_planted_node():
    planted = set(CATALOG["models"]["resnet_digits_outlier"]["outlier"]["consumer_nodes"])
    at = fresh()
    at.switch_page("views/compare.py").run()
    click(at, "Run comparison")
    at.switch_page("views/sensitivity.py").run()
    told = next(c.value for c in at.caption if c.value.startswith("Sensitivity measures every fallback candidate"))
    click(at, "Run sensitivity")
    assert at.session_state[state.JOB].kind == "sensitivity"
    frame = at.session_state[state.SENSITIVITY][1]  # what it said it would cost, before the click, is what it ran
    assert f"both ways: {1 + 2 * len(frame)} probe runs of the INT8 model on {frame.attrs['samples']} samples each" in told  # it went through the shared worker queue
    assert at.session_state[state.SENSITIVITY][1].iloc[0]["node"] in planted
    click(at, "Find fallback automatically")  # default target snr_db=30
    found = at.session_state[state.AUTOFALLBACK][1]
    assert found.met and set(found.fallback) == planted
    assert at.success[0].value == found.message
    click(at, "Apply suggested fallback")
    assert at.session_state[state.FALLBACK] == planted


def test_latency_page_times_every_build():
    at = fresh()
    at.switch_page("views/compare.py").run()
    click(at, "Run comparison")
    at.switch_page("views/latency.py").run()
    at.number_input(key="lat_runs").set_value(3).run()
    click(at, "Measure latency")
    assert at.session_state[state.JOB].kind == "latency"
    builds = [h["build"] for h in at.session_state[state.LATENCY]]
    assert builds[:3] == ["fp32", "fp16", "int8"]
    assert all(h["median_ms"] > 0 for h in at.session_state[state.LATENCY] if h["build"] != "fp16")


def test_shared_password_gate():
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["password"] = "s3cret"
    at.run()
    assert not at.exception and len(at.title) == 0  # nothing but the password box
    at.text_input(key="qs_password").input("wrong").run()
    assert at.error[0].value == "That password is not right; ask the person running this QuantScope for it."
    assert len(at.title) == 0
    at.text_input(key="qs_password").input("s3cret").run()
    assert at.title[0].value == "Load a model and calibration data"


def test_doctor_panel_and_cli(capsys):
    from engine.cli.main import main

    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime providers: " in out and "[yes] compare on ONNX Runtime CPU" in out
    at = fresh()
    assert any("compare on ONNX Runtime CPU" in c.value for c in at.code)


def test_page_renders_while_a_comparison_runs(monkeypatch):
    """The comparison runs in the job queue: the script run that queued it returns at once with a progress bar and a
    Cancel button, the Run button disabled; then the result is applied."""
    import time

    import engine

    gate = GatedCompare(engine.compare)
    monkeypatch.setattr(engine, "compare", gate)
    at = fresh()
    at.switch_page("views/compare.py").run()
    t0 = time.perf_counter()
    next(b for b in at.button if b.label == "Run comparison").click().run()
    assert time.perf_counter() - t0 < 5
    job = at.session_state[state.JOB]
    assert job.kind == "compare" and gate.started.wait(30)
    at.run()  # a rerun while the job certainly runs
    assert job.active and job.state == "running"
    assert next(b for b in at.button if b.label == "Run comparison").disabled
    (bar,) = at.get("progress")
    assert "calibrate: calibration batch" in bar.proto.text
    assert any(b.label == "Cancel" for b in at.button)
    gate.release.set()
    wait_for_job(at)
    assert job.state == "done" and at.session_state[state.RESULT].summary.culprits


def test_cancelling_a_running_comparison_keeps_the_previous_result(monkeypatch):
    import engine

    at = fresh()
    at.switch_page("views/compare.py").run()
    click(at, "Run comparison")
    good = at.session_state[state.RESULT]
    runs_before = sorted(p.name for p in good.run_dir.parent.iterdir())
    gate = GatedCompare(engine.compare)
    monkeypatch.setattr(engine, "compare", gate)
    next(b for b in at.button if b.label == "Run comparison").click().run()
    job = at.session_state[state.JOB]
    assert gate.started.wait(30)
    at.run()
    next(b for b in at.button if b.label == "Cancel").click().run()
    assert job.cancel_requested
    wait_for_job(at, 30)
    assert job.state == "cancelled" and not gate.release.is_set()  # it stopped at a progress event, never finished
    assert at.session_state[state.RESULT] is good
    assert [i.value for i in at.info][-2] == (
        f"Cancelled the comparison during its calibrate stage: the current result (resnet_digits_outlier, {good.run_dir.name}) and "
        "every earlier run are unchanged.")
    assert at.info[-1].value == good.summary.headline  # the previous result is still what the page shows
    assert sorted(p.name for p in good.run_dir.parent.iterdir() if p.name != "uploads")[: len(runs_before)] == runs_before
    assert not next(b for b in at.button if b.label == "Run comparison").disabled


def test_a_run_shows_the_sensitivity_and_search_it_kept_when_opened_again():
    """A browser trial's fallback search could not be found again after the run was reopened from History."""
    at = fresh()
    at.switch_page("views/compare.py").run()
    click(at, "Run comparison")
    run_dir = at.session_state[state.RESULT].run_dir
    engine.sensitivity(run_dir, samples=10)
    found = engine.autofallback(run_dir, "snr_db=31.5", max_nodes=2, samples=10, apply=False)
    for key in (state.SENSITIVITY, state.AUTOFALLBACK):  # another session, or the page moved on
        at.session_state[key] = None
    at.switch_page("views/sensitivity.py").run()
    assert at.session_state[state.SENSITIVITY][0] == str(run_dir)
    assert at.session_state[state.AUTOFALLBACK][1].fallback == found.fallback
    assert any(found.message == m.value for m in [*at.success, *at.warning])
    # the controls say what that search asked (a reopened "at least 12 dB, at most 3" showed 30 and no limit) ...
    assert (at.selectbox(key="af_metric").value, at.number_input(key="af_value_snr_db").value,
            at.number_input(key="af_max").value) == ("snr_db", 31.5, 2)
    # ... and keep what the user set while other pages are drawn
    at.number_input(key="af_max").set_value(4).run()
    at.switch_page("views/layers.py").run()
    at.switch_page("views/sensitivity.py").run()
    assert at.number_input(key="af_max").value == 4 and at.number_input(key="af_value_snr_db").value == 31.5
