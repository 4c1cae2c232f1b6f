"""The job queue every page's heavy work goes through: queue positions, the label of a job about to start, and
cancelling queued and running jobs (app/jobs.py, without a page)."""

from __future__ import annotations

import pytest


def _until(predicate, timeout: float = 10) -> None:
    import time

    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def test_queue_positions_are_reported():
    import threading

    from app.jobs import JobQueue

    q = JobQueue(workers=1)
    gate = threading.Event()
    first = q.submit("compare", lambda progress: gate.wait(10))
    _until(lambda: first.state == "running")
    second = q.submit("compare", lambda progress: "ok")
    third = q.submit("compare", lambda progress: "ok")
    assert (q.position(first), q.position(second), q.position(third)) == (0, 1, 2)
    gate.set()
    _until(lambda: not third.active)
    assert (first.state, second.state, third.state) == ("done", "done", "done") and third.result == "ok"

    def boom(progress):
        raise RuntimeError("boom")

    failing = q.submit("rebuild", boom)
    _until(lambda: not failing.active)
    assert failing.state == "failed" and failing.error.startswith("QuantScope failed unexpectedly (RuntimeError: boom)")


def test_a_job_bound_for_a_free_worker_reads_starting_not_queued():
    """Between submit and a worker thread picking it up, a job sits in the queue: the first poll showed
    "queued: position 1" with nothing else running."""
    from app.jobs import JobQueue

    class Later:  # an executor that starts nothing until told: the moment before a worker picks the job up
        def __init__(self):
            self.fns = []

        def submit(self, fn):
            self.fns.append(fn)

    q = JobQueue(workers=1)
    q._pool = Later()
    first, second = q.submit("compare", lambda progress: "a"), q.submit("compare", lambda progress: "b")
    assert (first.state, q.position(first), first.label()) == ("queued", 0, "starting")
    assert q.position(second) == 1  # one job ahead of it for the one worker
    q._pool.fns[0]()
    assert first.state == "done" and q.position(second) == 0  # the worker is free again: next to start


def test_a_queued_job_is_cancelled_before_it_starts_and_a_running_one_at_its_next_step():
    import threading

    import engine
    from app.jobs import JobQueue

    q = JobQueue(workers=1)
    gate, ran = threading.Event(), []

    def long(progress):
        while not gate.is_set():
            progress(engine.ProgressEvent(engine.Stage.COMPARE, 1, 10, "batch 1/10"))
            gate.wait(0.01)
        return "finished"

    first = q.submit("compare", long)
    _until(lambda: first.state == "running")
    second = q.submit("rebuild", lambda progress: ran.append(1))
    assert q.position(second) == 1
    q.cancel(second)
    assert second.state == "cancelled" and q.position(second) == 0  # left the queue at once
    q.cancel(first)
    _until(lambda: not first.active)
    assert first.state == "cancelled" and first.result is None and first.stage == engine.Stage.COMPARE
    done = q.submit("compare", lambda progress: "ok")  # the worker is free again, and never ran the cancelled job
    _until(lambda: not done.active)
    assert done.result == "ok" and ran == []


def test_a_cancel_before_a_running_jobs_first_event_still_names_its_stage():
    import engine
    from app.jobs import Job

    job = Job(1, "compare", state="running")
    job.cancel_requested = True  # clicked after the job started, before the engine reported anything
    with pytest.raises(engine.Cancelled):
        job.progress(engine.ProgressEvent(engine.Stage.PREPROCESS, 0, 1, "pre-processing the model"))
    assert job.stage == engine.Stage.PREPROCESS  # so the page says "during its preprocess stage", not "before it started"
