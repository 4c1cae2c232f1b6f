"""Workspaces: a link (?ws=token) reopens a workspace's runs after a server restart, a run killed mid-way shows as
incomplete, an older run can be reopened, and no crafted link (a folder name, another workspace's run number, a
path) opens somebody else's run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from app import state
from app.inputs import Inputs
from app.workspace import UNKNOWN_LINK
from engine import RunFolder
from engine.run_index import RunIndex
from tests.app.test_pages import APP, click

ROOT = Path(APP).parents[1]


def session(**query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params.update(query)
    at.run()
    assert not at.exception, at.exception
    return at


def compared() -> AppTest:
    at = session()
    at.switch_page("views/compare.py").run()
    at.selectbox(key="cmp_provider").set_value("cpu").run()
    return click(at, "Run comparison")


def restart_server() -> None:
    """What a new server process starts with: no cached resources (run index, job queue), no sessions."""
    st.cache_resource.clear()


def test_the_link_reopens_the_workspace_after_a_restart_with_its_last_result(runs_root):
    a = compared()
    a.switch_page("views/layers.py").run()
    click(a, "Tick the top-k culprits")
    a.switch_page("views/rebuild.py").run()
    click(a, "Rebuild with fallback")
    token, ws, last = a.session_state[state.WORKSPACE_TOKEN], a.session_state[state.WORKSPACE], a.session_state[state.RESULT]
    assert a.query_params["ws"] == token and token != ws  # the address bar carries the token, not the folder name

    restart_server()
    back = session(ws=token)
    assert back.session_state[state.WORKSPACE] == ws and not back.warning
    resumed = back.session_state[state.RESULT]  # the latest finished run is the current result again, fallback ticked
    assert resumed.run_dir == last.run_dir and resumed.summary.fallback == last.summary.fallback
    np.testing.assert_array_equal(resumed.layers["snr_db"], last.layers["snr_db"])
    assert back.session_state[state.FALLBACK] == set(last.summary.fallback)
    before = back.session_state[state.BEFORE]  # the rebuild's before/after comes back with it (captcha re-trial)
    assert before is not None and before.summary.fallback == () and before.files == last.run_dir / "history" / "1"
    back.switch_page("views/rebuild.py").run()
    assert any(c.value.startswith("This rebuild changed: fallback none → ") for c in back.caption)

    back.switch_page("views/history.py").run()
    rows = back.dataframe[0].value
    assert list(rows["run"]) == [1, 2] and list(rows["kind"]) == ["compare", "rebuild"]
    # reopening the first run gives its own results, now archived in history/1, while rebuilds still start from the folder;
    # the Compare page's controls say how it was made (they showed a sweep's percentile above a MinMax run)
    back.session_state["cmp_method"], back.session_state["cmp_batch"] = "percentile", 7
    back.selectbox(key="hist_open").set_value(1).run()
    next(b for b in back.button if b.label == "Open run").click().run()
    first = back.session_state[state.RESULT]
    assert first.summary.fallback == () and first.run_dir == last.run_dir and first.files == last.run_dir / "history" / "1"
    assert (first.files / "candidate.onnx").read_bytes() != (last.files / "candidate.onnx").read_bytes()  # its own model
    assert back.session_state[state.FALLBACK] == set()
    back.switch_page("views/compare.py").run()
    made = RunFolder(last.run_dir).read_config()
    assert (back.selectbox(key="cmp_method").value, back.number_input(key="cmp_batch").value) == (
        made.quant.calibration.value, made.batch_size)
    assert made.quant.calibration.value != "percentile" and made.batch_size != 7
    back.switch_page("views/rebuild.py").run()
    assert not back.exception and not back.error
    # the rebuild opened from History shows its before/after again (PP-OCRv4 trial: only "Current build")
    back.switch_page("views/history.py").run()
    back.selectbox(key="hist_open").set_value(2).run()
    next(b for b in back.button if b.label == "Open run").click().run()
    assert back.session_state[state.BEFORE].files == last.run_dir / "history" / "1"
    back.switch_page("views/rebuild.py").run()
    assert any(c.value.startswith("This rebuild changed: fallback none → ") for c in back.caption)


def test_a_run_killed_mid_way_shows_as_incomplete_and_earlier_runs_stay(runs_root):
    a = compared()
    ws = a.session_state[state.WORKSPACE]
    # a server process that started a run in this workspace and was killed with SIGKILL before it finished
    code = ("import os, signal, sys; from engine.run_index import RunIndex; "
            "RunIndex(sys.argv[1]).start(sys.argv[2], 'compare', 'resnet_digits_outlier'); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code, str(runs_root), ws], cwd=ROOT, env=os.environ.copy())
    assert proc.returncode == -signal.SIGKILL

    restart_server()
    back = session(ws=a.session_state[state.WORKSPACE_TOKEN])
    back.switch_page("views/history.py").run()
    rows = back.dataframe[0].value
    assert list(rows["status"]) == ["done", "incomplete"]
    assert rows["message"].iloc[1].startswith("Its process stopped before the run finished")
    assert back.warning[0].value.startswith("1 run(s) did not finish")
    assert back.session_state[state.RESULT].summary.headline == a.session_state[state.RESULT].summary.headline


def test_crafted_links_never_open_another_workspace_or_its_runs(runs_root):
    a = compared()
    ws_a = a.session_state[state.WORKSPACE]
    (run_a,) = RunIndex(runs_root).runs(ws_a)

    for crafted in (ws_a, "../" + ws_a, a.session_state[state.WORKSPACE_TOKEN][:-1], "x" * 500):
        b = session(ws=crafted)  # a folder name, a path, a near miss, junk: a new empty workspace, said plainly
        assert b.session_state[state.WORKSPACE] != ws_a
        assert [w.value for w in b.warning] == [UNKNOWN_LINK]
        assert state.RESULT not in b.session_state
        b.switch_page("views/history.py").run()
        assert [i.value for i in b.info] == ["No runs yet."]

    b = session()
    token_b = b.session_state[state.WORKSPACE_TOKEN]
    for crafted, sentence in ((str(run_a.id), f"There is no run {run_a.id} in this workspace; pick a run from the History page."),
                              (f"../{ws_a}/run_0001", f"'../{ws_a}/run_0001' is not a run number; pick a run from the History page."),
                              (str(run_a.run_dir), f"'{str(run_a.run_dir)[:40]}' is not a run number; pick a run from the History page.")):
        b = session(ws=token_b, run=crafted)
        assert [w.value for w in b.warning] == [sentence]
        assert state.RESULT not in b.session_state
        assert "run" not in b.query_params  # the refused parameter is dropped from the address

    own = session(ws=a.session_state[state.WORKSPACE_TOKEN], run=str(run_a.id))  # the owner's link opens it
    assert not own.warning and own.session_state[state.RESULT].run_dir == run_a.run_dir


def test_a_reopened_workspace_starts_on_the_uploads_its_last_comparison_used(runs_root):
    from app.workspace import new_upload_set, save_upload

    a = session()
    ws = a.session_state[state.WORKSPACE]
    samples = ROOT / "sample_models"
    upload_set = new_upload_set(ws)
    model = save_upload(upload_set, "model", "my model.onnx", (samples / "resnet_digits.onnx").read_bytes())
    calib = save_upload(upload_set, "calib", "calib.npz", (samples / "digits_calib.npz").read_bytes())
    a.session_state[state.LOAD_SOURCE] = "Upload"
    a.session_state[state.INPUTS] = Inputs("my model.onnx", str(model), str(calib), uploaded_as=(("model", "my model.onnx"),
                                                                                                  ("calib", "calib.npz")))
    a.switch_page("views/compare.py").run()
    click(a, "Run comparison")
    assert a.session_state[state.RESULT].summary.model == "my model.onnx"

    restart_server()
    back = session(ws=a.session_state[state.WORKSPACE_TOKEN])
    assert back.session_state[state.INPUTS] == a.session_state[state.INPUTS]
    assert back.radio(key="load_source").value == "Upload" and back.subheader[0].value == "Model: my model.onnx"
    back.switch_page("views/compare.py").run()
    assert back.caption[0].value == "Model: **my model.onnx** (uploaded)"  # the next comparison runs on the uploads, not the sample


def test_an_unreadable_run_index_is_one_sentence_in_the_app(runs_root):
    runs_root.mkdir(parents=True)
    (runs_root / "index.sqlite3").write_bytes(b"not a database at all " * 200)
    restart_server()
    at = session()
    assert [e.value for e in at.error] == [
        f"The run index {runs_root / 'index.sqlite3'} is unreadable (file is not a database); move it aside and QuantScope "
        "will start a new one (run folders are not touched)."]
    assert len(at.title) == 0  # nothing runs without a workspace


def test_deleting_a_run_folder_from_history(runs_root):
    a = compared()
    first = a.session_state[state.RESULT]
    a.switch_page("views/compare.py").run()
    click(a, "Run comparison")
    second = a.session_state[state.RESULT]
    assert first.run_dir != second.run_dir

    a.switch_page("views/history.py").run()
    a.selectbox(key="hist_delete_folder").set_value(first.run_dir.name).run()
    assert next(b for b in a.button if b.label == "Delete").disabled  # not before the confirmation is ticked
    a.checkbox(key="hist_delete_sure").check().run()
    next(b for b in a.button if b.label == "Delete").click().run()
    assert not first.run_dir.exists() and second.run_dir.is_dir()
    assert [r.run_dir for r in RunIndex(runs_root).runs(a.session_state[state.WORKSPACE])] == [second.run_dir]
    assert a.warning[0].value == f"Deleted {first.run_dir.name} (runs 1)."
    assert a.session_state[state.RESULT] is second  # the current result lives elsewhere: kept

    a.selectbox(key="hist_delete_folder").set_value(second.run_dir.name).run()
    a.checkbox(key="hist_delete_sure").check().run()
    next(b for b in a.button if b.label == "Delete").click().run()
    assert not second.run_dir.exists() and state.RESULT not in a.session_state  # its folder is gone, so is it
    assert [i.value for i in a.info] == ["No runs yet."]


def test_a_bad_upload_keeps_the_files_already_in_use(runs_root):
    samples = ROOT / "sample_models"
    good_model = (samples / "resnet_digits.onnx").read_bytes()
    a = session()
    a.radio(key="load_source").set_value("Upload").run()

    def use(model: tuple[str, bytes], calib: tuple[str, bytes]) -> None:
        a.file_uploader(key="up_model").set_value((*model, "application/octet-stream"))
        a.file_uploader(key="up_calib").set_value((*calib, "application/octet-stream"))
        a.run()
        next(b for b in a.button if b.label == "Use these files").click().run()

    use(("mine.onnx", good_model), ("calib.npz", (samples / "digits_calib.npz").read_bytes()))
    assert a.success[0].value == ("Loaded mine.onnx with 128 calibration samples, evaluation on the same 128 samples, and no "
                                  "labels, so outputs are compared without accuracy.")
    good = a.session_state[state.INPUTS]
    use(("broken.onnx", good_model[: len(good_model) // 2]), ("calib.npz", (samples / "digits_calib.npz").read_bytes()))
    assert a.error[0].value == ("'broken.onnx' is not a valid ONNX model (the file could not be parsed: DecodeError); "
                                  "check that it is a complete .onnx file, exported again if needed.")
    assert a.session_state[state.INPUTS] == good  # still the earlier files, and they are unchanged on disk
    assert Path(good.model).read_bytes() == good_model
    uploads = runs_root / a.session_state[state.WORKSPACE] / "uploads"
    assert [p.name for p in uploads.iterdir()] == [Path(good.model).parent.name]  # the failed set is gone
    # the page says plainly which inputs are still in use, and offers no "next step" on the refused files
    assert a.subheader[0].value == "Model: mine.onnx"
    assert a.warning[0].value == "In use, unchanged: mine.onnx (uploaded). The files you tried were not applied (see the error above)."
    assert not [link for link in a.get("page_link") if "Next" in link.proto.label]
    a.switch_page("views/compare.py").run()
    assert a.warning[0].value == "The last files you tried on the Load page were refused, so this still runs on mine.onnx."
    click(a, "Run comparison")
    assert a.session_state[state.RESULT].summary.model == "mine.onnx"

    # evaluation data and labels are named too: whether accuracy would be measured went unsaid
    a.switch_page("views/load.py").run()
    a.file_uploader(key="up_eval").set_value(("eval.npz", (samples / "digits_eval.npz").read_bytes(), "application/octet-stream"))
    a.file_uploader(key="up_labels").set_value(("y.npy", (samples / "digits_eval_labels.npy").read_bytes(), "application/octet-stream"))
    use(("mine.onnx", good_model), ("calib.npz", (samples / "digits_calib.npz").read_bytes()))
    assert a.success[0].value == ("Loaded mine.onnx with 128 calibration samples, 500 evaluation samples from eval.npz, and "
                                  "labels from y.npy, so accuracy is measured too.")

    # refused, then other files chosen: the refusal's error is gone, so nothing points "above" at it (PP-OCRv4 trial)
    use(("broken.onnx", good_model[: len(good_model) // 2]), ("calib.npz", (samples / "digits_calib.npz").read_bytes()))
    assert a.error and "see the error above" in a.warning[0].value
    a.file_uploader(key="up_model").set_value(("other.onnx", good_model, "application/octet-stream")).run()
    assert not a.error and not any("see the error above" in w.value for w in a.warning)
    assert any(i.value.startswith("Chosen but not applied yet: other.onnx, calib.npz") for i in a.info)  # both, still chosen


def test_files_chosen_but_not_applied_are_never_replaced_by_the_sample(runs_root):
    samples = ROOT / "sample_models"
    a = session()
    assert a.session_state[state.INPUTS].sample
    a.radio(key="load_source").set_value("Upload").run()
    a.switch_page("views/compare.py").run()  # Upload chosen, nothing applied: the sample does not run in its place
    assert a.warning[0].value.startswith("The Load page is set to Upload but no files have been applied")
    assert next(b for b in a.button if b.label == "Run comparison").disabled

    a.switch_page("views/load.py").run()
    a.file_uploader(key="up_model").set_value(("mine.onnx", (samples / "resnet_digits.onnx").read_bytes(), "application/octet-stream"))
    a.run()
    assert a.session_state[state.PENDING_UPLOAD] == {"model": "mine.onnx"}
    # the button stays disabled without calibration data: the sentence asks for it, not for a click that cannot happen
    assert any(i.value.startswith("Chosen but not applied yet: mine.onnx. Choose calibration data too, then click Use these "
                                  "files;") for i in a.info)
    a.switch_page("views/compare.py").run()
    assert a.warning[0].value.startswith("You chose mine.onnx on the Load page but did not click Use these files")
    assert next(b for b in a.button if b.label == "Run comparison").disabled
    assert a.session_state[state.INPUTS].sample and state.RESULT not in a.session_state


def test_a_full_disk_while_saving_uploads_is_one_sentence_and_keeps_the_files_in_use(runs_root, monkeypatch):
    import errno

    import app.workspace
    import engine

    samples = ROOT / "sample_models"
    a = session()
    a.radio(key="load_source").set_value("Upload").run()

    def use() -> None:
        a.file_uploader(key="up_model").set_value(("mine.onnx", (samples / "resnet_digits.onnx").read_bytes(), "application/octet-stream"))
        a.file_uploader(key="up_calib").set_value(("calib.npz", (samples / "digits_calib.npz").read_bytes(), "application/octet-stream"))
        a.run()
        next(b for b in a.button if b.label == "Use these files").click().run()

    use()
    good = a.session_state[state.INPUTS]
    real_save = app.workspace.save_upload

    def full_on_calib(folder, role, name, data):
        if role == "calib":
            raise OSError(errno.ENOSPC, "No space left on device", str(folder / "calib.npz.tmp"))
        return real_save(folder, role, name, data)

    monkeypatch.setattr(app.workspace, "save_upload", full_on_calib)
    use()
    assert not a.exception
    assert [e.value for e in a.error] == [engine.unexpected_error_sentence(OSError(errno.ENOSPC, "No space left on device"))]
    assert "disk holding the run folders is full" in a.error[0].value
    assert a.session_state[state.INPUTS] == good and Path(good.model).is_file()
    uploads = runs_root / a.session_state[state.WORKSPACE] / "uploads"
    assert [p.name for p in uploads.iterdir()] == [Path(good.model).parent.name]  # the half-written set is gone


def test_a_sweep_is_in_history_and_the_link_shows_it_again_after_a_restart(runs_root):
    at = session()
    at.switch_page("views/sweep.py").run()
    at.multiselect(key="sw_methods").set_value(["minmax", "entropy"]).run()
    click(at, "Run sweep")
    swept = at.session_state[state.SWEEP]
    shown = at.dataframe[0].value
    token = at.session_state[state.WORKSPACE_TOKEN]

    restart_server()
    back = session(ws=token)
    again = back.session_state[state.SWEEP]  # the workspace's latest sweep, with what it ran on
    assert again.result.folder == swept.result.folder and again.inputs == swept.inputs and again.batch == swept.batch
    back.switch_page("views/sweep.py").run()
    assert not back.warning
    assert list(back.dataframe[0].value["configuration"]) == list(shown["configuration"])
    assert next(b for b in back.button if b.label == "Open on the Layers page").disabled is False  # its inputs are still here

    back.switch_page("views/history.py").run()
    rows = back.dataframe[0].value
    best = swept.result.best()
    assert list(rows["kind"]) == ["sweep"] and rows["message"].item() == f"best of 2 configurations: {best.config.label}"
    assert rows["snr_db"].item() == pytest.approx(best.snr_db)
    assert [b.label for b in back.button if b.label in ("Open sweep", "Open run")] == ["Open sweep"]  # not a comparison to open
    back.session_state[state.SWEEP] = None
    next(b for b in back.button if b.label == "Open sweep").click().run()
    assert back.session_state[state.SWEEP].result.folder == swept.result.folder
    assert back.success[0].value == "Sweep 1 is on the Sweep page."


def test_a_sweep_whose_files_were_uploaded_again_opens_on_them(runs_root):
    """A trial uploaded the identical files again and the sweep still said its files were gone: the same content,
    wherever it was uploaded to, opens it again; other content does not."""
    samples = ROOT / "sample_models"
    a = session()
    a.radio(key="load_source").set_value("Upload").run()

    def use(calib: str) -> None:
        a.switch_page("views/load.py").run()
        a.file_uploader(key="up_model").set_value(("mine.onnx", (samples / "resnet_digits.onnx").read_bytes(), "application/octet-stream"))
        a.file_uploader(key="up_calib").set_value(("calib.npz", (samples / calib).read_bytes(), "application/octet-stream"))
        a.run()
        next(b for b in a.button if b.label == "Use these files").click().run()

    use("digits_calib.npz")
    first = a.session_state[state.INPUTS]
    a.switch_page("views/sweep.py").run()
    a.multiselect(key="sw_methods").set_value(["minmax"]).run()
    click(a, "Run sweep")
    use("digits_eval.npz")  # other data: the sweep's own set is discarded, and these are not its inputs
    assert not Path(first.model).exists()
    a.switch_page("views/sweep.py").run()
    assert any("are no longer in this workspace" in w.value for w in a.warning)
    assert next(b for b in a.button if b.label == "Open on the Layers page").disabled is True

    use("digits_calib.npz")  # the same bytes again, in a new upload set
    a.switch_page("views/sweep.py").run()
    assert not a.warning, [w.value for w in a.warning]
    assert any(c.value.startswith("The files this sweep ran on were loaded again") for c in a.caption)
    assert a.session_state[state.SWEEP].inputs == a.session_state[state.INPUTS] != first
    assert next(b for b in a.button if b.label == "Open on the Layers page").disabled is False
