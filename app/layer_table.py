"""The Layers page's fallback table, pure: one row per node in the engine's ranking order, its columns from
engine.METRICS, and how the table's checkbox edits become the set of ticked nodes.

Only fallback candidates can be ticked: the nodes of the quantized op types that read a quantized tensor, plus the
nodes the current build already keeps in fallback (so they can be unticked). A tick on any other node is refused with
one sentence: falling it back would change nothing."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

import engine
from app.plots import NOISE_FLOOR_DB

__all__ = ["TICK", "INSPECT", "candidates", "ranking_sentence", "origins", "node_rows", "filter_rows", "table_frame", "column_config", "apply_edits",
           "refusal", "printf"]

TICK = "fallback"
INSPECT = "inspect"


def candidates(result: engine.ComparisonResult) -> set[str]:
    """Nodes whose fallback changes something: quantized ones, and those the current build keeps in fallback."""
    layers = result.layers
    return set(layers.loc[layers["quantized"].astype(bool), "node"]) | set(result.summary.fallback)


def node_rows(result: engine.ComparisonResult, show_all: bool) -> pd.DataFrame:
    """Each node's worst output tensor; nodes this build already keeps in fallback first (after a rebuild they sat below
    64 ranked rows, and the YOLOv8n trial could not find them to untick), then ranked candidates in the engine's
    order, then (with show_all) every other node in graph order."""
    layers = result.layers
    per_node = layers.sort_values(["snr_db", "order"], na_position="last").drop_duplicates("node").sort_values("order")
    cands = candidates(result)
    rank = pd.to_numeric(per_node["rank"], errors="coerce") if "rank" in per_node else pd.Series(math.nan, index=per_node.index)
    is_cand = per_node["node"].isin(cands)
    ranked = per_node[is_cand & rank.notna()].assign(_r=rank).sort_values(["_r", "order"]).drop(columns="_r")
    held = per_node[is_cand & rank.isna()]
    parts = [held, ranked] + ([per_node[~is_cand]] if show_all else [])
    return pd.concat(parts).reset_index(drop=True)


def filter_rows(rows: pd.DataFrame, ops: list[str], text: str) -> pd.DataFrame:
    """By op type, and by a name that matches the node or where it came from in the user's file."""
    out = rows
    if ops:
        out = out[out["op_type"].isin(ops)]
    if text:
        hay = out["node"].astype(str) + "\n" + out.get("original", pd.Series("", index=out.index)).fillna("").astype(str)
        out = out[hay.str.contains(text, case=False, regex=False)]
    return out.reset_index(drop=True)


def table_frame(rows: pd.DataFrame, ticks: set[str] | frozenset[str], cands: set[str]) -> pd.DataFrame:
    """What the table shows: the tick (None where a node cannot be ticked), an inspect button, the ranking, the names,
    then every metric of engine.METRICS; 'no noise measurable' (the engine's floor) shows as blank, not -120."""
    frame = pd.DataFrame({
        # nullable booleans, whatever the rows: a filter that left no row made an empty float column, which Streamlit's
        # checkbox column refuses (the whole page below the table failed)
        TICK: pd.Series([(n in ticks) if n in cands else None for n in rows["node"]], index=rows.index, dtype="boolean"),
        INSPECT: "inspect",
        "rank": rows["rank"] if "rank" in rows else pd.NA,
        "node": rows["node"],
        "original": rows["original"] if "original" in rows else "",
        "op_type": rows["op_type"],
        "alone_snr_db": rows["alone_snr_db"] if "alone_snr_db" in rows else math.nan,
        "gain_db": rows["gain_db"] if "gain_db" in rows else math.nan,
        "ranked_on": rows["ranked_on"] if "ranked_on" in rows else pd.NA,
    })
    for m in engine.METRICS:
        if m.column in rows:
            frame[m.column] = rows[m.column].astype(float)
    frame["introduced_db"] = rows["introduced_db"].astype(float).where(rows["introduced_db"] > NOISE_FLOOR_DB)
    frame["tensor"] = rows["tensor"]
    return frame


def printf(fmt: str) -> str:
    """A Python format spec ('.6f', '.4g') as the printf format Streamlit's number columns take."""
    return "%" + fmt


def column_config(st_column_config, precision: str, quantized: str = "INT8") -> dict:
    """Column labels and formats; `st_column_config` is streamlit.column_config (kept out of this pure module).
    precision: the fallback precision; quantized: what quantized nodes compute in (INT8, FP8)."""
    cc = st_column_config
    config = {
        TICK: cc.CheckboxColumn(f"keep {precision}", width=90,
                                help=f"Tick to keep this node out of {quantized} ({precision}) on the next rebuild; only fallback "
                                     "candidates can be ticked."),
        "rank": cc.NumberColumn("rank", format="%d", width=60,
                                help=f"The engine's culprit ranking: 1 hurts the final outputs most when it alone is {quantized}."),
        "node": cc.TextColumn("node", help="The node's name in the graph QuantScope compared (after pre-processing)."),
        "original": cc.TextColumn("from your file", help="The node(s) of your file it came from: their names, or '#index Op' "
                                                         "where your file has no name. Search finds these names too."),
        "op_type": cc.TextColumn("op", width="small"),
        "alone_snr_db": cc.NumberColumn(f"outputs SNR, only it {quantized} (dB)", format="%.2f",
                                        help=f"Final-output SNR with only this node in {quantized} (lower is worse)."),
        "gain_db": cc.NumberColumn("outputs SNR gain, only it in fallback (dB)", format="%+.2f",
                                   help="How much falling back only this node raises the final-output SNR from every node in "
                                        f"{quantized} (higher is better)."),
        "ranked_on": cc.NumberColumn("ranked on", format="%d", width="small",
                                     help="How many samples this node's two outputs-SNR columns were measured on: the ranking "
                                          "measures every node on a few, then the strongest on more, so compare values "
                                          "measured on as many samples."),
        "introduced_db": cc.NumberColumn("noise it adds (dB)", format="%.1f",
                                         help="Noise this node adds relative to its output's signal; blank: none measurable."),
        "tensor": cc.TextColumn("output tensor"),
    }
    for m in engine.METRICS:
        config[m.column] = cc.NumberColumn(m.label, format=printf(m.fmt), help=m.help)
    return config


def apply_edits(base: frozenset[str], nodes: list[str], edited_rows: Mapping, cands: set[str]) -> tuple[set[str], list[str]]:
    """The ticks after the table's edits (relative to the ticks it was created with), and the nodes it refused."""
    ticks, refused = set(base), []
    for row, change in edited_rows.items():
        if TICK not in change:
            continue
        node = nodes[int(row)]
        if node not in cands:
            refused.append(node)
        elif change[TICK]:
            ticks.add(node)
        else:
            ticks.discard(node)
    return ticks, refused


def refusal(node: str, op_type: str, op_types: tuple[str, ...]) -> str:
    """The one sentence for a tick on a node that is not a fallback candidate (the CLI's --fallback says the same)."""
    return (f"The node '{node}' ({op_type}) is not quantized, so falling it back would change nothing; pick a "
            f"{'/'.join(op_types)} node from the ranking.")


def ranking_sentence(ranking: engine.RankingInfo, culprits: tuple[engine.Culprit, ...] = (), fallback: int = 0,
                     quantized: str = "INT8") -> str:
    """What the culprit order means, for the Layers page and the report. culprits: the list it orders, whose first was
    measured on its own sample count (a budget-limited ranking measures every unit on fewer samples than its all-INT8
    figure). fallback: how many nodes this build keeps out of INT8; a rebuild keeps the ranking of the all-INT8 build."""
    if ranking.method != "measured harm":
        return "Ranked by the noise each node adds (harm was not measured)."
    if ranking.view == "gain":
        what = (f"Ranked by measured gain: how much falling back only that node raises the final outputs' SNR from "
                f"{engine.format_metric('snr_db', ranking.all_int8_snr_db)} dB with every node in {quantized} (higher first; "
                "this order was chosen because falling back its top three together recovered more than the top three by "
                f"the SNR with only that node in {quantized})")
    else:
        what = f"Ranked by measured harm: the final outputs' SNR with only that node in {quantized} (lower is worse)"
    top = (culprits[0].samples if culprits else 0) or ranking.samples
    against = (f" Measured against every node in {quantized}, not against this build with {fallback} node(s) in fallback: with "
               "those in fallback, another node's effect can differ." if fallback and ranking.method == "measured harm" else "")
    head = sum(1 for c in culprits if c.samples == top)
    rest = {c.samples for c in culprits if c.samples and c.samples != top}
    if head and rest:  # a staged ranking: its two blocks are each in order, the list as a whole is not (captcha trial:
        # rank 6 at 30.1 dB above rank 7 at 23.0 read as a broken sort)
        fewer = " or ".join(str(n) for n in sorted(rest))
        first = f"Below the {fallback} node(s) in fallback, the first" if fallback else "The first"
        if any(c.samples != top and c.alone_snr_db != c.alone_snr_db for c in culprits):  # not given: see Culprit figures
            return (f"{what}. {first} {head} were measured again on {top} samples and come first, in order among themselves. "
                    f"The rest follow in a rough order, without figures: for the nodes measured both ways, figures on {fewer} "
                    f"sample{'s' if rest != {1} else ''} were off by up to {ranking.first_stage_error_db:.1f} dB from those on "
                    f"{top}, too few samples for this model's outputs; the Sensitivity page measures every node on more "
                    f"(probes: {ranking.plan}).{against}")
        return (f"{what}. {first} {head} were measured again on {top} samples and come first, in order among themselves; "
                f"the rest follow in their order on {fewer} sample{'s' if rest != {1} else ''}, so a value further down can "
                f"be worse than one above it (probes: {ranking.plan}).{against}")
    return (f"{what}; the top of the list on {top} sample{'s' if top != 1 else ''}, each node on as many as its ranked-on "
            f"column says (probes: {ranking.plan or 'one stage'}).{against}")


def origins(layers: pd.DataFrame) -> dict[str, str]:
    """Prepared node -> the node(s) of the user's file it came from ('' where none is recorded; a layers.csv read back
    gives NaN there)."""
    return dict(zip(layers["node"], layers["original"].fillna("").astype(str))) if "original" in layers else {}
