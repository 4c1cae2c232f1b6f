"""Plots are pure functions: a layers DataFrame (engine's layers.csv columns) in, a plotly Figure out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = ["layer_figure", "before_after_figure", "pareto_figure", "sensitivity_figure", "tradeoff_figure", "SNR_DISPLAY_CAP"]

SNR_DISPLAY_CAP = 100.0  # exact tensors (inf dB) are drawn at the cap; hover shows "inf"

_HOVER = ("<b>%{customdata[0]}</b> (%{customdata[1]})<br>tensor %{customdata[2]}<br>cosine %{customdata[3]:.6f}"
          "<br>SNR %{customdata[4]} dB<br>introduced %{customdata[5]:.1f} dB<br>max |err| %{customdata[6]:.4g}"
          "<br>%{customdata[7]}<extra></extra>")


def _custom(df: pd.DataFrame, fallback: set[str]) -> np.ndarray:
    snr = df["snr_db"].map(lambda v: "inf" if np.isinf(v) else f"{v:.2f}")
    state = [("FP16 fallback" if n in fallback else "INT8" if q else "float") for n, q in zip(df["node"], df["quantized"])]
    return np.stack([df["node"], df["op_type"], df["tensor"], df["cosine"], snr, df["introduced_db"], df["max_abs_err"], state], axis=1)


def _marker(df: pd.DataFrame, fallback: set[str]) -> dict:
    colors = ["#d62728" if n in fallback else "#1f77b4" if q else "#9e9e9e" for n, q in zip(df["node"], df["quantized"])]
    symbols = ["diamond" if n in fallback else "circle" if q else "circle-open" for n, q in zip(df["node"], df["quantized"])]
    return {"color": colors, "symbol": symbols, "size": 7}


def layer_figure(df: pd.DataFrame, *, cosine_threshold: float = 0.99, snr_threshold: float = 20.0,
                 fallback: set[str] | frozenset[str] = frozenset()) -> go.Figure:
    """Cosine, SNR and introduced_db per layer in topological order, on one shared x axis."""
    fallback = set(fallback)
    df = df.reset_index(drop=True)
    x = np.arange(len(df))
    custom = _custom(df, fallback)
    snr = df["snr_db"].clip(upper=SNR_DISPLAY_CAP).replace(-np.inf, np.nan)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.04, row_heights=[0.35, 0.35, 0.3],
                        subplot_titles=("cosine similarity", "SNR (dB)", "introduced noise (dB), higher is worse"))
    fig.add_trace(go.Scattergl(x=x, y=df["cosine"], mode="lines+markers", name="cosine", customdata=custom,
                               hovertemplate=_HOVER, marker=_marker(df, fallback), line={"color": "#1f77b4", "width": 1}), 1, 1)
    fig.add_trace(go.Scattergl(x=x, y=snr, mode="lines+markers", name="SNR", customdata=custom,
                               hovertemplate=_HOVER, marker=_marker(df, fallback), line={"color": "#2ca02c", "width": 1}), 2, 1)
    intro = df["introduced_db"].clip(lower=-120)
    top = intro.max() if len(intro) else 0
    colors = ["#d62728" if v == top and v > -120 else "#ff7f0e" for v in intro]
    fig.add_trace(go.Bar(x=x, y=intro + 120, base=-120, name="introduced", customdata=custom, hovertemplate=_HOVER,
                         marker={"color": colors}), 3, 1)
    fig.add_hline(y=cosine_threshold, line={"dash": "dash", "color": "#d62728"}, row=1, col=1)
    fig.add_hline(y=snr_threshold, line={"dash": "dash", "color": "#d62728"}, row=2, col=1)
    fig.update_layout(height=720, showlegend=False, margin={"l": 50, "r": 20, "t": 40, "b": 40}, dragmode="select",
                      hovermode="closest", clickmode="event+select")
    fig.update_xaxes(title_text="layer (topological order)", row=3, col=1)
    return fig


def before_after_figure(before: pd.DataFrame, after: pd.DataFrame, labels: tuple[str, str] = ("before", "after")) -> go.Figure:
    """SNR and cosine of two runs of the same reference graph, matched by tensor name."""
    merged = before[["tensor", "node", "cosine", "snr_db", "order"]].merge(
        after[["tensor", "cosine", "snr_db"]], on="tensor", suffixes=("_a", "_b")).sort_values("order")
    x = np.arange(len(merged))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06, subplot_titles=("SNR (dB)", "cosine similarity"))
    for suffix, label, color in (("_a", labels[0], "#9e9e9e"), ("_b", labels[1], "#2ca02c")):
        fig.add_trace(go.Scattergl(x=x, y=merged["snr_db" + suffix].clip(upper=SNR_DISPLAY_CAP), mode="lines+markers", name=f"SNR {label}",
                                   text=merged["node"], hovertemplate="%{text}: %{y:.2f} dB<extra>" + label + "</extra>",
                                   line={"color": color}), 1, 1)
        fig.add_trace(go.Scattergl(x=x, y=merged["cosine" + suffix], mode="lines+markers", name=f"cosine {label}",
                                   text=merged["node"], hovertemplate="%{text}: %{y:.6f}<extra>" + label + "</extra>",
                                   line={"color": color, "dash": "dot"}), 2, 1)
    fig.update_layout(height=520, margin={"l": 50, "r": 20, "t": 40, "b": 40}, legend={"orientation": "h"})
    return fig


def pareto_figure(builds: pd.DataFrame, *, x: str = "latency_ms", y: str = "snr_db", label: str = "build") -> go.Figure:
    """Accuracy vs latency of every build (one point each)."""
    fig = go.Figure(go.Scatter(x=builds[x], y=builds[y], mode="markers+text", text=builds[label], textposition="top center"))
    fig.update_layout(xaxis_title=x, yaxis_title=y, height=420)
    return fig


def sensitivity_figure(sens: pd.DataFrame, metric: str = "snr_db") -> go.Figure:
    """Both isolated views per node, ranked by the harm of the node alone."""
    df = sens.sort_values(f"only_this_quantized_{metric}")
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=(f"only this node INT8: {metric} (lower = more harmful)",
                                        f"all but this node INT8: {metric} (higher = bigger fallback gain)"))
    fig.add_trace(go.Bar(y=df["node"], x=df[f"only_this_quantized_{metric}"].clip(upper=SNR_DISPLAY_CAP), orientation="h",
                         name="only this", marker={"color": "#d62728"}), 1, 1)
    fig.add_trace(go.Bar(y=df["node"], x=df[f"all_but_this_{metric}"].clip(upper=SNR_DISPLAY_CAP), orientation="h",
                         name="all but this", marker={"color": "#2ca02c"}), 1, 2)
    fig.update_layout(height=max(300, 24 * len(df) + 120), showlegend=False, margin={"l": 160, "r": 20, "t": 50, "b": 30})
    return fig


def tradeoff_figure(steps: pd.DataFrame, target_value: float | None = None, metric: str = "snr_db") -> go.Figure:
    """Every probe of an automatic fallback search: metric vs number of nodes in fallback, per strategy."""
    fig = go.Figure()
    for strategy, part in steps.groupby("strategy", sort=False):
        fig.add_trace(go.Scatter(x=part["nodes"], y=part["value"], mode="markers", name=strategy,
                                 text=part["fallback"].map(lambda f: ", ".join(f) or "(none)"),
                                 hovertemplate="%{text}<br>%{y}<extra>" + str(strategy) + "</extra>"))
    if target_value is not None:
        fig.add_hline(y=target_value, line={"dash": "dash", "color": "#d62728"})
    fig.update_layout(xaxis_title="nodes in fallback", yaxis_title=metric, height=380)
    return fig
