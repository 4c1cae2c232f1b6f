"""Session-state keys in one place, and the few helpers that read them."""

from __future__ import annotations

import streamlit as st

WORKSPACE = "qs_workspace"  # the workspace id: names its folder under the runs root (see app/workspace.py)
WORKSPACE_TOKEN = "qs_workspace_token"  # opens the workspace; kept in the address bar as ?ws=
LOAD_SOURCE = "qs_load_source"  # "Bundled sample" | "Upload": the Load page's choice, kept across pages
NOTICE = "qs_notice"  # a sentence shown once at the top of the next page (unknown link, refused ?run=)
INPUTS = "qs_inputs"  # dict: the model/data the next comparison uses (see views/load.py)
RESULT = "qs_result"  # engine.ComparisonResult of the latest compare or rebuild
BEFORE = "qs_before"  # the result a rebuild started from (before/after view)
FALLBACK = "qs_fallback"  # set[str]: nodes ticked for FP16 fallback; survives reruns and pages


def init() -> None:
    st.session_state.setdefault(FALLBACK, set())


def fallback() -> set[str]:
    return st.session_state.setdefault(FALLBACK, set())

SENSITIVITY = "qs_sensitivity"  # DataFrame from engine.sensitivity for the current run
AUTOFALLBACK = "qs_autofallback"  # engine.AutoFallbackResult for the current run
LATENCY = "qs_latency"  # list[dict]: every build timed in this session (the Pareto view)
AUTHENTICATED = "qs_authenticated"  # the shared password (st.secrets["password"]) was given
JOB = "qs_job"  # app.jobs.Job: this session's queued or running engine job
