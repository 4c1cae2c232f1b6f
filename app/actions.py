"""What the pages do, kept out of the page scripts: run the engine with a progress bar, keep history."""

from __future__ import annotations

import json
import time
from pathlib import Path

import streamlit as st

import engine
from app import state
from app.jobs import Job, job_queue
from app.workspace import new_run_dir

__all__ = ["sample_catalog", "sample_inputs", "run_comparison", "run_rebuild", "job_panel", "history_entry", "progress_bar", "error_sentence"]

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"


def error_sentence(err: Exception) -> str:
    return str(err) if isinstance(err, engine.QuantScopeError) else engine.unexpected_error_sentence(err)


def sample_catalog() -> dict:
    return json.loads((SAMPLES / "catalog.json").read_text())


def sample_inputs(name: str) -> dict:
    entry = sample_catalog()["models"][name]
    return {"name": name, "model": str(SAMPLES / entry["file"]), "calib": str(SAMPLES / entry["calibration"]),
            "data": str(SAMPLES / entry["evaluation"]), "labels": str(SAMPLES / entry["labels"]), "images": None, "sample": True}


def progress_bar():
    """A progress callback drawing one bar with the stage, counts and the engine's estimate."""
    bar = st.progress(0.0, text="starting")
    started = time.perf_counter()

    def callback(ev: engine.ProgressEvent) -> None:
        bar.progress(ev.fraction, text=f"{ev.stage}: {ev.message} ({time.perf_counter() - started:.0f} s)")

    return bar, callback


def history_entry(result: engine.ComparisonResult, kind: str) -> dict:
    s = result.summary
    out = result.final_output()
    return {
        "run": len(st.session_state[state.HISTORY]) + 1, "kind": kind, "model": s.model, "run_dir": str(result.run_dir),
        "calibration": s.config["calibration"], "op_types": ", ".join(s.config["op_types"]), "batch": s.batch_size,
        "backend": s.backend, "fallback": ", ".join(s.fallback) or "-", "fallback_nodes": len(s.fallback),
        "cosine": out.cosine, "snr_db": out.snr_db, "top1_agreement": s.task.get("top1_agreement"),
        "accuracy": s.task.get("candidate_accuracy"), "top_culprit": s.culprits[0].node if s.culprits else "-",
        "layers_csv": str(result.run_dir / "layers.csv"),
    }


def run_comparison(inputs: dict, config: engine.QuantConfig, batch: int, provider: str) -> Job:
    """Queues a comparison; `job_panel` shows its progress and applies its result when it is done."""
    st.session_state[state.RUN_COUNTER] += 1
    out = new_run_dir(st.session_state[state.SESSION_ID], st.session_state[state.RUN_COUNTER])

    def work(progress):
        return engine.compare(inputs["model"], inputs["calib"], data=inputs.get("data"), labels=inputs.get("labels"),
                              config=config, batch_size=batch, provider=provider, images=inputs.get("images"),
                              model_name=inputs["name"], out_dir=out, progress=progress)

    job = job_queue().submit("compare", work)
    st.session_state[state.JOB] = job
    return job


def run_rebuild(fallback: set[str]) -> Job:
    current: engine.ComparisonResult = st.session_state[state.RESULT]
    before = engine.ComparisonResult(current.run_dir, current.layers.copy(), current.summary)
    nodes = sorted(fallback)
    job = job_queue().submit("rebuild", lambda progress: (before, engine.rebuild(current.run_dir, fallback=nodes, progress=progress)))
    st.session_state[state.JOB] = job
    return job


def _apply(job: Job) -> None:
    """Runs in the script thread: the only place a job's result touches session state."""
    job.applied = True
    if job.state == "failed":
        st.session_state[state.LAST_ERROR] = job.error
        return
    st.session_state[state.LAST_ERROR] = None
    if job.kind == "compare":
        result = job.result
        st.session_state[state.RESULT] = result
        st.session_state[state.BEFORE] = None
        st.session_state[state.FALLBACK] = set(result.summary.fallback)
        st.session_state[state.HISTORY].append(history_entry(result, "compare"))
    else:
        before, result = job.result
        st.session_state[state.BEFORE] = before
        st.session_state[state.RESULT] = result
        st.session_state[state.HISTORY].append(history_entry(result, "rebuild"))


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
