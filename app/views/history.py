"""History: every run and sweep of this workspace from the run index (it survives restarts), opening one, and two runs
side by side."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import engine
from app import state
from app.actions import busy
from app.plots import before_after_figure
from app.table_columns import filled_columns
from app.workspace import delete_run_folder, open_run, open_sweep, workspace_runs
from engine import RunStatus

st.title("Runs and sweeps in this workspace")
st.caption("The address in your browser's bar (it carries `?ws=…`) reopens this workspace, with these runs, after the "
           "server restarts. Anyone with that address can see these runs: share it only with people who should.")
try:
    records = workspace_runs()
except engine.QuantScopeError as err:
    st.error(str(err))
    st.stop()
if not records:
    st.info("No runs yet.")
    st.stop()
table = pd.DataFrame([r.as_row() for r in records]).drop(columns=["folder"])
# the figures and the culprit before the longer text, and no column that no run has: at 1400 px the culprit was
# off-screen (browser trial)
ORDER = ("run", "kind", "model", "snr_db", "cosine", "top1_agreement", "top_culprit", "fallback", "status", "data", "started",
         "message")
shown = filled_columns(table, ORDER, always=("run", "kind", "model"))
st.dataframe(table, hide_index=True, width="stretch", placeholder="–", column_order=shown,
             column_config={"snr_db": st.column_config.NumberColumn("SNR dB", format="%.2f",
                                                               help="The final outputs' SNR; where a model has several, every "
                                                                    "float output together, each against its own signal."),
                            "cosine": st.column_config.NumberColumn("cosine", format="%.5f"),
                            "top1_agreement": st.column_config.NumberColumn("top-1 agreement", format="percent"),
                            "top_culprit": st.column_config.TextColumn("top culprit")})
incomplete = [r for r in records if r.status is RunStatus.INCOMPLETE]
if incomplete:
    st.warning(f"{len(incomplete)} run(s) did not finish (the server stopped mid-way); earlier runs are intact. "
               "Run them again from Compare or Rebuild.")

with st.expander("Delete a run folder (frees its disk space: models, batch cache, every rebuild in it)"):
    folders: dict[str, list] = {}
    for r in records:
        folders.setdefault(r.run_dir.name, []).append(r)
    name = st.selectbox("Run folder", list(folders), key="hist_delete_folder",
                        format_func=lambda f: f"{f}: runs {', '.join(str(r.id) for r in folders[f])} ({folders[f][0].model})")
    sure = st.checkbox(f"Yes, delete {name} and runs {', '.join(str(r.id) for r in folders[name])} for good", key="hist_delete_sure")
    if st.button("Delete", disabled=not sure or busy(), key="hist_delete_btn"):
        try:
            deleted = delete_run_folder(folders[name][0])
        except engine.QuantScopeError as err:
            st.error(str(err))
        else:
            st.session_state.pop("hist_delete_sure", None)
            st.session_state[state.NOTICE] = f"Deleted {name} (runs {', '.join(map(str, deleted))})."
            st.rerun()

sweeps = {r.id: r for r in records if r.status is RunStatus.DONE and r.is_sweep}
if sweeps:
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    ids = list(sweeps)
    chosen = c1.selectbox("Open a sweep (the Sweep page then shows its table)", ids, index=len(ids) - 1, key="hist_sweep",
                          format_func=lambda i: f"run {i}: sweep of {sweeps[i].model}, {sweeps[i].message}")
    if c2.button("Open sweep", key="hist_sweep_btn"):
        try:
            open_sweep(sweeps[chosen])
        except engine.QuantScopeError as err:
            st.error(str(err))
        else:
            st.success(f"Sweep {chosen} is on the Sweep page.")

finished = {r.id: r for r in records if r.status is RunStatus.DONE and not r.is_sweep}
if not finished:
    st.stop()
ids = list(finished)
c1, c2 = st.columns([3, 1])
chosen = c1.selectbox("Open a finished run (it becomes the current result, its fallback set ticked)", ids, index=len(ids) - 1,
                      format_func=lambda i: f"run {i}: {finished[i].kind}, {finished[i].model}, fallback {len(finished[i].fallback)}",
                      key="hist_open")
if c2.button("Open run", key="hist_open_btn"):
    try:
        open_run(finished[chosen])
    except engine.QuantScopeError as err:
        st.error(str(err))
    else:
        st.success(f"Run {chosen} is the current result; Layers and Rebuild now show it.")

if len(ids) >= 2:
    c1, c2 = st.columns(2)
    a = c1.selectbox("Run A", ids, index=len(ids) - 2, key="hist_a")
    b = c2.selectbox("Run B", ids, index=len(ids) - 1, key="hist_b")
    try:
        ra, rb = finished[a].load(), finished[b].load()
    except engine.QuantScopeError as err:
        st.error(str(err))
        st.stop()
    for col, rec, res in ((c1, finished[a], ra), (c2, finished[b], rb)):
        several = len(res.summary.outputs) > 1
        col.metric(f"Run {rec.id} SNR" + (f", all {len(res.summary.outputs)} outputs" if several else ""),
                   f"{res.summary.outputs_together_snr_db():.2f} dB")
        col.caption(f"{rec.kind} of {rec.model} on {rec.data_text() or 'unknown data'}; fallback: {', '.join(rec.fallback) or '-'}")
    if caveat := engine.not_like_for_like(ra.summary, rb.summary):
        st.warning(caveat)
    if set(ra.layers["tensor"]) == set(rb.layers["tensor"]):
        st.plotly_chart(before_after_figure(ra.layers, rb.layers, (f"run {a}", f"run {b}"),
                                            changed=set(ra.summary.fallback) ^ set(rb.summary.fallback)), key="hist_plot", width="stretch")
    else:
        st.caption("These runs compare different graphs, so their curves are not overlaid.")
