"""Plots are pure functions: a layers DataFrame (engine's layers.csv columns) in, a plotly Figure out.

Hover texts iterate engine.METRICS, so a metric added to the engine shows up here without an edit."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

import engine

__all__ = ["layer_figure", "before_after_figure", "pareto_figure", "sensitivity_figure", "tradeoff_figure", "op_type_figure",
           "sweep_figure", "hover_texts", "node_ticks", "exact_level", "SNR_DISPLAY_CAP", "NOISE_FLOOR_DB", "COLORS", "MAX_TICK_LABELS"]

SNR_DISPLAY_CAP = 100.0  # exact tensors (inf dB) are drawn at the cap; hover says "exact"
NOISE_FLOOR_DB = engine.FLOOR_DB  # the engine's introduced_db for "no measurable noise added"
SVG_POINTS = 2000  # up to this many tensors the curves are SVG (a click selects a point); beyond, WebGL keeps them fast
MAX_TICK_LABELS = 48  # node names on the x axis; beyond this every k-th is written (hover names every point)
COLORS = {"int8": "#1f77b4", "ticked": "#d62728", "float": "#9e9e9e", "inspect": "#111111", "harm": "#d62728",
          "noise": "#ff7f0e", "none": "#c7c7c7", "threshold": "#7f7f7f", "best": "#2ca02c"}
STATE_NAMES = {"int8": "INT8 (fallback candidate)", "ticked": "ticked for fallback", "float": "not quantized (runs in float)"}


def state_names(quantized: str = "INT8") -> dict[str, str]:
    """The markers' meanings, naming what quantized nodes compute in (an FP8 run's legend said INT8)."""
    return {**STATE_NAMES, "int8": f"{quantized} (fallback candidate)"}


def exact_level(*snr: pd.Series) -> float:
    """Where exact tensors (inf dB) are drawn: the next ten above the highest finite SNR plus ten, at most
    SNR_DISPLAY_CAP. At a fixed 100, ddddocr's LSTM zero state (exact) stretched the axis and pressed its 15-37 dB curve
    into the bottom fifth."""
    finite = [float(v) for s in snr for v in s if np.isfinite(v)]
    top = max(finite, default=0.0)
    return float(min(SNR_DISPLAY_CAP, max(10.0, math.ceil((top + 10) / 10) * 10)))


def _state(df: pd.DataFrame, fallback: set[str]) -> list[str]:
    return ["ticked" if n in fallback else "int8" if q else "float" for n, q in zip(df["node"], df["quantized"].astype(bool))]


def hover_texts(df: pd.DataFrame, fallback: set[str] | frozenset[str] = frozenset(), quantized: str = "INT8") -> list[str]:
    """One hover text per row: the node, where it came from in the user's file, every metric of engine.METRICS."""
    states = _state(df, set(fallback))
    names = state_names(quantized)
    out = []
    for (_, r), st in zip(df.iterrows(), states):
        lines = [f"<b>{r['node']}</b> ({r['op_type']}): {names[st]}"]
        if isinstance(r.get("original"), str) and r["original"] and r["original"] != r["node"]:
            lines.append(f"from your file: {r['original']}")
        lines.append(f"tensor {r['tensor']}")
        rank = r.get("rank")
        if rank is not None and not pd.isna(rank):
            alone = float(r["alone_snr_db"])
            lines.append(f"culprit rank {int(rank)}: " + (f"final outputs {engine.format_metric('snr_db', alone)} dB SNR with only "
                                                          f"it in {quantized}" if alone == alone else "a rough place, no figure"))
        lines += [f"{m.label}: {engine.format_metric(m.column, float(r[m.column]))}" for m in engine.METRICS if m.column in r]
        intro = float(r["introduced_db"])
        lines.append("introduced noise: none measurable" if intro <= NOISE_FLOOR_DB else f"introduced noise: {intro:.1f} dB")
        out.append("<br>".join(lines))
    return out


def node_ticks(names: list[str]) -> tuple[list[int], list[str]]:
    """Positions and names for the x axis: every node up to MAX_TICK_LABELS, else every k-th."""
    step = max(1, math.ceil(len(names) / MAX_TICK_LABELS))
    pos = list(range(0, len(names), step))
    return pos, [names[i] for i in pos]


def _legend(fig: go.Figure, states: set[str], inspect: bool, quantized: str = "INT8") -> None:
    """Marker meanings as legend entries (the curves themselves are named by the panel titles)."""
    shapes = {"int8": ("circle", COLORS["int8"]), "ticked": ("diamond", COLORS["ticked"]), "float": ("circle", COLORS["float"])}
    for key in ("int8", "ticked", "float"):
        if key in states:
            symbol, color = shapes[key]
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=state_names(quantized)[key], hoverinfo="skip",
                                     marker={"symbol": symbol, "color": color, "size": 9}), 1, 1)
    if inspect:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="inspected node", hoverinfo="skip",
                                 marker={"symbol": "circle-open", "color": COLORS["inspect"], "size": 14, "line": {"width": 2}}), 1, 1)


def layer_figure(df: pd.DataFrame, *, cosine_threshold: float = 0.99, snr_threshold: float = 20.0,
                 fallback: set[str] | frozenset[str] = frozenset(), inspect: str | None = None,
                 top: str | None = None, full_hover: bool = True, quantized: str = "INT8") -> go.Figure:
    """Cosine, SNR and introduced noise per tensor in graph order, on one shared x axis named by node. `top`: the
    ranking's first culprit, labelled when it harms the outputs beyond the threshold. full_hover=False: the SNR points
    name the node and their SNR only (a report of a large graph stays small)."""
    fallback = set(fallback)
    df = df.reset_index(drop=True)
    x = np.arange(len(df))
    states = _state(df, fallback)
    marker = {"color": [COLORS[s] for s in states], "size": [10 if s == "ticked" else 7 if s == "int8" else 5 for s in states],
              "symbol": ["diamond" if s == "ticked" else "circle" for s in states]}
    exact = exact_level(df["snr_db"])
    snr = df["snr_db"].clip(upper=exact).replace(-np.inf, np.nan)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.05, row_heights=[0.33, 0.33, 0.34],
                        # the thresholds are named in the titles, not by labels on the plots: those sat on points and bars
                        # (PP-OCRv4 trial), and the orange bars were explained nowhere
                        subplot_titles=(f"cosine similarity (higher is better; dashed: threshold {cosine_threshold:g})",
                                        f"SNR in dB (higher is better; exact drawn at {exact:g}; dashed: threshold {snr_threshold:g} dB)",
                                        "noise each node adds, dB of its output's signal (higher is worse): red above "
                                        f"{-snr_threshold:g} dB, the SNR threshold's level (dashed), orange below it"))
    # the full hover (every metric) on the SNR curve; the cosine points and noise bars name the node and their own value,
    # which keeps a report of a large graph small
    original = df["original"].fillna("").astype(str) if "original" in df else pd.Series("", index=df.index)
    heads = [f"{n} ({op})" + (f"<br>from your file: {o}" if o and o != n else "")
             for n, op, o in zip(df["node"], df["op_type"], original)]
    cos_text = [f"{h}<br>cosine: {engine.format_metric('cosine', float(v))}" for h, v in zip(heads, df["cosine"])]
    scatter = go.Scatter if len(df) <= SVG_POINTS else go.Scattergl
    fig.add_trace(scatter(x=x, y=df["cosine"], mode="lines+markers", name="cosine", text=cos_text,
                               hovertemplate="%{text}<extra></extra>", marker=marker, line={"color": "#8fb8de", "width": 1},
                               showlegend=False), 1, 1)
    text = (hover_texts(df, fallback, quantized) if full_hover else
            [f"{h}<br>SNR: {engine.format_metric('snr_db', float(v))} dB" for h, v in zip(heads, df["snr_db"])])
    fig.add_trace(scatter(x=x, y=snr, mode="lines+markers", name="SNR", text=text, hovertemplate="%{text}<extra></extra>",
                               marker=marker, line={"color": "#98d398", "width": 1}, showlegend=False), 2, 1)
    intro = df["introduced_db"].astype(float)
    floor = max(NOISE_FLOOR_DB, math.floor(min(intro[intro > NOISE_FLOOR_DB].min() if (intro > NOISE_FLOOR_DB).any() else -60,
                                                  -snr_threshold) / 10) * 10 - 10)
    colors = [COLORS["none"] if v <= NOISE_FLOOR_DB else COLORS["harm"] if v > -snr_threshold else COLORS["noise"] for v in intro]
    bar_text = [f"{h}<br>{'adds no measurable noise' if v <= NOISE_FLOOR_DB else f'adds noise at {v:.1f} dB'}"
                for h, v in zip(heads, intro)]
    fig.add_trace(go.Bar(x=x, y=intro.clip(lower=floor) - floor, base=floor, name="introduced noise", text=bar_text,
                         textposition="none", hovertemplate="%{text}<extra></extra>", marker={"color": colors}, showlegend=False),
                  3, 1)
    for row, level in ((1, cosine_threshold), (2, snr_threshold), (3, -snr_threshold)):
        fig.add_hline(y=level, line={"dash": "dash", "color": COLORS["threshold"]}, row=row, col=1)
    if inspect is not None and (hit := np.flatnonzero(df["node"].to_numpy() == inspect)).size:
        for row, ys in ((1, df["cosine"]), (2, snr)):
            fig.add_trace(go.Scatter(x=x[hit], y=ys.iloc[hit], mode="markers", hoverinfo="skip", showlegend=False,
                                     marker={"symbol": "circle-open", "color": COLORS["inspect"], "size": 15, "line": {"width": 2}}),
                          row, 1)
    if top is not None and "alone_snr_db" in df and (hit := np.flatnonzero(df["node"].to_numpy() == top)).size:
        alone = float(df["alone_snr_db"].iloc[hit[0]])
        if not alone >= snr_threshold:  # harmless at this threshold: no label
            fig.add_annotation(x=int(x[hit[0]]), y=float(intro.iloc[hit[0]]), row=3, col=1, text=f"#1 culprit: {top}",
                               showarrow=True, arrowhead=2, ax=60, ay=-12, xanchor="left", bgcolor="rgba(255,255,255,0.8)")
    _legend(fig, set(states), inspect is not None, quantized)
    pos, names = node_ticks(list(df["node"]))
    fig.update_xaxes(tickvals=pos, ticktext=names, tickangle=-60, tickfont={"size": 10}, row=3, col=1,
                     title_text="node, in graph order" + ("" if len(pos) == len(df) else f" (one name every {pos[1] - pos[0]} nodes; hover for all)"))
    fig.update_yaxes(range=[floor, max(0.0, float(intro.max()) + 5) if len(intro) else 0], row=3, col=1)
    fig.update_xaxes(zeroline=False)
    fig.update_layout(height=820, margin={"l": 60, "r": 20, "t": 60, "b": 120}, dragmode="zoom", hovermode="closest",
                      clickmode="event+select", legend={"orientation": "h", "y": 1.08, "x": 0})
    return fig


def before_after_figure(before: pd.DataFrame, after: pd.DataFrame, labels: tuple[str, str] = ("before", "after"),
                        changed: frozenset[str] | set[str] = frozenset()) -> go.Figure:
    """SNR and cosine of two runs of the same reference graph, matched by tensor name. The first run's lines are wide and
    light under the second's, so both show where they coincide (the grey lines had sat hidden under the green ones);
    `changed`: nodes whose precision differs between the runs, marked on the SNR panel (where the change happened)."""
    merged = before[["tensor", "node", "cosine", "snr_db", "order"]].merge(
        after[["tensor", "cosine", "snr_db"]], on="tensor", suffixes=("_a", "_b")).sort_values("order")
    x = np.arange(len(merged))
    exact = exact_level(merged["snr_db_a"], merged["snr_db_b"])
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=(f"SNR in dB (higher is better; exact drawn at {exact:g})", "cosine similarity (higher is better)"))
    for suffix, label, color, width, size in (("_a", labels[0], "#c7c7c7", 6, 9), ("_b", labels[1], "#2ca02c", 1.5, 4)):
        fig.add_trace(go.Scattergl(x=x, y=merged["snr_db" + suffix].clip(upper=exact), mode="lines+markers", name=f"SNR {label}",
                                   text=merged["node"], hovertemplate="%{text}: %{y:.2f} dB<extra>" + label + "</extra>",
                                   line={"color": color, "width": width}, marker={"size": size}), 1, 1)
        fig.add_trace(go.Scattergl(x=x, y=merged["cosine" + suffix], mode="lines+markers", name=f"cosine {label}",
                                   text=merged["node"], hovertemplate="%{text}: %{y:.6f}<extra>" + label + "</extra>",
                                   line={"color": color, "width": width, "dash": "dot"}, marker={"size": size}), 2, 1)
    hit = merged["node"].isin(set(changed)).to_numpy()
    if hit.any():
        fig.add_trace(go.Scatter(x=x[hit], y=merged["snr_db_b"].clip(upper=exact)[hit], mode="markers", name="precision changed",
                                 text=merged["node"][hit], hovertemplate="%{text}: precision changed<extra></extra>",
                                 marker={"symbol": "diamond-open", "size": 14, "color": COLORS["ticked"], "line": {"width": 2}}),
                      1, 1)
    pos, names = node_ticks(list(merged["node"]))
    fig.update_xaxes(tickvals=pos, ticktext=names, tickangle=-60, tickfont={"size": 10}, row=2, col=1, title_text="node, in graph order")
    fig.update_xaxes(zeroline=False)
    fig.update_layout(height=580, margin={"l": 60, "r": 20, "t": 90, "b": 120}, legend={"orientation": "h", "y": 1.16})
    return fig


def op_type_figure(histogram: dict[str, int]) -> go.Figure:
    """Nodes per op type, most frequent at the top, every label written in full."""
    items = sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0]))
    fig = go.Figure(go.Bar(y=[k for k, _ in items], x=[v for _, v in items], orientation="h", text=[v for _, v in items],
                           textposition="outside", cliponaxis=False, hovertemplate="%{y}: %{x} node(s)<extra></extra>"))
    fig.update_yaxes(autorange="reversed", automargin=True, type="category", dtick=1)
    fig.update_xaxes(title_text="nodes in the file")
    fig.update_layout(height=80 + 24 * len(items), margin={"l": 10, "r": 30, "t": 10, "b": 40})
    return fig


def pareto_figure(builds: pd.DataFrame, *, x: str = "median_ms", y: str = "snr_db", label: str = "label") -> go.Figure:
    """Accuracy against latency, one point per build timed."""
    text = [f"{b}: {lat:.3f} ms, {'exact' if s >= SNR_DISPLAY_CAP else f'{s:.1f} dB'}" for b, lat, s in zip(builds[label], builds[x], builds[y])]
    fig = go.Figure(go.Scatter(x=builds[x], y=builds[y], mode="markers+text", text=builds[label], textposition="top center",
                               hovertext=text, hoverinfo="text", marker={"size": 10}))
    fig.update_layout(xaxis_title="median latency (ms), lower is better",
                      yaxis_title=f"final-output SNR (dB), higher is better; exact drawn at {SNR_DISPLAY_CAP:g}", height=420,
                      margin={"l": 60, "r": 20, "t": 30, "b": 50})
    return fig


def sensitivity_figure(sens: pd.DataFrame, metric: str = "snr_db") -> go.Figure:
    """Both isolated views per node in the engine's order (most harmful alone first), drawn top to bottom. Each panel's
    axis spans its values, not zero up: YOLOv8n's 'all but this' values, 26.5 to 32.5 dB, drew as equal bars."""
    # every node in INT8, where the gains say it (SNR of a one-output model): the 'all but this' panel's baseline; a node
    # whose fallback lowers the SNR drew as a green bar like the rest (ShuffleNet trial)
    base = None
    if metric == "snr_db" and "all_but_this_gain_db" in sens:
        levels = (sens["all_but_this_snr_db"] - sens["all_but_this_gain_db"]).dropna()
        levels = levels[np.isfinite(levels)]
        if len(levels) and float(levels.max() - levels.min()) < 1e-6:
            base = float(levels.iloc[0])
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=(f"only this node INT8 ({metric}, lower: more harm)",
                                        f"all but this node INT8 ({metric}, higher: more gain)"
                                        + ("<br>bars from every node INT8 (dashed)" if base is not None else "")))
    for col, (view, name, color) in enumerate((("only_this_quantized", "only this", COLORS["harm"]),
                                               ("all_but_this", "all but this", "#2ca02c")), 1):
        x = sens[f"{view}_{metric}"].clip(upper=SNR_DISPLAY_CAP)
        if col == 2 and base is not None:  # bars from the all-INT8 level: right for a gain, left (red) for a loss
            fig.add_trace(go.Bar(y=sens["node"], x=x - base, base=base, orientation="h", name=name, customdata=x,
                                 marker={"color": [COLORS["harm"] if v < base else color for v in x]},
                                 hovertemplate="%{y}: %{customdata:.2f}<extra></extra>"), 1, col)
            fig.add_vline(x=base, line={"dash": "dash", "color": COLORS["threshold"]}, row=1, col=2)
        else:
            fig.add_trace(go.Bar(y=sens["node"], x=x, orientation="h", name=name, marker={"color": color}), 1, col)
        finite = x[np.isfinite(x)]
        if col == 2 and base is not None:
            finite = pd.concat([finite, pd.Series([base])])
        if len(finite):
            lo, hi = float(finite.min()), float(finite.max())
            pad = max(0.1 * (hi - lo), 1e-3 * max(abs(lo), abs(hi)), 1e-6)
            fig.update_xaxes(range=[lo - pad, hi + pad], row=1, col=col)
    fig.update_yaxes(autorange="reversed", automargin=True, type="category", dtick=1)
    fig.update_layout(height=max(300, 24 * len(sens) + 120), showlegend=False, margin={"l": 10, "r": 20, "t": 50, "b": 30})
    return fig


STRATEGY_STYLE = {"start": ("square-open", "#7f7f7f", 16), "greedy": ("circle", "#1f77b4", 10), "bisect": ("diamond", "#ff7f0e", 8)}


def tradeoff_figure(steps: pd.DataFrame, target_value: float | None = None, metric: str = "snr_db",
                    chosen: tuple[tuple[str, ...], float | None] | None = None) -> go.Figure:
    """Every probe of an automatic fallback search: metric against nodes in fallback, one style per strategy (sizes
    differ so coinciding probes stay visible), and the set chosen highlighted."""
    fig = go.Figure()
    for strategy, part in steps.groupby("strategy", sort=False):
        symbol, color, size = STRATEGY_STYLE.get(str(strategy), ("x", "#9467bd", 8))
        fig.add_trace(go.Scatter(x=part["nodes"], y=part["value"], mode="markers", name=str(strategy),
                                 marker={"symbol": symbol, "color": color, "size": size, "line": {"width": 1.5, "color": color}},
                                 text=part["phase"] + ": " + part["fallback"].map(lambda f: ", ".join(f) or "(none)"),
                                 hovertemplate="%{text}<br>%{y:.3f}<extra>" + str(strategy) + "</extra>"))
    if chosen is not None and chosen[1] is not None:
        nodes, value = chosen
        fig.add_trace(go.Scatter(x=[len(nodes)], y=[value], mode="markers+text", name="chosen set",
                                 text=[f"chosen: {len(nodes)} node(s)"], textposition="bottom center",  # beside it, it ran into the target's line
                                 marker={"symbol": "star", "size": 20, "color": "#2ca02c", "line": {"width": 1, "color": "#1b5e20"}},
                                 hovertemplate=", ".join(nodes) + "<br>%{y:.3f}<extra>chosen</extra>"))
    if target_value is not None:
        fig.add_hline(y=target_value, line={"dash": "dash", "color": COLORS["threshold"]}, annotation_text=f"target {target_value:g}")
    name, unit = engine.TARGET_WORDS.get(metric, (metric, ""))  # 'snr_db' read as code (browser trial)
    # only the set sizes the search measured, evenly spaced in numeric order: on a linear axis up to every node (64 on
    # PP-OCRv4's detector) the small sets a user wants sat crowded at the origin
    sizes = sorted({int(n) for n in steps["nodes"]} | ({len(chosen[0])} if chosen is not None and chosen[1] is not None else set()))
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=sizes)
    fig.update_layout(xaxis_title="nodes in fallback (only the sizes measured)", yaxis_title=f"{name}{f' ({unit.strip()})' if unit else ''}",
                      height=400, legend={"orientation": "h", "y": 1.12})
    return fig


SWEEP_AXES = {"snr_db": "final-output SNR (dB), higher is better", "cosine": "final-output cosine, higher is better",
              "top1_agreement": "top-1 agreement with FP32, higher is better", "accuracy": "accuracy, higher is better"}


def _batch_words(rows: pd.DataFrame) -> str:
    """' of N' where every timed configuration ran a batch of N samples (a sweep lowers it to the memory setting)."""
    sizes = set(pd.to_numeric(rows["latency_batch"], errors="coerce").dropna().astype(int)) if "latency_batch" in rows else set()
    return f" of {sizes.pop()}" if len(sizes) == 1 else ""


def sweep_figure(rows: pd.DataFrame, metric: str = "snr_db", *, label: str = "config") -> go.Figure:
    """A sweep's configurations top to bottom in its order (engine.SweepResult.to_frame() columns): `metric`, the one
    that picked the best, as bars, and latency beside them where it was timed. The best configuration is green and
    labelled; one without numbers (its `note` says why) is a grey cross at the axis, its sentence in the hover."""
    rows = rows.reset_index(drop=True)
    names = rows[label].astype(str).tolist()
    values = pd.to_numeric(rows[metric], errors="coerce").astype(float)
    shown = values.clip(upper=SNR_DISPLAY_CAP) if metric == "snr_db" else values
    best = rows["best"].fillna(False).astype(bool).tolist()
    notes = rows["note"].fillna("").astype(str).tolist() if "note" in rows else [""] * len(rows)
    latency = pd.to_numeric(rows["latency_ms"], errors="coerce").astype(float) if "latency_ms" in rows else pd.Series(math.nan, index=rows.index)
    timed = bool(latency.notna().any())
    fig = make_subplots(rows=1, cols=2 if timed else 1, shared_yaxes=True, horizontal_spacing=0.03,
                        column_widths=[0.7, 0.3] if timed else None,
                        subplot_titles=(SWEEP_AXES.get(metric, metric),) + ((f"latency of a batch{_batch_words(rows)} (ms),<br>lower is better",)
                                                                           if timed else ()))  # one line was cut at "lower is bet"
    value_text = ["exact" if metric == "snr_db" and v == math.inf else "" if math.isnan(v) else f"{v:.2f} dB" if metric == "snr_db"
                  else f"{v:.4f}" for v in values]
    colors = [COLORS["best"] if b else COLORS["int8"] for b in best]
    fig.add_trace(go.Bar(y=names, x=shown, orientation="h", name=SWEEP_AXES.get(metric, metric), marker={"color": colors},
                         text=[f"best: {t}" if b else t for t, b in zip(value_text, best)], textposition="auto",
                         hovertemplate="%{y}: %{text}<extra></extra>", showlegend=False), 1, 1)
    if timed:
        fig.add_trace(go.Bar(y=names, x=latency, orientation="h", name="latency", showlegend=False,
                             marker={"color": [COLORS["best"] if b else COLORS["float"] for b in best]},
                             hovertemplate="%{y}: %{x:.3f} ms<extra></extra>"), 1, 2)
    noted = [i for i, n in enumerate(notes) if n]
    if noted:
        base = 0.0 if metric == "snr_db" or shown.dropna().empty else float(shown.dropna().min())
        fig.add_trace(go.Scatter(y=[names[i] for i in noted], x=[base] * len(noted), mode="markers", name="no result",
                                 marker={"symbol": "x", "size": 12, "color": COLORS["none"]}, text=[notes[i] for i in noted],
                                 hovertemplate="%{y}: no result. %{text}<extra></extra>"), 1, 1)
    if metric != "snr_db" and not shown.dropna().empty:  # fractions near 1: start the axis below the lowest, not at 0
        low = float(shown.dropna().min())
        fig.update_xaxes(range=[max(0.0, low - max(0.2 * (1 - low), 0.001)), 1.0], row=1, col=1)
    fig.update_yaxes(autorange="reversed", automargin=True, type="category", dtick=1)
    fig.update_layout(height=max(260, 30 * len(rows) + 110), margin={"l": 10, "r": 20, "t": 60, "b": 30},
                      legend={"orientation": "h", "y": -0.1})
    return fig
