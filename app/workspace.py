"""A browser session's workspace: its runs folder QUANTSCOPE_RUNS_ROOT (default ~/.quantscope/runs)/<workspace id>/,
its rows in the run index, and the link that reopens it after a restart (?ws=<token>).

The workspace id names a folder; only the token opens the workspace, and the index stores only its hash, so a
crafted ?ws= (a folder name, a guess) starts a new, empty workspace, and a crafted ?run= that is not a run of
this workspace is refused. File names are generated, never taken from uploads."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

import streamlit as st

import engine
from app import state
from app.inputs import Inputs
from app.samples import catalog, sample_inputs
from app.sweeps import Swept, compare_settings
from engine import RunIndex, RunRecord, RunStatus

__all__ = ["run_index", "attach", "open_run", "open_sweep", "session_dir", "save_upload", "workspace_runs", "remember_inputs",
           "remember_sweep", "delete_run_folder", "new_upload_set", "discard_upload_sets", "SWEEPS"]

SWEEPS = "sweeps"  # <workspace>/sweeps/sweep_*: one folder per sweep, beside the run folders
SWEPT_FILE = "dashboard.json"  # in a sweep's folder: what the dashboard ran it on (inputs, batch, provider)

UPLOAD_SUFFIXES = {".onnx", ".npz", ".npy", ".json", ".zip"}
UNKNOWN_LINK = ("This workspace link is not known on this server (mistyped, or from another QuantScope), so a new, empty "
                "workspace was started; use the exact link you were given to reopen yours.")


@st.cache_resource(show_spinner=False)
def _open_index(root: str) -> RunIndex:
    return RunIndex(root)  # opening marks runs of dead processes (an earlier server killed mid-run) incomplete


def run_index() -> RunIndex:
    return _open_index(str(state.settings().runs_root))


def attach() -> None:
    """Binds this session to the workspace its link's ?ws= token opens, else to a new one, keeps the token in the
    address bar, and opens ?run=<id> if that run belongs to the workspace."""
    ss = st.session_state
    try:
        index = run_index()
        if state.WORKSPACE not in ss:
            given = st.query_params.get("ws")
            ws = index.open_workspace(given) if given else None
            resumed = ws is not None
            if resumed:
                token = given
            else:
                ws, token = index.new_workspace()
                if given:
                    ss[state.NOTICE] = UNKNOWN_LINK
            ss[state.WORKSPACE], ss[state.WORKSPACE_TOKEN] = ws, token
            if resumed:
                _resume(index, ws)
        if st.query_params.get("ws") != ss[state.WORKSPACE_TOKEN]:
            st.query_params["ws"] = ss[state.WORKSPACE_TOKEN]
        requested = st.query_params.get("run")
        if requested is not None:
            del st.query_params["run"]
            open_run(index.get(ss[state.WORKSPACE], requested))
    except engine.QuantScopeError as err:
        if state.WORKSPACE not in ss:  # no workspace, no app: say why and stop
            st.error(str(err))
            st.stop()
        ss[state.NOTICE] = str(err)


INPUTS_FILE = "inputs.json"


def remember_inputs(workspace: str, inputs: Inputs) -> None:
    """Keeps what the last comparison ran on (a sample's name, or the upload roles) so a reopened workspace starts there."""
    target = session_dir(workspace) / INPUTS_FILE
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(inputs.to_record()))
    os.replace(tmp, target)


def _inputs_of(ws: str, record: dict) -> Inputs | None:
    """The inputs an inputs record names, if they are still there; paths only ever point into the workspace's uploads/."""
    if record["sample"]:
        return sample_inputs(record["name"]) if record["name"] in catalog()["models"] else None
    if not str(record["set"]).isalnum():
        return None
    return Inputs.from_record(record, session_dir(ws) / "uploads" / record["set"])


def _restore_inputs(ws: str) -> None:
    """The inputs of the workspace's last comparison, if they are still there."""
    try:
        record = json.loads((session_dir(ws) / INPUTS_FILE).read_text())
        inputs = _inputs_of(ws, record)
        if inputs is not None:
            st.session_state[state.INPUTS] = inputs
            if not inputs.sample:
                st.session_state[state.LOAD_SOURCE] = "Upload"  # the Load page keeps these inputs, not the sample
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return  # nothing remembered (or unreadable): the Load page starts on the sample


def remember_sweep(folder: Path, inputs: Inputs, batch: int, provider: str, content: tuple[tuple[str, str], ...] = ()) -> None:
    """Beside a finished sweep's table: what it ran on, so History and a reopened workspace can show it again."""
    target = folder / SWEPT_FILE
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps({"inputs": inputs.to_record(), "batch": batch, "provider": provider,
                               "content": [list(pair) for pair in content or inputs.content_key()]}))
    os.replace(tmp, target)


def open_sweep(record: RunRecord) -> Swept:
    """Makes a finished sweep of this workspace the one the Sweep page shows."""
    if record.workspace != st.session_state[state.WORKSPACE]:
        raise engine.RunFolderError(f"There is no run {record.id} in this workspace; pick a run from the History page.")
    result = record.load_sweep()
    try:
        meta = json.loads((record.run_dir / SWEPT_FILE).read_text())
        inputs, batch, provider = _inputs_of(record.workspace, meta["inputs"]), int(meta["batch"]), str(meta["provider"])
        content = tuple((str(role), str(key)) for role, key in meta.get("content", ()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise engine.RunFolderError(f"Sweep {record.id}'s folder lacks what it ran on ({SWEPT_FILE}); sweep again.") from None
    swept = Swept(result, inputs, batch, provider, record.model, content)
    st.session_state[state.SWEEP] = swept
    return swept


def _resume(index: RunIndex, ws: str) -> None:
    """After a restart: the workspace's last inputs, latest finished run and latest finished sweep become current again."""
    _restore_inputs(ws)
    index.recover()
    done = [r for r in index.runs(ws) if r.status is RunStatus.DONE]
    for latest, reopen in ((next((r for r in reversed(done) if not r.is_sweep), None), open_run),
                           (next((r for r in reversed(done) if r.is_sweep), None), open_sweep)):
        if latest is not None:
            try:
                reopen(latest)
            except engine.QuantScopeError as err:
                st.session_state[state.NOTICE] = str(err)


def _built_from(record: RunRecord, done: list[RunRecord]) -> engine.ComparisonResult | None:
    """The result a rebuild started from (the build before it in its folder), or None: not a rebuild, or its files are
    gone (the page then shows this build alone). A reopened link's latest rebuild and a rebuild opened from History show
    their before/after with it (the captcha re-trial's link and PP-OCRv4's History showed only this build)."""
    if record.kind != "rebuild" or record.seq is None:
        return None
    earlier = next((r for r in reversed(done) if not r.is_sweep and r.run_dir == record.run_dir and r.seq == record.seq - 1), None)
    try:
        return earlier.load() if earlier is not None else None
    except engine.QuantScopeError:
        return None


def open_run(record: RunRecord) -> engine.ComparisonResult:
    """Makes a finished run of this workspace the current result (its fallback set ticked again)."""
    if record.workspace != st.session_state[state.WORKSPACE]:  # index.get already refuses this; never trust one check
        raise engine.RunFolderError(f"There is no run {record.id} in this workspace; pick a run from the History page.")
    result = record.load()
    # a rebuild opened from History shows its before/after, as the rebuild itself did (PP-OCRv4 trial: only its SNR)
    st.session_state[state.BEFORE] = _built_from(record, [r for r in workspace_runs() if r.status is RunStatus.DONE])
    state.adopt(result)
    # the Compare page's controls say how this result was made (they showed a sweep's percentile above a MinMax run)
    try:
        made = engine.RunFolder(record.run_dir).read_config()  # a rebuild keeps its folder's batch size and provider
    except engine.QuantScopeError:
        made = None
    st.session_state[state.COMPARE_SETTINGS] = compare_settings(
        result.summary.config, *((made.batch_size, made.requested_provider, made.screen_samples) if made else ()))
    return result


def delete_run_folder(record: RunRecord) -> tuple[int, ...]:
    """Deletes one of this workspace's run folders; if it held the current result, that result is dropped too."""
    ss = st.session_state
    deleted = run_index().delete_folder(ss[state.WORKSPACE], record.id)
    swept = ss.get(state.SWEEP)
    if swept is not None and swept.result.folder.resolve() == record.run_dir.resolve():
        ss.pop(state.SWEEP, None)
    current = ss.get(state.RESULT)
    if current is not None and current.run_dir == record.run_dir:
        for key in (state.RESULT, state.BEFORE, state.SENSITIVITY, state.AUTOFALLBACK, state.INSPECT):
            ss.pop(key, None)
        state.set_fallback(())
        ss[state.RANGES] = {}
    return deleted


def workspace_runs() -> list[RunRecord]:
    index = run_index()
    index.recover()
    return index.runs(st.session_state[state.WORKSPACE])


def session_dir(workspace: str) -> Path:
    d = run_index().workspace_dir(workspace)
    d.mkdir(parents=True, exist_ok=True)
    return d


def new_upload_set(workspace: str) -> Path:
    """A fresh folder uploads/<random>/ for one "Use these files": a bad upload never overwrites the files in use."""
    folder = session_dir(workspace) / "uploads" / secrets.token_hex(4)
    folder.mkdir(parents=True)
    return folder


def discard_upload_sets(workspace: str, keep: Path | None) -> None:
    """Removes this workspace's upload sets except `keep` (runs keep their own copy of the model they compared)."""
    uploads = session_dir(workspace) / "uploads"
    for entry in uploads.iterdir() if uploads.is_dir() else ():
        if keep is not None and entry.resolve() == keep.resolve():
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def save_upload(folder: Path, role: str, original_name: str, data: bytes) -> Path:
    """Writes an upload as <folder>/<role><suffix>; only the suffix of the user's name is kept, and only if known."""
    suffix = Path(original_name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        suffix = ".bin"
    target = folder / f"{role}{suffix}"
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target
