"""Latency: FP32 / FP16 / INT8 / mixed builds of the current run, and accuracy against latency of every build timed."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

import engine
from app import state
from app.actions import busy, job_panel, submit
from app.plots import SNR_DISPLAY_CAP, pareto_figure
from app.summary_view import not_of_inputs_in_use

st.title("Latency and the accuracy trade-off")
result = st.session_state.get(state.RESULT)
if result is None:
    st.info("No comparison yet: run one on the Compare page.")
    st.stop()
not_of_inputs_in_use(result, buttons=("Measure latency",))
st.caption("Timed with the run's provider at its batch size; ONNX Runtime uses its full graph optimization here "
           "(its real INT8 kernels), while accuracy is measured with Q/DQ computed as written.")
c1, c2 = st.columns(2)
runs = c1.number_input("Timed runs", min_value=1, max_value=1000, value=30, key="lat_runs")
warmup = c2.number_input("Warm-up runs", min_value=0, max_value=100, value=5, key="lat_warmup")


def keep_latency(rows) -> None:
    history = st.session_state.setdefault(state.LATENCY, [])
    tag = len({h["measurement"] for h in history}) + 1
    history.extend({**r.to_dict(), "measurement": tag, "label": f"#{tag} {r.build}"} for r in rows)


def _snr(v) -> float:
    return math.inf if v == "inf" else math.nan if v is None else float(v)


if st.button("Measure latency", disabled=busy(),
             help="Runs in the shared worker queue; timings taken while other jobs run on this machine are slower."):
    run_dir, n, w = result.run_dir, int(runs), int(warmup)
    submit("latency", lambda progress: engine.measure_latency(run_dir, runs=n, warmup=w, progress=progress), keep_latency)
job_panel("latency")
history = st.session_state.get(state.LATENCY, [])
if history:
    table = pd.DataFrame(history)
    snr = table["snr_db"].map(_snr)
    shown = pd.DataFrame({
        "measurement": table["measurement"], "build": table["build"], "batch": table["batch"],
        "median_ms": pd.to_numeric(table["median_ms"], errors="coerce"), "p90_ms": pd.to_numeric(table["p90_ms"], errors="coerce"),
        "snr": [("exact" if math.isinf(v) else f"{v:.2f} dB") if not math.isnan(v) else "–" for v in snr],
        "fallback_nodes": table["fallback_nodes"],
        "reformat_layers": pd.to_numeric(table["reformat_layers"], errors="coerce").astype("Int64"),
    })
    st.dataframe(shown, hide_index=True, width="stretch", placeholder="–", column_config={
        "measurement": st.column_config.NumberColumn("#", width="small"),
        "median_ms": st.column_config.NumberColumn("median (ms)", format="%.3f"),
        "p90_ms": st.column_config.NumberColumn("p90 (ms)", format="%.3f"),
        "snr": st.column_config.TextColumn("final-output SNR"),
        "fallback_nodes": st.column_config.NumberColumn("nodes in fallback"),
        "reformat_layers": st.column_config.NumberColumn("Reformat layers", help="TensorRT only: layers that convert formats."),
    })
    for _, row in table[table["note"].fillna("") != ""].drop_duplicates(["build", "note"]).iterrows():
        st.caption(f"{row['build']}: {row['note']}")
    timed = table.assign(snr_db=snr.clip(upper=SNR_DISPLAY_CAP), median_ms=pd.to_numeric(table["median_ms"], errors="coerce"))
    timed = timed.dropna(subset=["median_ms", "snr_db"])
    if not timed.empty:
        st.plotly_chart(pareto_figure(timed, x="median_ms", y="snr_db", label="label"), key="pareto", width="stretch")
