"""What the pages do, kept out of the page scripts: queue engine work, show its progress with a Cancel button, apply
its result, and put an engine error's sentence next to the control it concerns."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import streamlit as st

import engine
from app import state
from app.command import DEFAULT_SCREEN_SAMPLES
from app.inputs import Inputs
from app.jobs import Job, job_queue
from app.sweeps import SweepPlan, Swept, compare_settings
from app.workspace import SWEEPS, remember_inputs, remember_sweep, run_index, session_dir

__all__ = ["run_comparison", "run_rebuild", "run_sweep", "open_configuration", "submit", "busy", "job_panel", "show_error",
           "current_job", "apply_finished"]

WHAT = {"compare": "comparison", "rebuild": "rebuild", "sensitivity": "sensitivity run", "autofallback": "fallback search",
        "latency": "latency measurement", "sweep": "sweep"}


def run_comparison(inputs: Inputs, config: engine.QuantConfig, batch: int, provider: str, screen_samples: int) -> Job:
    """Queues a comparison; `job_panel` shows its progress and applies its result when it is done. The run is
    recorded in the run index (with a new folder in this workspace) when a worker starts it."""
    ws, index, settings = st.session_state[state.WORKSPACE], run_index(), state.settings()
    remember_inputs(ws, inputs)

    def work(progress):
        return index.record(ws, "compare", inputs.name, lambda out: engine.compare(
            inputs.model, inputs.calib, data=inputs.data, labels=inputs.labels, config=config, batch_size=batch,
            provider=provider, images=inputs.images, model_name=inputs.name, out_dir=out, screen_samples=screen_samples,
            progress=progress, settings=settings))

    def on_done(result: engine.ComparisonResult) -> None:
        st.session_state.setdefault(state.RUN_INPUTS, {})[str(result.run_dir)] = inputs
        st.session_state[state.BEFORE] = None
        state.adopt(result)

    return submit("compare", work, on_done)


def run_rebuild(fallback: set[str], ranges: tuple[engine.RangeOverride, ...], precision: engine.FallbackPrecision) -> Job:
    """Re-emits the current run with this fallback set, these custom ranges and this precision (the whole new state,
    so nothing is inherited by accident)."""
    current: engine.ComparisonResult = st.session_state[state.RESULT]
    before = engine.ComparisonResult(current.run_dir, current.layers.copy(), current.summary, current.files_dir)
    nodes = engine.in_name_order(fallback)
    ws, index, settings = st.session_state[state.WORKSPACE], run_index(), state.settings()

    def work(progress):
        return before, index.record(ws, "rebuild", current.summary.model, lambda _folder: engine.rebuild(
            current.run_dir, fallback=nodes, ranges=ranges, fallback_precision=precision, progress=progress,
            settings=settings), current.run_dir)

    def on_done(pair) -> None:
        st.session_state[state.BEFORE] = pair[0]
        state.adopt(pair[1])

    return submit("rebuild", work, on_done)


def run_sweep(inputs: Inputs, plan: SweepPlan, batch: int, provider: str) -> Job:
    """Queues a sweep into a new folder of this workspace, recorded in the run index (so History lists it and a reopened
    workspace shows it again). The sweep shown stays until this one finishes; a failed or cancelled sweep leaves no
    folder behind."""
    ws, index, settings = st.session_state[state.WORKSPACE], run_index(), state.settings()
    parent = session_dir(ws) / SWEEPS

    content: list = []

    def work(progress):
        parent.mkdir(exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="sweep_", dir=parent))

        def sweep(out: Path) -> engine.SweepResult:
            result = engine.sweep([inputs.model], inputs.calib, out_dir=out, data=inputs.data, labels=inputs.labels,
                                  methods=plan.methods, percentiles=plan.percentiles or (99.999,), op_type_sets=plan.op_type_sets,
                                  precisions=plan.precisions, batch_size=batch, provider=provider, images=inputs.images,
                                  select=plan.select, progress=progress, settings=settings, model_names=[inputs.name])
            content[:] = inputs.content_key()  # hashed here, in the worker, once
            remember_sweep(out, inputs, batch, provider, tuple(content))
            return result

        try:
            return index.record_sweep(ws, inputs.name, sweep, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def on_done(result: engine.SweepResult) -> None:
        st.session_state[state.SWEEP] = Swept(result, inputs, batch, provider, inputs.name, tuple(content))

    return submit("sweep", work, on_done)


def open_configuration(swept: Swept, row: engine.SweepRow) -> Job:
    """A normal comparison (the Compare page's job) of one swept configuration, on the inputs, batch size and provider the
    sweep ran with. The Compare page's controls are set to it first (so its equivalent command is this one), and when it
    finishes the Layers page shows it."""
    assert swept.inputs is not None, "the Sweep page offers no Open without the sweep's inputs"
    config = row.config.quant()
    st.session_state[state.COMPARE_SETTINGS] = compare_settings(config, swept.batch, swept.provider)
    job = run_comparison(swept.inputs, config, swept.batch, swept.provider,
                         int(st.session_state.get("cmp_screen", DEFAULT_SCREEN_SAMPLES)))
    compared = job.on_done  # runs later in this script thread (apply_finished), so wrapping it now is safe

    def on_done(result: engine.ComparisonResult) -> None:
        compared(result)
        st.session_state[state.OPEN_LAYERS] = True

    job.on_done = on_done
    return job


def submit(kind: str, work, on_done) -> Job:
    """Queues `work(progress)`; `on_done(result)` runs later in this session's script thread (see job_panel)."""
    job = job_queue(state.settings().workers).submit(kind, work)
    job.on_done = on_done
    st.session_state[state.JOB] = job
    return job


def current_job() -> Job | None:
    return st.session_state.get(state.JOB)


def busy() -> bool:
    """Whether this session has a job queued or running (one at a time per session)."""
    job = current_job()
    return job is not None and job.active


def apply_finished() -> None:
    """Runs in the script thread at the start of every page (main.py), before any widget is drawn: the only place a
    job's result touches session state, so a page never draws controls from the state before its job finished."""
    job = current_job()
    if job is not None and not job.active and not job.applied:
        job.applied = True
        if job.state == "done" and job.on_done is not None:
            job.on_done(job.result)


def show_error(sentence: str, option: str | None, slots: dict | None = None) -> None:
    """An error's sentence beside the control of the setting it concerns, else where the page is."""
    (slots[option] if slots and option in slots else st).error(sentence)


def _kept(kind: str) -> str:
    """What a cancelled job of `kind` left in place, in words."""
    result: engine.ComparisonResult | None = st.session_state.get(state.RESULT)
    if kind == "compare":
        if result is None:
            return "no comparison had finished before it, so there is no result yet"
        return f"the current result ({result.summary.model}, {result.run_dir.name}) and every earlier run are unchanged"
    if kind == "rebuild" and result is not None:
        return (f"{result.run_dir.name} keeps the build it had (fallback: {', '.join(result.summary.fallback) or 'none'}; "
                f"ranges: {', '.join(map(str, result.summary.config.ranges)) or 'none'})")
    if kind in EARLIER:  # "the sensitivity shown before it (if any) is kept" left the user to find out which
        key, what, verb = EARLIER[kind]
        kept = f"the earlier {what} {verb} kept" if st.session_state.get(key) else f"there was no earlier {what}"
        return f"nothing was ticked or rebuilt, and {kept}" if kind == "autofallback" else kept
    return "results from before it are kept"


# a job kind -> the Session State key of its last result, that result in words, and its verb
EARLIER = {"sensitivity": (state.SENSITIVITY, "sensitivity result", "is"), "autofallback": (state.AUTOFALLBACK, "search result", "is"),
           "sweep": (state.SWEEP, "sweep", "is"), "latency": (state.LATENCY, "timings", "are")}


def cancelled_sentence(job: Job) -> str:
    what = WHAT.get(job.kind, job.kind)
    if not job.stage:
        return f"Cancelled the {what} before it started: {_kept(job.kind)}."
    during = "" if job.stage == what else f" during its {job.stage} stage"
    return f"Cancelled the {what}{during}: {_kept(job.kind)}."


def job_panel(kind: str, slots: dict | None = None) -> None:
    """Progress (or queue position) of this session's job of `kind`, with a Cancel button; the page keeps rendering
    meanwhile. A failed job's sentence goes next to the control in `slots` (option name -> st.empty()) it concerns."""
    job = current_job()
    if job is None or job.kind != kind:
        return
    if job.active:
        _poll(kind)
    elif job.state == "failed":
        show_error(job.error, job.error_option, slots)
    elif job.state == "cancelled":
        st.info(cancelled_sentence(job))


def _cancel(job: Job) -> None:
    job_queue(state.settings().workers).cancel(job)


@st.fragment(run_every=0.5)
def _poll(kind: str) -> None:
    job = current_job()
    if job is None:
        return
    if not job.active:
        st.rerun()  # the whole page: main.py applies the result before the page draws anything
    queue = job_queue(state.settings().workers)
    place = queue.position(job)
    if place:
        text = f"queued: position {place} (at most {queue.workers} jobs run at once)"
    elif job.cancel_requested:
        text = f"cancelling: stops at the next step of {job.stage or 'the job'}"
    else:
        text = job.label()
    c1, c2 = st.columns([6, 1], vertical_alignment="bottom")
    c1.progress(job.fraction, text=f"{text} ({time.perf_counter() - job.submitted:.0f} s)")
    c2.button("Cancel", key=f"cancel_job_{job.id}", on_click=_cancel, args=(job,), disabled=job.cancel_requested,
              help=f"Stops this {WHAT.get(kind, kind)}; what finished before it stays as it is.")
