"""Latency: FP32 / FP16 / INT8 / mixed builds of the current run, and accuracy vs latency of every build timed."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import engine
from app import state
from app.actions import busy, job_panel, submit
from app.plots import pareto_figure

st.title("Latency and the accuracy trade-off")
result = st.session_state.get(state.RESULT)
if result is None:
    st.info("No comparison yet: run one on the Compare page.")
    st.stop()
st.caption("Timed with the run's provider at its batch size; ONNX Runtime uses its full graph optimization here "
           "(its real INT8 kernels), while accuracy is measured with Q/DQ computed as written.")
c1, c2 = st.columns(2)
runs = c1.number_input("Timed runs", min_value=1, max_value=1000, value=30, key="lat_runs")
warmup = c2.number_input("Warm-up runs", min_value=0, max_value=100, value=5, key="lat_warmup")


def keep_latency(rows) -> None:
    history = st.session_state.setdefault(state.LATENCY, [])
    tag = len({h["measurement"] for h in history}) + 1
    history.extend({**r.to_dict(), "measurement": tag, "label": f"#{tag} {r.build}"} for r in rows)


if st.button("Measure latency", disabled=busy(),
             help="Runs in the shared worker queue; timings taken while other jobs run on this machine are slower."):
    run_dir, n, w = result.run_dir, int(runs), int(warmup)
    submit("latency", lambda progress: engine.measure_latency(run_dir, runs=n, warmup=w, progress=progress), keep_latency)
job_panel("latency")
history = st.session_state.get(state.LATENCY, [])
if history:
    table = pd.DataFrame(history)
    st.dataframe(table[["measurement", "build", "median_ms", "p90_ms", "snr_db", "fallback_nodes", "reformat_layers", "note"]],
                 hide_index=True, width="stretch")
    timed = table.dropna(subset=["median_ms"]).copy()
    timed["snr_db"] = pd.to_numeric(timed["snr_db"].replace("inf", 100.0), errors="coerce")
    st.plotly_chart(pareto_figure(timed, x="median_ms", y="snr_db", label="label"), key="pareto", width="stretch")
    st.caption("FP32 is drawn at 100 dB (exact).")
