"""The selected node, seen two ways: its neighbourhood in the graph (inputs, outputs, the Q/DQ on each edge, the SNR of
every tensor) and its quantized input and weights (calibrated range, INT8 scale and clipping, histogram, largest value
per channel), with an editor for a custom range that the next rebuild uses (--range)."""

from __future__ import annotations

import math

import streamlit as st

import engine
from app import cached, state
from app.layer_table import origins
from app.node_plots import channel_figure, histogram_figure, neighbourhood_dot

__all__ = ["inspector"]


def _sig(x: float) -> float:
    """Six significant digits: what `--range` writes, so the command shown reproduces the range exactly."""
    return float(f"{x:.6g}")


def _chosen() -> None:
    st.session_state[state.INSPECT] = st.session_state["inspect_select"]


def inspector(result: engine.ComparisonResult, node: str, ticks: set[str]) -> None:
    ss = st.session_state
    layers = result.layers
    nodes = list(dict.fromkeys(layers.sort_values("order")["node"]))
    origin = origins(layers)
    ops = dict(zip(layers["node"], layers["op_type"]))
    st.subheader(f"Inspect {node}")
    ss["inspect_select"] = node
    st.selectbox("Node", nodes, key="inspect_select", on_change=_chosen,
                 format_func=lambda n: f"{n} ({ops[n]})" + (f" — from your file: {origin[n]}" if origin.get(n) and origin[n] != n else ""),
                 help="Or click a point of the plot, or a row's inspect button.")
    if origin.get(node) and origin[node] != node:
        st.caption(f"{node} ({ops[node]}) is what pre-processing made of **{origin[node]}** in your file.")
    graph_col, tensor_col = st.columns(2)
    with graph_col:
        hops = st.slider("Neighbourhood: edges away", 1, 3, 1, key="inspect_hops")
        try:
            nb = cached.neighbourhood(result, node, hops)
        except Exception as err:  # noqa: BLE001 - a view: one sentence, never a traceback
            st.error(str(err) if isinstance(err, engine.QuantScopeError) else engine.unexpected_error_sentence(err))
        else:
            quantized = result.summary.config.precision.label
            st.graphviz_chart(neighbourhood_dot(nb, ticks, quantized), width="content")
            st.caption(f"Blue boxes run in {quantized}, red ones are ticked for fallback, grey ones run in float; thick blue edges "
                       "carry a Q/DQ pair. Each edge names its tensor and that tensor's SNR.")
    with tensor_col:
        _tensor(result, node)


def _tensor(result: engine.ComparisonResult, node: str) -> None:
    try:
        tv = cached.tensor_view(result, node)
    except engine.QuantScopeError as err:
        st.info(str(err))
        return
    except Exception as err:  # noqa: BLE001 - a view: one sentence, never a traceback
        st.error(engine.unexpected_error_sentence(err))
        return
    if result.files_dir is not None:
        st.caption("This is an earlier build of the run: the tensor view shows the run folder's latest build.")
    act, weights = st.tabs([f"input {tv.tensor}", f"weights {tv.weight}" if tv.weight else "weights (none)"])
    with act:
        c1, c2 = st.columns(2)
        c1.metric(f"{tv.grid} scale", f"{tv.scale:.6g}" if tv.scale is not None else "not quantized",
                  help=f"Symmetric {tv.grid}: the scale is max(|min|, |max|) of the range / {tv.grid_max:g}.")
        c2.metric("Values clipped", f"{tv.clipped_fraction:.3%}" if tv.scale is not None else "–",
                  help=f"Of the reference values shown, those outside what {tv.grid} can represent with this scale.")
        st.caption(f"Calibrated range {tv.calibration_min:.6g} … {tv.calibration_max:.6g}"
                   + (f"; custom range in force: {tv.override[0]:g} … {tv.override[1]:g}" if tv.override else "")
                   + (f"; {tv.grid} represents {tv.clip_low:.6g} … {tv.clip_high:.6g}" if tv.clip_low is not None else "") + ".")
        st.plotly_chart(histogram_figure(tv), key="tv_hist", width="stretch", config={"displayModeBar": False})
        limit = tv.clip_high if tv.clip_high is not None else None
        st.plotly_chart(channel_figure(tv.channels.max_abs, limit, what=f"{tv.tensor}", limit_label=f"{tv.grid} limit ({tv.grid_max:g} × scale)"),
                        key="tv_channels", width="stretch", config={"displayModeBar": False})
        st.caption(f"From {tv.samples} reference samples. One scale serves the whole tensor, so a channel far above the "
                   f"others leaves few {tv.grid} steps for the rest.")
        _range_editor(tv)
    with weights:
        if tv.weight_channels is None:
            st.caption("This node has no weight tensor.")
        else:
            w = tv.weight_channels
            limits = tuple(tv.grid_max * s for s in w.scales) if len(w.scales) == len(w.max_abs) else ()
            st.plotly_chart(channel_figure(w.max_abs, None, what="output", limit_label=f"{tv.grid} limit ({tv.grid_max:g} × its scale)",
                                           per_channel_limits=limits), key="tv_weights", width="stretch",
                            config={"displayModeBar": False})
            st.caption("Weights are quantized per output channel, so each channel has its own scale.")


def _range_editor(tv: engine.TensorView) -> None:
    ss = st.session_state
    ranges: dict = ss.setdefault(state.RANGES, {})
    if tv.scale is None:
        st.caption("This tensor is not quantized in the current build, so a custom range would change nothing.")
        return
    planned = ranges.get(tv.tensor)
    start = planned or tv.override or tv.suggested_range()
    with st.container(border=True):
        st.markdown(f"**Custom range for {tv.tensor}** (the next rebuild quantizes it with this range, `--range`)")
        c1, c2 = st.columns(2)
        lo = c1.number_input("min", value=_sig(start[0]), format="%.6g", key=f"range_min_{tv.tensor}")
        hi = c2.number_input("max", value=_sig(start[1]), format="%.6g", key=f"range_max_{tv.tensor}")
        lo, hi = _sig(lo), _sig(hi)
        b1, b2 = st.columns(2)
        if b1.button("Use on the next rebuild", key=f"range_use_{tv.tensor}"):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                st.error(f"The range {lo:g} … {hi:g} needs a min below its max; change one of them.")
            else:
                ranges[tv.tensor] = (lo, hi)
                planned = (lo, hi)
        if b2.button("Remove", key=f"range_drop_{tv.tensor}", disabled=planned is None):
            ranges.pop(tv.tensor, None)
            planned = None
        if planned is not None:
            st.caption(f"Next rebuild: {tv.tensor}={planned[0]:g},{planned[1]:g}, {tv.grid} scale "
                       f"{max(abs(planned[0]), abs(planned[1])) / tv.grid_max:.6g} (now {tv.scale:.6g}). Rebuild on the Rebuild page.")
        else:
            st.caption(f"Suggested start: the range that keeps 99.99% of these values, within the calibrated range. Symmetric "
                       f"{tv.grid} uses max(|min|, |max|) / {tv.grid_max:g} as its scale (now {tv.scale:.6g}).")
