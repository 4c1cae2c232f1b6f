"""What the AppTest page tests share: a fresh app, clicking a button (and waiting for its queued job), and a compare
held in its first stage so a test can look at a running job and cancel it."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from app import state

APP = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


def fresh() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    return at


QUEUED = {"Run comparison", "Rebuild with fallback", "Run sensitivity", "Find fallback automatically", "Measure latency",
          "Run sweep", "Open on the Layers page"}  # these go through the shared job queue


def wait_for_job(at: AppTest, timeout: float = 180) -> None:
    import time

    deadline = time.time() + timeout
    while state.JOB in at.session_state and at.session_state[state.JOB].active:
        assert time.time() < deadline, "the job did not finish"
        time.sleep(0.2)
    at.run()  # the page applies the finished job's result


def click(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click().run()
    if label in QUEUED:
        wait_for_job(at)
    assert not at.exception, at.exception
    return at


class GatedCompare:
    """engine.compare (or engine.sweep), held in its first stage (reporting progress) until `release` is set: a job that
    is certainly running when the test looks at the page, and that a cancel stops."""

    def __init__(self, real):
        import threading

        self.real, self.release, self.started = real, threading.Event(), threading.Event()

    def __call__(self, *args, progress, **kwargs):
        import engine

        step = 0
        while not self.release.is_set():
            step += 1
            progress(engine.ProgressEvent(engine.Stage.CALIBRATE, step % 10, 10, f"calibration batch {step % 10}/10"))
            self.started.set()  # after its first progress event
            self.release.wait(0.02)
        return self.real(*args, progress=progress, **kwargs)
