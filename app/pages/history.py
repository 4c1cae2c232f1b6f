"""History: every run of this session, and any two side by side."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import state
from app.plots import before_after_figure

st.title("Runs in this session")
history = st.session_state.get(state.HISTORY, [])
if not history:
    st.info("No runs yet.")
    st.stop()
table = pd.DataFrame(history)
st.dataframe(table.drop(columns=["layers_csv", "run_dir"]), hide_index=True, width="stretch")
if len(history) >= 2:
    c1, c2 = st.columns(2)
    a = c1.selectbox("Run A", table["run"], index=len(history) - 2, key="hist_a")
    b = c2.selectbox("Run B", table["run"], index=len(history) - 1, key="hist_b")
    ra, rb = history[a - 1], history[b - 1]
    for col, r in ((c1, ra), (c2, rb)):
        col.metric(f"Run {r['run']} SNR", f"{r['snr_db']:.2f} dB")
        col.caption(f"{r['kind']}; fallback: {r['fallback']}; calibration {r['calibration']}")
    la, lb = pd.read_csv(ra["layers_csv"]), pd.read_csv(rb["layers_csv"])
    if set(la["tensor"]) == set(lb["tensor"]):
        st.plotly_chart(before_after_figure(la, lb, (f"run {a}", f"run {b}")), key="hist_plot", width="stretch")
    else:
        st.caption("These runs compare different graphs, so their curves are not overlaid.")
