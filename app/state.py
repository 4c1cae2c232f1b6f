"""Session-state keys in one place, and the few helpers that read them."""

from __future__ import annotations

import streamlit as st

SESSION_ID = "qs_session_id"
INPUTS = "qs_inputs"  # dict: the model/data the next comparison uses (see pages/load.py)
RESULT = "qs_result"  # engine.ComparisonResult of the latest compare or rebuild
BEFORE = "qs_before"  # the result a rebuild started from (before/after view)
FALLBACK = "qs_fallback"  # set[str]: nodes ticked for FP16 fallback; survives reruns and pages
HISTORY = "qs_history"  # list[dict]: every run of this session
RUN_COUNTER = "qs_run_counter"
LAST_ERROR = "qs_last_error"


def init() -> None:
    import uuid

    st.session_state.setdefault(SESSION_ID, uuid.uuid4().hex)
    st.session_state.setdefault(FALLBACK, set())
    st.session_state.setdefault(HISTORY, [])
    st.session_state.setdefault(RUN_COUNTER, 0)


def fallback() -> set[str]:
    return st.session_state.setdefault(FALLBACK, set())

SENSITIVITY = "qs_sensitivity"  # DataFrame from engine.sensitivity for the current run
AUTOFALLBACK = "qs_autofallback"  # engine.AutoFallbackResult for the current run
LATENCY = "qs_latency"  # list[dict]: every build timed in this session (the Pareto view)
AUTHENTICATED = "qs_authenticated"  # the shared password (st.secrets["password"]) was given
JOB = "qs_job"  # app.jobs.Job: this session's queued or running engine job
