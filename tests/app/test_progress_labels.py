"""The job panel's progress text: the stage, its count, and the time left counted down between the engine's events."""

from __future__ import annotations

import pytest

import engine
from app import jobs
from app.jobs import progress_label

S = engine.Stage

# (stage, done, total, the engine's message, stage seconds at the event, seconds since it) -> the label
CASES = [
    # the engine's own count and estimate are kept; otherwise the app counts and estimates
    ((S.COMPARE, 3, 20, "batch 3/20, about 9 s left", 4.0, 0.0), "compare: batch 3/20, about 9 s left"),
    ((S.AUTOFALLBACK, 12, 297, "greedy prune: 3 node(s) in fallback", 6.0, 0.0),
     "fallback search: greedy prune: 3 node(s) in fallback (12 of at most 297), at most about 142 s left"),
    ((S.LATENCY, 1, 4, "timing int8 (2/4)", 3.0, 0.0), "latency: timing int8 (2/4), about 9 s left"),
    ((S.PREPROCESS, 0, 1, "pre-processing the model", 0.5, 0.0), "preprocess: pre-processing the model (0 of 1)"),
    ((S.AUTOFALLBACK, 40, 300, "greedy, greedy round 1: probe 9/33 of this step", 20.0, 0.0),
     "fallback search: greedy round 1: probe 9/33 of this step, at most about 130 s left"),
    # between events the time left counts down, whoever estimated it, and says when the estimate has run out
    ((S.COMPARE, 3, 20, "batch 3/20, about 9 s left", 4.0, 5.2), "compare: batch 3/20, about 4 s left"),
    ((S.LATENCY, 1, 4, "timing int8 (2/4)", 3.0, 4.0), "latency: timing int8 (2/4), about 5 s left"),
    ((S.LATENCY, 1, 4, "timing int8 (2/4)", 3.0, 30.0), "latency: timing int8 (2/4), taking longer than estimated"),
    # under a second left, not yet past: still 'about 1 s left' ('a little behind' showed before the time was up)
    ((S.RANK, 148, 152, "every unit (148/152 probes), about 2 s left", 9.0, 1.4), "rank: every unit (148/152 probes), about 1 s left"),
    # the first of several builds: its count is of the same steps, so the clause is said
    ((S.LATENCY, 0, 3, "timing fp32 (1/3)", 0.0, 5.0), "latency: timing fp32 (1/3), time left known after the first one"),
    ((S.AUTOFALLBACK, 12, 297, "greedy prune, at most about 142 s left", 6.0, 42.0),
     "fallback search: greedy prune (12 of at most 297), at most about 100 s left"),
    # before the first item of several is done there is nothing to estimate from, and the label says so
    ((S.SWEEP, 0, 2, "configuration minmax", 0.0, 30.0), "sweep: configuration minmax (0 of 2), time left known after the first one"),
    # it counts already: no second clause in other units
    ((S.COMPARE, 0, 64, "starting sessions (0/10 batches)", 0.0, 3.0), "compare: starting sessions (0/10 batches)"),
    # an estimate run out by a little is almost done; 'taking longer' only once it is clearly late (PP-OCRv4's trial
    # read 'about 2 s left', then 'taking longer than estimated' a second on)
    ((S.SENSITIVITY, 121, 122, "probe 121/122, about 2 s left", 9.0, 2.5), "sensitivity: probe 121/122, almost done"),
    ((S.SENSITIVITY, 121, 122, "probe 121/122, about 2 s left", 9.0, 3.9), "sensitivity: probe 121/122, almost done"),
    ((S.SENSITIVITY, 121, 122, "probe 121/122, about 2 s left", 9.0, 4.1), "sensitivity: probe 121/122, taking longer than estimated"),
    # with steps to go the grace is half a step's share (here 2 s), and it is not called almost done
    ((S.COMPARE, 3, 20, "batch 3/20, about 10 s left", 4.0, 11.9), "compare: batch 3/20, a little behind the estimate"),
    ((S.COMPARE, 3, 20, "batch 3/20, about 10 s left", 4.0, 12.1), "compare: batch 3/20, taking longer than estimated"),
    # the last step: half its 80 s estimate
    ((S.SWEEP, 1, 2, "configuration 2/2, about 80 s left", 80.0, 119.0), "sweep: configuration 2/2, almost done"),
    ((S.SWEEP, 1, 2, "configuration 2/2, about 80 s left", 80.0, 121.0), "sweep: configuration 2/2, taking longer than estimated"),
    # the last step done: no time left, and never 'taking longer' for the engine's final 'about 0 s left'
    ((S.COMPARE, 10, 10, "batch 10/10, about 0 s left", 9.0, 3.0), "compare: batch 10/10"),
    ((S.SENSITIVITY, 103, 103, "probe 103/103, about 0 s left", 9.0, 0.0), "sensitivity: probe 103/103"),
    # the first probe carries the session's warm-up: the engine says the time left comes later, and the app does not
    # estimate one from it either (a layout detector's first probe gave 'about 9803 s left' for about 20 minutes)
    ((S.SENSITIVITY, 1, 205, "probe 1/205; the time left is known after the next", 49.0, 3.0),
     "sensitivity: probe 1/205; the time left is known after the next"),
    # preparing probes: three steps of very different lengths, so no time left from their count (review: 'batch 30/32,
    # about 90 s left', rising)
    ((S.PREPARE_PROBES, 1, 3, "the FP32 model's outputs, which the batch cache did not keep: batch 30/32", 20.0, 1.0),
     "preparing probes: the FP32 model's outputs, which the batch cache did not keep: batch 30/32"),
    ((S.PREPARE_PROBES, 2, 3, "opening the probe session and timing its first probe", 25.0, 1.0),
     "preparing probes: opening the probe session and timing its first probe (2 of 3)"),
]


@pytest.mark.parametrize(("event", "expected"), CASES)
def test_progress_labels_name_the_stage_with_totals_and_time_left(event, expected):
    stage, done, total, message, stage_seconds, since = event
    assert progress_label(engine.ProgressEvent(stage, done, total, message), stage_seconds, since) == expected


def test_a_jobs_label_counts_down_between_events(monkeypatch):
    job = jobs.Job(2, "compare", state="running")
    clock = iter([100.0, 105.4])  # the event, then the page's poll five seconds on with no event
    monkeypatch.setattr(jobs.time, "perf_counter", lambda: next(clock))
    job._stage_started = 96.0
    job.progress(engine.ProgressEvent(S.COMPARE, 3, 20, "batch 3/20, about 9 s left"))
    assert job.label() == "compare: batch 3/20, about 4 s left"


def test_an_event_said_again_keeps_the_countdown_and_is_where_a_cancel_lands(monkeypatch):
    """The engine repeats its last event inside a long probe (progress.Repeating): nothing new to show, so the time
    left keeps counting down from the first time it was said; a cancel requested meanwhile stops the job there."""
    job = jobs.Job(3, "sensitivity", state="running")
    clock = iter([100.0, 104.0, 105.0, 106.0])
    monkeypatch.setattr(jobs.time, "perf_counter", lambda: next(clock))
    job._stage_started = 96.0
    ev = engine.ProgressEvent(S.SENSITIVITY, 5, 21, "probe 5/21, about 20 s left")
    job.progress(ev)
    job.progress(ev)  # 4 s on, said again
    assert job.label() == "sensitivity: probe 5/21, about 15 s left"  # counted from the first, not reset to 20
    job.cancel_requested = True
    with pytest.raises(engine.Cancelled):
        job.progress(ev)
