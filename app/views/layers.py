"""Layers: per-layer curves, the fallback table (ticks persist across pages) and the selected node's graph and tensor
views. Every tick change runs in a widget callback, before this script draws the plot, so the plot always shows the
ticks of the same run; the table keeps one key while only its own checkboxes change the ticks, so no click is lost."""

from __future__ import annotations

import hashlib

import pandas as pd
import streamlit as st

import engine
from app import layer_table as lt
from app import state
from app.inspector import inspector
from app.plots import layer_figure
from app.summary_view import amplifier_notes, not_of_inputs_in_use

st.title("Per-layer error")
ss = st.session_state
result: engine.ComparisonResult | None = ss.get(state.RESULT)
if result is None:
    st.info("No comparison yet: run one on the Compare page.")
    st.page_link("views/compare.py", label="Go to Compare", icon=":material/arrow_forward:")
    st.stop()
not_of_inputs_in_use(result, buttons=("Tick the top-k culprits", "Use on the next rebuild"))

layers: pd.DataFrame = result.layers.reset_index(drop=True)
summary = result.summary
cands = lt.candidates(result)
op_of = dict(zip(layers["node"], layers["op_type"]))
precision = ss.get(state.PRECISION, summary.fallback_precision.value)


def _refuse(nodes: list[str]) -> None:
    ss[state.TICK_REFUSED] = " ".join(lt.refusal(n, op_of.get(n, "?"), summary.config.op_types) for n in nodes[:2])


def _plot_selected() -> None:
    points = ss["layer_plot"].selection.points if ss.get("layer_plot") else []
    rows = sorted({int(p["x"]) for p in points if isinstance(p.get("x"), (int, float)) and 0 <= p["x"] < len(layers)})
    nodes = list(dict.fromkeys(layers["node"].iloc[rows]))
    if len(nodes) == 1:
        ss[state.INSPECT] = nodes[0]
    ss["qs_plot_picked"] = nodes


def _tick_picked() -> None:
    picked = ss.pop("qs_plot_picked", [])
    state.set_fallback(state.fallback() | {n for n in picked if n in cands})
    refused = [n for n in picked if n not in cands]
    if refused:
        _refuse(refused)


def _tick_top(k: int) -> None:
    state.set_fallback(state.fallback() | {n for c in summary.culprits[:k] for n in c.nodes})


def _table_changed(key: str, nodes: list[str]) -> None:
    edits = (ss.get(key) or {}).get("edited_rows", {})
    ticks, refused = lt.apply_edits(ss[state.TABLE_BASE][1], nodes, edits, cands)
    if refused:
        state.set_fallback(ticks)  # a fresh table, without the refused tick
        _refuse(refused)
    else:
        ss[state.FALLBACK] = ticks
        ss.pop(state.TICK_REFUSED, None)


def _inspect_clicked(nodes: list[str]) -> None:
    click = ss.get("inspect_click")
    if click is not None and 0 <= int(click["row"]) < len(nodes):
        ss[state.INSPECT] = nodes[int(click["row"])]


ticks = state.fallback()
top = summary.culprits[0].node if summary.culprits else None
inspect = ss.get(state.INSPECT) if ss.get(state.INSPECT) in op_of else top
c1, c2 = st.columns(2)
cos_thr = c1.number_input("Cosine threshold", value=0.99, min_value=0.0, max_value=1.0, step=0.001, format="%.3f", key="thr_cos")
snr_thr = c2.number_input("SNR threshold (dB)", value=20.0, step=1.0, key="thr_snr")
st.caption("Click a point to inspect its node below; pick several for ticking with the box or lasso tool (top right of the plot).")
st.plotly_chart(layer_figure(layers, cosine_threshold=cos_thr, snr_threshold=snr_thr, fallback=ticks, inspect=inspect, top=top,
                             quantized=summary.config.precision.label),
                key="layer_plot", on_select=_plot_selected, selection_mode=("points", "box", "lasso"), width="stretch")
picked = ss.get("qs_plot_picked", [])
tickable = [n for n in picked if n in cands and n not in ticks]
if len(picked) > 1 or tickable:
    c1, c2 = st.columns([3, 1], vertical_alignment="center")
    c1.caption(f"Picked on the plot: {', '.join(picked[:12])}{' ...' if len(picked) > 12 else ''} "
               f"({len(tickable)} of them fallback candidates)")
    c2.button("Tick the picked candidates", on_click=_tick_picked, disabled=not tickable)

st.subheader("Fallback")
quantized = summary.config.precision.label  # INT8, or FP8 for an FP8 run (whose page said INT8 throughout)
st.caption(f"{lt.ranking_sentence(summary.ranking, summary.culprits, len(summary.fallback), quantized)} "
           f"Only fallback candidates (nodes {quantized} quantizes) can be ticked.")
c1, c2, c3 = st.columns([1, 1, 2], vertical_alignment="bottom")
k = c1.number_input("Top-k culprits", min_value=1, max_value=max(1, len(summary.culprits)),
                    value=max(1, min(engine.RANKING_TOP_SET, len(summary.culprits))), key="topk",
                    help=f"The ranking measured every node two ways (alone in {quantized}; alone in fallback) and orders the list "
                         f"by the way whose top {engine.RANKING_TOP_SET}, fallen back together, restored the outputs more."
                    if summary.ranking.method == "measured harm" else None)
c2.button("Tick the top-k culprits", on_click=_tick_top, args=(int(k),), disabled=not summary.culprits,
          help="The ranking measures each node alone, and some nodes matter more together than alone. For the smallest "
               "set that meets a target, use the fallback search on the Sensitivity page.")
c3.button("Clear all ticks", on_click=state.set_fallback, args=((),), disabled=not ticks)
f1, f2, f3 = st.columns([2, 2, 1], vertical_alignment="bottom")
ops = f1.multiselect("Filter by op type", sorted(layers["op_type"].unique()), key="flt_ops")
name = f2.text_input("Search names (yours or the graph's)", key="flt_name", placeholder="e.g. HardSwish, #2, mix_act")
show_all = f3.toggle("Every node", key="flt_all", help=f"Also list the nodes {quantized} does not quantize (they cannot be ticked).")

rows = lt.filter_rows(lt.node_rows(result, show_all), ops, name)
view = f"{result.files}|{sorted(ops)}|{name}|{show_all}|{ss.get(state.TABLE_GENERATION, 0)}"
key = "fallback_table_" + hashlib.sha1(view.encode()).hexdigest()[:12]
if key not in ss or ss.get(state.TABLE_BASE, (None,))[0] != key:  # a new table starts from the ticks as they are
    ss[state.TABLE_BASE] = (key, frozenset(ticks))
nodes = list(rows["node"])
config = lt.column_config(st.column_config, precision, quantized)
config[lt.INSPECT] = st.column_config.ButtonColumn("inspect", key="inspect_click", on_click=_inspect_clicked, args=(nodes,),
                                                   type="tertiary", width="small")
frame = lt.table_frame(rows, ss[state.TABLE_BASE][1], cands)
st.data_editor(frame, key=key, on_change=_table_changed, args=(key, nodes),
               disabled=[c for c in frame.columns if c != lt.TICK], hide_index=True,
               column_config=config, width="stretch", row_height=35, height=min(36 * (len(rows) + 1) + 3, 600), placeholder="")
if rows.empty:
    st.info("No node matches this filter" + ("" if show_all else f"; turn on **Every node** to also search the nodes {quantized} "
                                              "does not quantize") + ". Your ticks stay as they are.")
if refused := ss.get(state.TICK_REFUSED):
    st.error(refused)
ticks = state.fallback()
st.caption(f"{len(ticks)} node(s) ticked for {precision} fallback: {', '.join(engine.in_name_order(ticks)) or 'none'}")
if summary.amplifiers:
    st.caption("Not quantized, yet they make noise louder (ticking them changes nothing): " + "; ".join(amplifier_notes(result)) + ".")
st.page_link("views/rebuild.py", label=f"Next: rebuild with these nodes out of {quantized}", icon=":material/arrow_forward:")

if inspect is not None:
    inspector(result, inspect, ticks)
