"""Layers: per-layer curves, thresholds, and the FP16 fallback table (ticks persist across pages)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import state
from app.plots import layer_figure

st.title("Per-layer error")
result = st.session_state.get(state.RESULT)
if result is None:
    st.info("No comparison yet: run one on the Compare page.")
    st.page_link("views/compare.py", label="Go to Compare", icon=":material/arrow_forward:")
    st.stop()

ticks = state.fallback()
layers: pd.DataFrame = result.layers
c1, c2 = st.columns(2)
cos_thr = c1.number_input("Cosine threshold", value=0.99, min_value=0.0, max_value=1.0, step=0.001, format="%.3f", key="thr_cos")
snr_thr = c2.number_input("SNR threshold (dB)", value=20.0, step=1.0, key="thr_snr")

event = st.plotly_chart(layer_figure(layers, cosine_threshold=cos_thr, snr_threshold=snr_thr, fallback=ticks),
                        key="layer_plot", on_select="rerun", selection_mode=("points", "box", "lasso"), width="stretch")
picked = {layers.iloc[p["point_index"]]["node"] for p in (event.selection.points if event else []) if "point_index" in p}
if picked:
    st.caption(f"Selected on the plot: {', '.join(sorted(picked))}")
    if st.button("Tick the selected layers"):
        ticks |= picked

st.subheader("FP16 fallback")
per_node = layers.sort_values("introduced_db", ascending=False).drop_duplicates("node")
c1, c2, c3 = st.columns([1, 1, 2])
k = c1.number_input("Top-k culprits", min_value=1, max_value=max(1, len(per_node)), value=1, key="topk")
if c2.button("Tick the top-k culprits"):
    ticks |= set(per_node[per_node["quantized"]].head(int(k))["node"])
if c3.button("Clear all ticks"):
    ticks.clear()
f1, f2 = st.columns(2)
ops = f1.multiselect("Filter by op type", sorted(layers["op_type"].unique()), key="flt_ops")
name = f2.text_input("Filter by name", key="flt_name")

view = per_node.copy()
if ops:
    view = view[view["op_type"].isin(ops)]
if name:
    view = view[view["node"].str.contains(name, case=False, regex=False)]
view.insert(0, "FP16 fallback", view["node"].isin(ticks))
cols = ["FP16 fallback", "node", "op_type", "quantized", "introduced_db", "snr_db", "cosine", "cosine_min", "mse",
        "max_abs_err", "rel_err_median", "tensor"]
edited = st.data_editor(view[cols], hide_index=True, key=f"fallback_table_{len(ticks)}_{hash(frozenset(ticks))}",
                        disabled=[c for c in cols if c != "FP16 fallback"], width="stretch",
                        column_config={"FP16 fallback": st.column_config.CheckboxColumn(help="keep this node out of INT8")})
for node, on in zip(edited["node"], edited["FP16 fallback"]):
    if on:
        ticks.add(node)
    else:
        ticks.discard(node)
st.caption(f"{len(ticks)} node(s) ticked for FP16 fallback: {', '.join(sorted(ticks)) or 'none'}")
st.page_link("views/rebuild.py", label="Next: rebuild with these nodes in FP16", icon=":material/arrow_forward:")
