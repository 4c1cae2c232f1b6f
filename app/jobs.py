"""A bounded worker queue shared by every browser session: heavy engine work (compare, rebuild) runs here, so
pages keep rendering while it runs, at most QUANTSCOPE_WORKERS jobs run at once (default: CPU cores), and a
waiting session sees its place in the queue. Worker threads never call Streamlit; the page polls the Job."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import streamlit as st

import engine

__all__ = ["Job", "JobQueue", "job_queue"]


@dataclass
class Job:
    id: int
    kind: str
    state: str = "queued"  # queued | running | done | failed
    fraction: float = 0.0
    message: str = "waiting for a free worker"
    result: object = None
    error: str | None = None
    applied: bool = False
    on_done: Callable[[object], None] | None = None  # runs in the session's script thread with the result
    submitted: float = field(default_factory=time.perf_counter)

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    def progress(self, ev: engine.ProgressEvent) -> None:
        self.fraction, self.message = ev.fraction, f"{ev.stage}: {ev.message}"


class JobQueue:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="quantscope-job")
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._queued: list[Job] = []

    def submit(self, kind: str, fn: Callable[[Callable[[engine.ProgressEvent], None]], object]) -> Job:
        job = Job(next(self._ids), kind)
        with self._lock:
            self._queued.append(job)

        def work() -> None:
            with self._lock:
                self._queued.remove(job)
            job.state, job.message = "running", "starting"
            try:
                job.result = fn(job.progress)
                job.state = "done"
            except engine.QuantScopeError as err:
                job.error, job.state = str(err), "failed"
            except Exception as err:  # noqa: BLE001 - one sentence, never a traceback
                job.error, job.state = engine.unexpected_error_sentence(err), "failed"

        self._pool.submit(work)
        return job

    def position(self, job: Job) -> int:
        """1 = next to start; 0 = running or finished."""
        with self._lock:
            return self._queued.index(job) + 1 if job in self._queued else 0


@st.cache_resource
def job_queue() -> JobQueue:
    return JobQueue(int(os.environ.get("QUANTSCOPE_WORKERS", os.cpu_count() or 2)))
