"""AppTest of the Sweep page: the best configuration marked and opened on the Layers page, a refused or cancelled sweep
keeping the one shown, and the Compare and Sweep controls kept across pages."""

from __future__ import annotations

import engine
from app import state
from tests.app.apptest import GatedCompare, click, fresh, wait_for_job


def test_sweep_page_marks_one_best_configuration_and_opens_any_of_them_on_the_layers_page(runs_root):
    from app.sweeps import BEST, best_sentence

    at = fresh()
    at.switch_page("views/compare.py").run()
    at.selectbox(key="cmp_method").set_value("entropy").run()  # so the opened configuration visibly replaces it
    at.switch_page("views/sweep.py").run()
    at.multiselect(key="sw_methods").set_value(["minmax", "percentile"]).run()
    at.text_input(key="sw_percentiles").input("99.9, 99.999").run()
    assert at.multiselect(key="sw_precisions").value == ["int8"]
    click(at, "Run sweep")
    assert not at.error and at.session_state[state.JOB].kind == "sweep"  # it went through the shared worker queue
    swept = at.session_state[state.SWEEP]
    assert swept.result.folder.parent == runs_root / at.session_state[state.WORKSPACE] / "sweeps"  # inside the workspace
    table = at.dataframe[0].value
    # named by what differs; what every configuration shares is said once (the op types, the precision)
    assert list(table["configuration"]) == ["minmax", "percentile 99.9", "percentile 99.999"]
    assert any(c.value == "Every configuration: Conv+ConvTranspose+Gemm+MatMul / int8." for c in at.caption)
    assert len(table) == 3 and list(table["calibration"]) == ["MinMax", "Percentile", "Percentile"]  # one row per configuration
    assert (table["best"] == BEST).sum() == 1
    best = engine.load_sweep(swept.result.folder).best()  # what `quantscope compare --sweep` would start from
    assert table.loc[table["best"] == BEST, "configuration"].item() == best.config.label.split(" / ")[0]
    assert at.success[0].value == best_sentence(swept.result)
    # why a compare of the same configuration can name another culprit (seen on MobileNetV3: Conv.5 here, Conv.1 there)
    assert any(f"quick ranking on {engine.SWEEP_SCREEN_SAMPLES} samples spread over the data" in c.value for c in at.caption)

    at.selectbox(key="sw_open").set_value(0).run()  # MinMax: not the best, so not the one selected at first
    click(at, "Open on the Layers page")
    assert at.session_state[state.JOB].kind == "compare"  # the Compare page's job
    assert at.title[0].value == "Per-layer error"  # and the Layers page shows its result
    opened = at.session_state[state.RESULT].summary
    assert opened.config.calibration is engine.CalibrationMethod.MINMAX and opened.batch_size == swept.batch
    at.switch_page("views/compare.py").run()
    assert at.selectbox(key="cmp_method").value == "minmax"  # the Compare page's settings are the configuration's
    assert at.multiselect(key="cmp_ops").value == list(engine.TRT_INT8_OP_TYPES)
    assert "--calib-method minmax" in at.code[0].value and "--batch 25" in at.code[0].value  # the equivalent command


def test_a_refused_or_cancelled_sweep_keeps_the_sweep_shown(monkeypatch, runs_root):

    at = fresh()
    at.switch_page("views/sweep.py").run()
    at.multiselect(key="sw_methods").set_value(["minmax"]).run()
    click(at, "Run sweep")
    shown, job = at.session_state[state.SWEEP], at.session_state[state.JOB]
    assert len(at.dataframe[0].value) == 1

    at.multiselect(key="sw_methods").set_value([]).run()
    next(b for b in at.button if b.label == "Run sweep").click().run()
    assert [e.value for e in at.error] == ["Choose at least one calibration method to sweep."]
    layout = [getattr(el, "key", None) or type(el).__name__ for el in at.main]
    assert layout.index("Error") == layout.index("sw_methods") + 1  # right under the methods
    assert at.session_state[state.JOB] is job  # refused before anything was queued
    assert at.session_state[state.SWEEP] is shown and len(at.dataframe[0].value) == 1

    gate = GatedCompare(engine.sweep)  # held in its first stage, reporting progress
    monkeypatch.setattr(engine, "sweep", gate)
    at.multiselect(key="sw_methods").set_value(["entropy"]).run()
    next(b for b in at.button if b.label == "Run sweep").click().run()
    job = at.session_state[state.JOB]
    assert job.kind == "sweep" and gate.started.wait(30)
    at.run()
    assert "calibrate: calibration batch" in at.get("progress")[0].proto.text
    next(b for b in at.button if b.label == "Cancel").click().run()
    wait_for_job(at, 30)
    assert job.state == "cancelled" and not gate.release.is_set()
    assert [i.value for i in at.info][-1] == "Cancelled the sweep during its calibrate stage: the earlier sweep is kept."
    assert at.session_state[state.SWEEP] is shown and len(at.dataframe[0].value) == 1
    assert [p.name for p in shown.result.folder.parent.iterdir()] == [shown.result.folder.name]  # the cancelled one left nothing


def test_a_configuration_opened_from_a_sweep_sets_the_controls_without_a_streamlit_warning(caplog):
    """Opening a sweep's configuration sets Compare's widget keys; widgets that also had a default value logged Streamlit's
    'created with a default value but also had its value set via the Session State API' warning with a stack trace."""
    import logging

    from app.sweeps import compare_settings

    at = fresh()
    config = engine.QuantConfig(calibration=engine.CalibrationMethod.PERCENTILE, percentile=99.9, op_types=("Conv",))
    at.session_state[state.COMPARE_SETTINGS] = compare_settings(config, 10, "cpu")
    with caplog.at_level(logging.WARNING):
        at.switch_page("views/compare.py").run()
    assert not at.exception
    assert at.number_input(key="cmp_percentile").value == 99.9 and at.number_input(key="cmp_batch").value == 10
    assert at.multiselect(key="cmp_ops").value == ["Conv"] and at.selectbox(key="cmp_method").value == "percentile"
    assert not [r for r in caplog.records if "Session State API" in r.getMessage()]


def test_compare_and_sweep_settings_survive_a_trip_to_another_page():
    """A browser trial set the batch size to 4, applied new files on the Load page and came back to 25."""
    at = fresh()
    at.switch_page("views/compare.py").run()
    at.number_input(key="cmp_batch").set_value(4).run()
    at.selectbox(key="cmp_method").set_value("percentile").run()
    at.switch_page("views/load.py").run()
    at.switch_page("views/sweep.py").run()
    assert at.number_input(key="sw_batch").value == 4  # a sweep starts from the Compare page's batch size
    at.text_input(key="sw_percentiles").set_value("99.9").run()
    at.switch_page("views/compare.py").run()
    assert at.number_input(key="cmp_batch").value == 4 and at.selectbox(key="cmp_method").value == "percentile"
    at.switch_page("views/sweep.py").run()
    assert at.text_input(key="sw_percentiles").value == "99.9"
    assert not at.exception
