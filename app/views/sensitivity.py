"""Sensitivity: isolated per-node harm, automatic fallback search, and "Apply suggested fallback"."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import engine
from app import state
from app.actions import busy, job_panel, show_error, submit
from app.plots import sensitivity_figure, tradeoff_figure
from app.summary_view import not_of_inputs_in_use
from engine import STRATEGIES, TARGET_METRICS

st.title("Sensitivity and automatic fallback")
ss = st.session_state
result: engine.ComparisonResult | None = ss.get(state.RESULT)
if result is None:
    st.info("No comparison yet: run one on the Compare page.")
    st.stop()
not_of_inputs_in_use(result, buttons=("Run sensitivity", "Find fallback automatically"))
run_dir = result.run_dir
UNITS = [u.value for u in engine.UnitMode]


def keep_sensitivity(frame) -> None:
    ss[state.SENSITIVITY] = (str(run_dir), frame)


def keep_autofallback(found) -> None:
    ss[state.AUTOFALLBACK] = (str(run_dir), found)


def apply_suggested(nodes: tuple[str, ...]) -> None:
    state.set_fallback(nodes)
    ss["qs_applied"] = len(nodes)


st.caption(f"Sensitivity measures every fallback candidate alone, both ways: {engine.sensitivity_estimate(result.summary).sentence()}")
if st.button("Run sensitivity", disabled=busy()):  # queued like every heavy job
    submit("sensitivity", lambda progress: engine.sensitivity(run_dir, progress=progress), keep_sensitivity)
job_panel("sensitivity")
sens = ss.get(state.SENSITIVITY)
if not (sens and sens[0] == str(run_dir)) and (kept := engine.kept_sensitivity(run_dir)) is not None:
    sens = ss[state.SENSITIVITY] = (str(run_dir), kept)  # measured earlier on this run (a run reopened from History)
if sens and sens[0] == str(run_dir):
    st.caption(f"Most harmful alone at the top ({sens[1].attrs.get('samples', '?')} samples): the left bars are the final "
               "outputs' SNR with only that node in INT8, the right ones with every node in INT8 but that one.")
    st.plotly_chart(sensitivity_figure(sens[1]), key="sens_plot", width="stretch")

st.subheader("Find a fallback set automatically")
auto = ss.get(state.AUTOFALLBACK)
if not (auto and auto[0] == str(run_dir)) and (kept := engine.kept_search(run_dir)) is not None:
    auto = ss[state.AUTOFALLBACK] = (str(run_dir), kept)  # found earlier on this run (a run reopened from History)
    # the controls say what that search asked (a reopened search of "at least 12 dB, at most 3" showed 30 and no limit)
    ss.update({"af_metric": kept.target.metric, f"af_value_{kept.target.metric}": float(kept.target.value),
               "af_max": int(kept.extra.get("max_nodes") or 0), "af_units": kept.extra.get("units", UNITS[0])})
# defaults go into Session State, not the widgets: the controls are kept across pages (state.KEPT_WIDGETS)
ss.setdefault("af_metric", "snr_db")
ss.setdefault("af_max", 0)
ss.setdefault("af_strategy", "both")
c1, c2, c3, c4, c5 = st.columns([2, 1, 1, 1, 1])  # the metric's label was cut at "final-output SNR, dB ("
# the raw names read as code (browser trial)
TARGET_LABELS = {m: f"{name}{',' + unit if unit else ''} ({'at most' if engine.Target(m, 0.0).lower_is_better else 'at least'})"
                 for m, (name, unit) in engine.TARGET_WORDS.items()}
metric = c1.selectbox("Target metric", TARGET_METRICS, key="af_metric", format_func=lambda m: TARGET_LABELS.get(m, m))
ss.setdefault(f"af_value_{metric}", {"snr_db": 30.0, "accuracy_drop": 0.005, "text_agreement": 1.0}.get(metric, 0.999))
value = c2.number_input("Target value", format="%.4f", key=f"af_value_{metric}")
max_nodes = c3.number_input("Max nodes (0 = no limit)", min_value=0, key="af_max")
strategy = c4.selectbox("Strategy", STRATEGIES, key="af_strategy",
                        help="greedy adds the unit that helps most, round by round; bisect searches the graph order; both runs both")
units = c5.selectbox("Units", UNITS, key="af_units",
                     help="residual: an Add with the quantized nodes feeding it; activation: a node with its activation")
slots = {"target": c2.empty(), "max_nodes": c3.empty(), "strategy": c4.empty(), "units": c5.empty()}
if st.button("Find fallback automatically", disabled=busy()):
    try:
        target = engine.Target(metric, float(value))
    except engine.QuantScopeError as err:
        show_error(str(err), err.option or "target", slots)
    else:
        submit("autofallback", lambda progress: engine.autofallback(
            run_dir, target, max_nodes=int(max_nodes) or None, strategy=strategy, units=units, progress=progress, apply=False),
            keep_autofallback)
job_panel("autofallback", slots)
auto = ss.get(state.AUTOFALLBACK)
if auto and auto[0] == str(run_dir):
    found: engine.AutoFallbackResult = auto[1]
    (st.success if found.met else st.warning)(found.message)
    steps = pd.DataFrame([s.to_dict() for s in found.steps])
    steps["value"] = pd.to_numeric(steps["value"], errors="coerce")
    achieved = found.achieved if isinstance(found.achieved, (int, float)) else None
    st.plotly_chart(tradeoff_figure(steps, found.target.value, found.target.metric, chosen=(found.fallback, achieved)),
                    key="tradeoff", width="stretch")
    st.caption(" | ".join(f"{k}: {len(r.fallback)} node(s), {r.probes} probes" for k, r in found.strategies.items()))
    st.button("Apply suggested fallback", disabled=not found.fallback, on_click=apply_suggested, args=(tuple(found.fallback),))
    if applied := ss.pop("qs_applied", None):
        st.success(f"Ticked {applied} node(s) for fallback: rebuild on the Rebuild page.")
