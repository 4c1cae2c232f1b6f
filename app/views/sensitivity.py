"""Sensitivity: isolated per-node harm, automatic fallback search, and "Apply suggested fallback"."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import engine
from app import state
from app.actions import busy, job_panel, submit
from app.plots import sensitivity_figure, tradeoff_figure

st.title("Sensitivity and automatic fallback")
result = st.session_state.get(state.RESULT)
if result is None:
    st.info("No comparison yet: run one on the Compare page.")
    st.stop()
run_dir = result.run_dir


def keep_sensitivity(frame) -> None:
    st.session_state[state.SENSITIVITY] = (str(run_dir), frame)


def keep_autofallback(found) -> None:
    st.session_state[state.AUTOFALLBACK] = (str(run_dir), found)


if st.button("Run sensitivity", disabled=busy()):  # queued like every heavy job
    submit("sensitivity", lambda progress: engine.sensitivity(run_dir, progress=progress), keep_sensitivity)
job_panel("sensitivity")
sens = st.session_state.get(state.SENSITIVITY)
if sens and sens[0] == str(run_dir):
    st.plotly_chart(sensitivity_figure(sens[1]), key="sens_plot", width="stretch")

st.subheader("Find a fallback set automatically")
c1, c2, c3, c4, c5 = st.columns(5)
metric = c1.selectbox("Target metric", ["snr_db", "cosine", "top1_agreement", "accuracy_drop"], key="af_metric")
value = c2.number_input("Target value", value=30.0 if metric == "snr_db" else 0.999 if metric != "accuracy_drop" else 0.005,
                        format="%.4f", key=f"af_value_{metric}")
max_nodes = c3.number_input("Max nodes (0 = no limit)", min_value=0, value=0, key="af_max")
strategy = c4.selectbox("Strategy", ["both", "greedy", "bisect"], key="af_strategy")
units = c5.selectbox("Units", ["node", "residual", "activation"], key="af_units",
                     help="residual: an Add with the quantized nodes feeding it; activation: a node with its activation")
if st.button("Find fallback automatically", disabled=busy()):
    try:
        target = engine.Target(metric, float(value))
    except engine.QuantScopeError as err:
        st.error(str(err))
        st.stop()
    submit("autofallback", lambda progress: engine.autofallback(
        run_dir, target, max_nodes=int(max_nodes) or None, strategy=strategy, units=units, progress=progress, apply=False),
        keep_autofallback)
job_panel("autofallback")
auto = st.session_state.get(state.AUTOFALLBACK)
if auto and auto[0] == str(run_dir):
    found: engine.AutoFallbackResult = auto[1]
    (st.success if found.met else st.warning)(found.message)
    steps = pd.DataFrame([s.to_dict() for s in found.steps])
    steps["value"] = pd.to_numeric(steps["value"], errors="coerce")
    st.plotly_chart(tradeoff_figure(steps, found.target.value, found.target.metric), key="tradeoff", width="stretch")
    st.caption(" | ".join(f"{k}: {len(r.fallback)} node(s), {r.probes} probes" for k, r in found.strategies.items()))
    if st.button("Apply suggested fallback", disabled=not found.fallback):
        st.session_state[state.FALLBACK] = set(found.fallback)
        st.success(f"Ticked {len(found.fallback)} node(s) for FP16: rebuild on the Rebuild page.")
