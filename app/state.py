"""Session-state keys in one place, and the few helpers that read or write them.

The fallback ticks have one source of truth, FALLBACK. The Layers table's checkboxes write it from their change
callback (before the page script runs, so the plot drawn in the same run already shows them); every other writer (the
top-k and clear buttons, the plot's selection, "Apply suggested fallback", a finished job) goes through `set_fallback`,
which also starts a fresh table, since the table's own edits are relative to the ticks it was created with."""

from __future__ import annotations

from collections.abc import Iterable

import streamlit as st

import engine

SETTINGS = "qs_settings"  # engine.Settings, read from the environment once when the session starts (main.py)
WORKSPACE = "qs_workspace"  # the workspace id: names its folder under the runs root (see app/workspace.py)
WORKSPACE_TOKEN = "qs_workspace_token"  # opens the workspace; kept in the address bar as ?ws=
LOAD_SOURCE = "qs_load_source"  # "Bundled sample" | "Upload": the Load page's choice, kept across pages
PENDING_UPLOAD = "qs_pending_upload"  # dict role -> file name: files chosen on the Load page but not applied yet
LOAD_FAILED = "qs_load_failed"  # the sentence of the last failed "Use these files" (the inputs in use did not change)
NOTICE = "qs_notice"  # a sentence shown once at the top of the next page (unknown link, refused ?run=)
INPUTS = "qs_inputs"  # app.inputs.Inputs: the model/data the next comparison uses (see views/load.py)
RUN_INPUTS = "qs_run_inputs"  # dict str(run_dir) -> Inputs that run compared (for the equivalent CLI command)
RESULT = "qs_result"  # engine.ComparisonResult of the latest compare or rebuild
BEFORE = "qs_before"  # the result a rebuild started from (before/after view)
FALLBACK = "qs_fallback"  # set[str]: nodes ticked for fallback; survives reruns and pages
TABLE_GENERATION = "qs_table_generation"  # int: bumped when the ticks change other than by the table itself
TABLE_BASE = "qs_table_base"  # (table key, frozenset): the ticks the live table was created with
TICK_REFUSED = "qs_tick_refused"  # a sentence: the last tick the table refused (a node that is not quantized)
INSPECT = "qs_inspect"  # str: the node the graph and tensor views show (table's inspect button, a click on the plot)
RANGES = "qs_ranges"  # dict tensor -> (min, max): custom calibration ranges for the next rebuild (--range)
PRECISION = "qs_precision"  # "fp16" | "fp32": fallback precision for the next rebuild (--fallback-precision)
SENSITIVITY = "qs_sensitivity"  # (run_dir, DataFrame) from engine.sensitivity for the current run
AUTOFALLBACK = "qs_autofallback"  # (run_dir, engine.AutoFallbackResult) for the current run
LATENCY = "qs_latency"  # list[dict]: every build timed in this session (the Pareto view)
SWEEP = "qs_sweep"  # app.sweeps.Swept: the last finished sweep (a failed or cancelled one leaves it as it was)
COMPARE_SETTINGS = "qs_compare_settings"  # dict widget key -> value for the Compare page's controls, set elsewhere (a
# configuration opened on the Sweep page) and applied when Compare next draws them (a widget's own state is dropped
# while its page is not shown)
OPEN_LAYERS = "qs_open_layers"  # a configuration opened from the Sweep page has finished: show it on the Layers page
AUTHENTICATED = "qs_authenticated"  # the shared password (st.secrets["password"]) was given
JOB = "qs_job"  # app.jobs.Job: this session's queued, running or last finished engine job


# The Compare and Sweep controls' own keys. Streamlit forgets a widget's value once a run does not draw it, so a trip to
# the Load page set the batch size back to 25 (browser trial); keep_widgets() hands each value back every run.
KEPT_WIDGETS = ("cmp_method", "cmp_percentile", "cmp_batch", "cmp_provider", "cmp_screen", "cmp_precision", "cmp_ops",
                "sw_methods", "sw_percentiles", "sw_precisions", "sw_op_sets", "sw_batch", "sw_provider", "sw_select",
                "af_metric", "af_max", "af_strategy", "af_units")
KEPT_PREFIXES = ("af_value_",)  # one control a choice: the search's target value for each metric


def keep_widgets() -> None:
    """Before any page draws: each kept control's value, assigned to itself, outlives a run that does not draw it."""
    ss = st.session_state
    for key in [*KEPT_WIDGETS, *(k for k in ss if isinstance(k, str) and k.startswith(KEPT_PREFIXES))]:
        if key in ss:
            ss[key] = ss[key]


def keep_choices_within(key: str, options, default: list) -> None:
    """A kept multiselect's choices, less those the page no longer offers (another model's op types); `default` where
    none is left. Chosen nothing stays nothing: the page then says what is missing."""
    ss = st.session_state
    if (kept := [c for c in ss[key] if c in options]) != ss[key]:
        ss[key] = kept or default


def init() -> None:
    st.session_state.setdefault(FALLBACK, set())
    st.session_state.setdefault(TABLE_GENERATION, 0)
    st.session_state.setdefault(RANGES, {})


def settings() -> engine.Settings:
    """This session's settings (main.py reads them once, when the session starts)."""
    found = st.session_state.get(SETTINGS)
    if found is None:
        found = st.session_state[SETTINGS] = engine.Settings.from_env()
    return found


def fallback() -> set[str]:
    return st.session_state.setdefault(FALLBACK, set())


def set_fallback(nodes: Iterable[str]) -> None:
    """Every change of the ticks that does not come from the Layers table's own checkboxes."""
    st.session_state[FALLBACK] = set(nodes)
    st.session_state[TABLE_GENERATION] = st.session_state.get(TABLE_GENERATION, 0) + 1
    st.session_state.pop(TICK_REFUSED, None)


def adopt(result: engine.ComparisonResult) -> None:
    """A result becomes current: its fallback set is ticked, its custom ranges and precision are those of the next
    rebuild, and the node inspected stays if the new graph has it."""
    ss = st.session_state
    ss[RESULT] = result
    set_fallback(result.summary.fallback)
    ss[RANGES] = {r.tensor: (r.min, r.max) for r in result.summary.config.ranges}
    ss[PRECISION] = result.summary.fallback_precision.value
    if ss.get(INSPECT) not in set(result.layers["node"]):
        ss.pop(INSPECT, None)
