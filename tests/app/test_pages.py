"""AppTest: a smoke test per page, and the whole triage flow on the sample outlier model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app import state

APP = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
PAGES = ["views/load.py", "views/compare.py", "views/layers.py", "views/rebuild.py", "views/sensitivity.py", "views/latency.py",
         "views/history.py"]
CATALOG = json.loads((Path(APP).parents[1] / "sample_models" / "catalog.json").read_text())


def fresh() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    return at


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
    assert at.session_state[state.INPUTS]["name"] == "resnet_digits_outlier"
    assert {m.label: m.value for m in at.metric}["Nodes"] == "31"


def test_uploaded_inputs_survive_a_trip_to_another_page():
    at = fresh()
    at.radio(key="load_source").set_value("Upload").run()
    custom = {**at.session_state[state.INPUTS], "name": "custom.onnx", "sample": False}
    at.session_state[state.INPUTS] = custom
    at.run()
    at.switch_page("views/compare.py").run()
    at.switch_page("views/load.py").run()  # Streamlit drops the radio's own state on the way: the choice must stay
    assert at.radio(key="load_source").value == "Upload"
    assert at.session_state[state.INPUTS] == custom


QUEUED = {"Run comparison", "Rebuild with fallback", "Run sensitivity", "Find fallback automatically", "Measure latency"}  # these go through the shared job queue


def wait_for_job(at: AppTest, timeout: float = 180) -> None:
    import time

    deadline = time.time() + timeout
    while state.JOB in at.session_state and at.session_state[state.JOB].active:
        assert time.time() < deadline, "the job did not finish"
        time.sleep(0.2)
    at.run()  # the page applies the finished job's result


def click(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click().run()
    if label in QUEUED:
        wait_for_job(at)
    assert not at.exception, at.exception
    return at


def test_triage_flow_finds_and_fixes_the_planted_node():
    planted = set(CATALOG["models"]["resnet_digits_outlier"]["outlier"]["consumer_nodes"])
    at = fresh()
    at.switch_page("views/compare.py").run()
    click(at, "Run comparison")
    assert not at.error
    result = at.session_state[state.RESULT]
    top = result.summary.culprits[0].node
    assert top in planted
    assert at.success[0].value.startswith(f"Error is introduced at node {top}")

    at.switch_page("views/layers.py").run()
    click(at, "Tick the top-k culprits")  # k = 1 by default
    assert at.session_state[state.FALLBACK] == {top}

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
    assert {"Rebuilt Q/DQ model (.onnx)", "layers.csv", "summary.json", "HTML report"} <= labels

    at.switch_page("views/history.py").run()
    assert not at.exception
    rows = at.dataframe[0].value
    assert list(rows["kind"]) == ["compare", "rebuild"] and list(rows["status"]) == ["done", "done"]
    assert list(rows["snr_db"]) == pytest.approx([before_snr, after_snr])


def test_engine_error_is_shown_as_its_sentence_and_keeps_the_previous_result(tmp_path):
    at = fresh()
    at.switch_page("views/compare.py").run()
    click(at, "Run comparison")
    good = at.session_state[state.RESULT]
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=np.zeros((4, 3, 32, 32), np.float32))  # wrong channel count
    at.session_state[state.INPUTS] = {**at.session_state[state.INPUTS], "calib": str(bad), "data": None, "labels": None}
    at.run()
    click(at, "Run comparison")
    assert [e.value for e in at.error] == [
        "Input 'input' in 'bad.npz' (calibration data) has size 3 on axis 1 but the model expects 1 "
        "(model shape [batch, 1, 32, 32], data sample shape [3, 32, 32])."
    ]
    assert at.session_state[state.RESULT] is good


def test_sensitivity_page_suggests_and_applies_the_planted_node():
    planted = set(CATALOG["models"]["resnet_digits_outlier"]["outlier"]["consumer_nodes"])
    at = fresh()
    at.switch_page("views/compare.py").run()
    click(at, "Run comparison")
    at.switch_page("views/sensitivity.py").run()
    click(at, "Run sensitivity")
    assert at.session_state[state.JOB].kind == "sensitivity"  # it went through the shared worker queue
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


def test_page_renders_while_a_comparison_runs():
    """The comparison runs in the job queue: the script run that queued it returns at once with a progress bar."""
    import time

    at = fresh()
    at.switch_page("views/compare.py").run()
    t0 = time.perf_counter()
    next(b for b in at.button if b.label == "Run comparison").click().run()
    assert time.perf_counter() - t0 < 5
    job = at.session_state[state.JOB]
    assert job.kind == "compare"
    at.run()  # a rerun while the job works (500 samples take several seconds on 2 cores)
    if job.active:
        assert next(b for b in at.button if b.label == "Run comparison").disabled
        assert at.get("progress"), "the page shows the job's progress"
    wait_for_job(at)
    assert at.session_state[state.RESULT].summary.culprits


def _until(predicate, timeout: float = 10) -> None:
    import time

    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def test_queue_positions_are_reported():
    import threading

    from app.jobs import JobQueue

    q = JobQueue(workers=1)
    gate = threading.Event()
    first = q.submit("compare", lambda progress: gate.wait(10))
    _until(lambda: first.state == "running")
    second = q.submit("compare", lambda progress: "ok")
    third = q.submit("compare", lambda progress: "ok")
    assert (q.position(first), q.position(second), q.position(third)) == (0, 1, 2)
    gate.set()
    _until(lambda: not third.active)
    assert (first.state, second.state, third.state) == ("done", "done", "done") and third.result == "ok"

    def boom(progress):
        raise RuntimeError("boom")

    failing = q.submit("rebuild", boom)
    _until(lambda: not failing.active)
    assert failing.state == "failed" and failing.error.startswith("QuantScope failed unexpectedly (RuntimeError: boom)")
