"""What the pages do, kept out of the page scripts: run the engine with a progress bar, keep history."""

from __future__ import annotations

import json
import time
from pathlib import Path

import streamlit as st

import engine
from app import state
from app.jobs import Job, job_queue
from app.workspace import remember_inputs, run_index

__all__ = ["sample_catalog", "sample_inputs", "run_comparison", "run_rebuild", "submit", "busy", "job_panel"]

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"


def sample_catalog() -> dict:
    return json.loads((SAMPLES / "catalog.json").read_text())


def sample_inputs(name: str) -> dict:
    entry = sample_catalog()["models"][name]
    return {"name": name, "model": str(SAMPLES / entry["file"]), "calib": str(SAMPLES / entry["calibration"]),
            "data": str(SAMPLES / entry["evaluation"]), "labels": str(SAMPLES / entry["labels"]), "images": None, "sample": True}


def run_comparison(inputs: dict, config: engine.QuantConfig, batch: int, provider: str) -> Job:
    """Queues a comparison; `job_panel` shows its progress and applies its result when it is done. The run is
    recorded in the run index (with a new folder in this workspace) when a worker starts it."""
    ws, index = st.session_state[state.WORKSPACE], run_index()
    remember_inputs(ws, inputs)

    def work(progress):
        return index.record(ws, "compare", inputs["name"], lambda out: engine.compare(
            inputs["model"], inputs["calib"], data=inputs.get("data"), labels=inputs.get("labels"), config=config,
            batch_size=batch, provider=provider, images=inputs.get("images"), model_name=inputs["name"], out_dir=out,
            progress=progress))

    def on_done(result: engine.ComparisonResult) -> None:
        st.session_state[state.RESULT], st.session_state[state.BEFORE] = result, None
        st.session_state[state.FALLBACK] = set(result.summary.fallback)

    return submit("compare", work, on_done)


def run_rebuild(fallback: set[str]) -> Job:
    current: engine.ComparisonResult = st.session_state[state.RESULT]
    before = engine.ComparisonResult(current.run_dir, current.layers.copy(), current.summary)
    nodes = sorted(fallback)
    ws, index = st.session_state[state.WORKSPACE], run_index()

    def work(progress):
        return before, index.record(ws, "rebuild", current.summary.model,
                                    lambda _folder: engine.rebuild(current.run_dir, fallback=nodes, progress=progress),
                                    current.run_dir)

    def on_done(pair) -> None:
        st.session_state[state.BEFORE], st.session_state[state.RESULT] = pair

    return submit("rebuild", work, on_done)


def submit(kind: str, work, on_done) -> Job:
    """Queues `work(progress)`; `on_done(result)` runs later in this session's script thread (see job_panel)."""
    job = job_queue().submit(kind, work)
    job.on_done = on_done
    st.session_state[state.JOB] = job
    return job


def busy() -> bool:
    """Whether this session has a job queued or running (one at a time per session)."""
    job: Job | None = st.session_state.get(state.JOB)
    return job is not None and job.active


def _apply(job: Job) -> None:
    """Runs in the script thread: the only place a job's result touches session state."""
    job.applied = True
    if job.state == "done" and job.on_done is not None:
        job.on_done(job.result)


def job_panel(kind: str) -> None:
    """Progress (or queue position) of this session's job of `kind`; the page keeps rendering meanwhile."""
    job: Job | None = st.session_state.get(state.JOB)
    if job is not None and job.kind == kind and not job.active and not job.applied:
        _apply(job)
    if job is not None and job.kind == kind and job.active:
        _poll(kind)
    elif job is not None and job.kind == kind and job.state == "failed":
        st.error(job.error)


@st.fragment(run_every=0.5)
def _poll(kind: str) -> None:
    job: Job | None = st.session_state.get(state.JOB)
    if job is None:
        return
    if not job.active:
        st.rerun()  # the whole page: it applies and shows the result
    place = job_queue().position(job)
    text = f"queued: position {place} (at most {job_queue().workers} jobs run at once)" if place else job.message
    st.progress(job.fraction, text=f"{text} ({time.perf_counter() - job.submitted:.0f} s)")
