"""The selected node's views, pure: its neighbourhood as a Graphviz DOT graph (st.graphviz_chart draws it in the browser,
no system Graphviz needed) and its tensor view (engine.TensorView) as plotly figures."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

import engine
from app.plots import COLORS

__all__ = ["neighbourhood_dot", "histogram_figure", "channel_figure"]


def _q(text: str) -> str:
    """A DOT string literal; line breaks become DOT's own \\n (a centred line)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _db(x: float) -> str:
    return "exact" if x == math.inf else "not observed" if math.isnan(x) else f"{x:.1f} dB"


def neighbourhood_dot(nb: engine.Neighbourhood, ticked: set[str] | frozenset[str] = frozenset(), quantized: str = "INT8") -> str:
    """Boxes for nodes (the selected one bold; INT8 candidates blue, ticked ones red, float nodes grey), each with where
    it came from in the user's file; edges labelled with their tensor's SNR, Q/DQ edges drawn thick and marked."""
    lines = ["digraph neighbourhood {", "rankdir=TB; bgcolor=transparent;",
             'node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
             'edge [fontname="Helvetica", fontsize=10];']
    for src in nb.inputs:
        lines.append(f'{_q("in:" + src)} [label={_q(src + chr(10) + "(graph input)")}, shape=ellipse, fillcolor="#ffffff"];')
    for n in nb.nodes:
        state = "ticked for fallback" if n.name in ticked else quantized if n.quantized else "float"
        fill = "#fde0dd" if n.name in ticked else "#deebf7" if n.quantized else "#f0f0f0"
        label = f"{n.name}\n{n.op_type}, {state}"
        if n.original and n.original != n.name:
            label += f"\nfrom your file: {n.original}"
        attrs = f"label={_q(label)}, fillcolor={_q(fill)}"
        if n.hops == 0:
            attrs += ', penwidth=3, color="#111111"'
        lines.append(f"{_q(n.name)} [{attrs}];")
    names = {n.name for n in nb.nodes}
    for e in nb.edges:
        src = e.source if e.source in names else "in:" + e.source
        label = f"{e.tensor}\n{_db(e.snr_db)}" + (f"\nQ/DQ ({quantized})" if e.quantized else "")
        style = 'penwidth=2.5, color="#1f77b4"' if e.quantized else 'color="#555555"'
        lines.append(f"{_q(src)} -> {_q(e.target)} [label={_q(label)}, {style}];")
    lines.append("}")
    return "\n".join(lines)


def histogram_figure(tv: engine.TensorView) -> go.Figure:
    """Reference values of the node's input (log counts), the calibrated range, the INT8 clipping points, and a
    custom range if one is in force."""
    edges = np.asarray(tv.hist_edges)
    centers = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure(go.Bar(x=centers, y=tv.hist_counts, width=np.diff(edges), marker={"color": COLORS["int8"]},
                           hovertemplate="%{x:.4g}: %{y} value(s)<extra></extra>", name="reference values"))
    # (value, label, colour, dash, where the label goes): clipping points labelled at the top, ranges at the bottom,
    # lows to the left of their line and highs to the right, so labels of coinciding lines do not overlap
    marks = [(tv.calibration_min, "calibrated min", "#2ca02c", "dot", "bottom left"),
             (tv.calibration_max, "calibrated max", "#2ca02c", "dot", "bottom right")]
    if tv.clip_low is not None:
        marks += [(tv.clip_low, f"{tv.grid} clips below", COLORS["ticked"], "dash", "top left"),
                  (tv.clip_high, f"{tv.grid} clips above", COLORS["ticked"], "dash", "top right")]
    if tv.override is not None:
        marks += [(tv.override[0], "custom min", "#9467bd", "dashdot", "bottom left"),
                  (tv.override[1], "custom max", "#9467bd", "dashdot", "bottom right")]
    for value, label, color, dash, where in marks:
        if value is not None and math.isfinite(value):
            fig.add_vline(x=value, line={"color": color, "dash": dash}, annotation_text=label, annotation_position=where,
                          annotation_font_size=10, annotation_yshift=-12 if where.startswith("bottom") else 0)
    fig.update_yaxes(type="log", title_text="values (log scale)")
    fig.update_xaxes(title_text=f"value of {tv.tensor}")
    fig.update_layout(height=320, margin={"l": 50, "r": 20, "t": 40, "b": 50}, showlegend=False, bargap=0)
    return fig


def channel_figure(max_abs: tuple[float, ...], limit: float | None, *, what: str, limit_label: str,
                   per_channel_limits: tuple[float, ...] = ()) -> go.Figure:
    """Largest |value| per channel (the largest one red: an outlier channel shows at once), with the INT8 limit."""
    values = np.asarray(max_abs, dtype=float)
    worst = int(values.argmax()) if values.size else -1
    colors = [COLORS["ticked"] if i == worst else COLORS["int8"] for i in range(values.size)]
    fig = go.Figure(go.Bar(x=np.arange(values.size), y=values, marker={"color": colors}, name="max |value|",
                           hovertemplate="channel %{x}: max |value| %{y:.4g}<extra></extra>"))
    if per_channel_limits:
        fig.add_trace(go.Scatter(x=np.arange(len(per_channel_limits)), y=per_channel_limits, mode="markers", name=limit_label,
                                 marker={"symbol": "line-ew-open", "size": 12, "color": "#2ca02c"},
                                 hovertemplate="channel %{x}: " + limit_label + " %{y:.4g}<extra></extra>"))
    elif limit is not None and math.isfinite(limit):
        fig.add_hline(y=limit, line={"dash": "dash", "color": "#2ca02c"}, annotation_text=limit_label, annotation_position="top left")
    if worst >= 0:
        fig.add_annotation(x=worst, y=float(values[worst]), text=f"channel {worst}", showarrow=True, arrowhead=2, ay=-25)
    fig.update_xaxes(title_text=f"{what} channel")
    fig.update_yaxes(title_text="max |value|")
    fig.update_layout(height=300, margin={"l": 50, "r": 20, "t": 30, "b": 50}, showlegend=False, bargap=0.1)
    return fig
