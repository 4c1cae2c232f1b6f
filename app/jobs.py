"""A bounded worker queue shared by every browser session: heavy engine work (compare, rebuild, sensitivity, fallback
search, latency) runs here, so pages keep rendering while it runs, at most QUANTSCOPE_WORKERS jobs run at once (default:
CPU cores), and a waiting session sees its place in the queue. Worker threads never call Streamlit; the page polls the Job.

Every job can be cancelled: a queued one leaves the queue at once; a running one stops at the engine's next progress
event (its callback raises engine.Cancelled), and the engine leaves earlier results as they were."""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import streamlit as st

import engine

__all__ = ["Job", "JobQueue", "job_queue", "progress_label"]

UPPER_BOUND_STAGES = {engine.Stage.AUTOFALLBACK}  # their totals are the most probes a search can take
UNEVEN_STAGES = {engine.Stage.PREPARE_PROBES}  # steps of very different lengths: no time left from their count


LATE_GRACE_S, LATE_GRACE_SHARE = 2.0, 0.5  # past its estimate by less than this (or half a step's share), a stage is not late
ENGINE_ESTIMATE = re.compile(r",? ?(at most )?about (\d+) s left")  # an estimate the engine's message carries


def progress_label(ev: engine.ProgressEvent, stage_seconds: float, since_event: float = 0.0) -> str:
    """'stage: what it does (done/total), about N s left', without repeating what the engine's message already says.
    stage_seconds: the stage's time at the event; since_event: the time since, so the time left counts down between
    events (a sweep's 80 s configuration showed 'about 81 s left' for all of them), whether the engine or the app
    estimated it. A stage whose last step is done says no time left; one past its estimate by a little is almost done
    (one step to go) or a little behind (more)."""
    message = re.sub(r"^(\w+), \1\b", r"\1", ev.message)  # "greedy, greedy round 1" -> "greedy round 1"
    bound = ev.stage in UPPER_BOUND_STAGES
    estimate = None  # seconds left at the event
    if found := ENGINE_ESTIMATE.search(message):
        estimate, bound = float(found.group(2)), bound or bool(found.group(1))
        message = (message[:found.start()] + message[found.end():]).strip()
    elif ev.total > ev.done > 0 and stage_seconds > 1 and "time left is known" not in message and ev.stage not in UNEVEN_STAGES:
        # (the engine says when its first step is not yet a measure: a probe stage's first probe carries the warm-up)
        estimate = stage_seconds / ev.done * (ev.total - ev.done)
    text = f"{ev.stage}: {message}" if message else ev.stage
    if ev.total > 0 and not re.search(r"\d+/\d+", message):  # the engine's message may count already
        text += f" ({ev.done} of {'at most ' if bound else ''}{ev.total})"
    if ev.total > 0 and ev.done >= ev.total:
        return text
    if estimate is not None:
        if estimate >= 1:
            left = estimate - since_event
            if left >= 1:
                text += f", {'at most ' if bound else ''}about {left:.0f} s left"
            elif left > 0:  # not yet past it: 'a little behind' showed a second after 'about 2 s left' (YOLOv8n trial)
                text += f", {'at most ' if bound else ''}about 1 s left"
            else:  # an estimate is only that: 'about 2 s left' then 'taking longer' a second on read as a fault; the grace
                # is half a step's share of it, so a stage with many steps to go is soon said to be late
                steps = max(1, ev.total - ev.done) if ev.total > 0 else 1
                if -left > max(LATE_GRACE_S, LATE_GRACE_SHARE * estimate / steps):
                    text += ", taking longer than estimated"
                else:
                    text += ", almost done" if steps == 1 else ", a little behind the estimate"
    elif ev.total > 1 and ev.done == 0 and not message.startswith("starting"):  # "starting sessions (0/3 batches)" says
        # what it waits for, in its own units
        text += ", time left known after the first one"
    return text


@dataclass
class Job:
    id: int
    kind: str
    state: str = "queued"  # queued | running | done | failed | cancelled
    fraction: float = 0.0
    message: str = "starting"  # until its first event; a job waiting for a worker reads "queued: position N"
    stage: str = ""  # the engine stage it was in last (what a cancel interrupted)
    result: object = None
    error: str | None = None
    error_option: str | None = None  # the setting an engine error concerns (QuantScopeError.option)
    applied: bool = False
    on_done: Callable[[object], None] | None = None  # runs in the session's script thread with the result
    submitted: float = field(default_factory=time.perf_counter)
    cancel_requested: bool = False
    _stage_started: float = field(default_factory=time.perf_counter)
    # the last progress event, when it came and the stage's time then: one tuple, replaced whole by the worker, so the
    # page's poll never reads an event with another event's times
    _last: tuple[engine.ProgressEvent, float, float] | None = None

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    def progress(self, ev: engine.ProgressEvent) -> None:
        """The engine's progress callback; where a cancel takes effect. The stage is noted first, so a cancel that
        lands before a running job's first event still says which stage it stopped (not "before it started")."""
        now = time.perf_counter()
        if self._last is not None and ev == self._last[0]:  # the engine's "still here" (progress.Repeating): nothing new
            if self.cancel_requested:
                raise engine.Cancelled()
            return
        if ev.stage != self.stage:
            self.stage, self._stage_started = ev.stage, now
        if self.cancel_requested:
            raise engine.Cancelled()
        self.fraction, self._last = ev.fraction, (ev, now, now - self._stage_started)
        self.message = progress_label(ev, now - self._stage_started)

    def label(self) -> str:
        """The last event's label as of now: its time left counted down since the event."""
        last = self._last
        if last is None:
            return self.message
        ev, at, stage_seconds = last
        return progress_label(ev, stage_seconds, time.perf_counter() - at)


class JobQueue:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="quantscope-job")
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._queued: list[Job] = []
        self._running = 0

    def submit(self, kind: str, fn: Callable[[Callable[[engine.ProgressEvent], None]], object]) -> Job:
        job = Job(next(self._ids), kind)
        with self._lock:
            self._queued.append(job)

        def work() -> None:
            with self._lock:
                if job.state == "cancelled":  # cancelled while it waited: it never starts
                    return
                self._queued.remove(job)
                self._running += 1
                job.state, job.message = "running", "starting"
            try:
                if job.cancel_requested:
                    raise engine.Cancelled()
                job.result = fn(job.progress)
                job.state = "done"
            except engine.Cancelled:
                job.state = "cancelled"
            except engine.QuantScopeError as err:
                job.error, job.error_option, job.state = str(err), err.option, "failed"
            except Exception as err:  # noqa: BLE001 - one sentence, never a traceback
                job.error, job.state = engine.unexpected_error_sentence(err), "failed"
            finally:
                with self._lock:
                    self._running -= 1

        self._pool.submit(work)
        return job

    def cancel(self, job: Job) -> None:
        """A queued job leaves the queue now; a running one stops at its next progress event."""
        with self._lock:
            job.cancel_requested = True
            if job in self._queued:
                self._queued.remove(job)
                job.state, job.message = "cancelled", "cancelled before it started"

    def position(self, job: Job) -> int:
        """Its place among the jobs waiting for a worker (1 = next to start); 0 = running, finished, or about to start
        on a free worker (a job is queued until a worker thread picks it up, which the first poll used to show as
        "queued: position 1" with nothing else running)."""
        with self._lock:
            if job not in self._queued:
                return 0
            return max(0, self._queued.index(job) + 1 - max(0, self.workers - self._running))


@st.cache_resource(show_spinner=False)
def job_queue(workers: int) -> JobQueue:
    """One queue per server process (QUANTSCOPE_WORKERS, read once per session, is the same for every session)."""
    return JobQueue(workers)
