"""Runners opened side by side, each with its first run on a feed: each comes back in order with its outputs and is
closed with the stack, also when another failed to open or to run; a backend that does not declare parallel_sessions
opens them one after another on the calling thread."""

from __future__ import annotations

import threading
from contextlib import ExitStack, contextmanager

import pytest

from engine.backends.base import Capabilities
from engine.backends.open_runners import open_runners
from engine.errors import ModelError


class Recording:
    def __init__(self, parallel: bool, fail: str | None = None) -> None:
        self.capabilities = Capabilities("fake", "cpu", runtime_gates=False, fp16_kernels=False, observes_fused=False,
                                         device_outputs=False, parallel_sessions=parallel)
        self.fail, self.fail_run, self.opened, self.closed, self.threads = fail, None, [], [], set()
        self.barrier = threading.Barrier(3, timeout=10) if parallel and fail is None else None

    @contextmanager
    def runner(self, model, **kw):
        self.threads.add(threading.current_thread().name)
        if self.barrier is not None:
            self.barrier.wait()  # all three are opening at once, or this times out
        if model == self.fail:
            raise ModelError(f"{model} does not load")
        self.opened.append(model)
        try:
            yield Runs(model, self)
        finally:
            self.closed.append(model)


class Runs:
    def __init__(self, model: str, backend: Recording) -> None:
        self.model, self.backend = model, backend

    def infer(self, feed: dict) -> dict:
        if self.model == self.backend.fail_run:
            raise ModelError(f"{self.model} does not run")
        return {"out": f"{self.model}({feed['x']})"}


def test_side_by_side_in_order_and_closed_with_the_stack():
    backend = Recording(parallel=True)
    with ExitStack() as stack:
        got, outs = open_runners(stack, backend, [("a", {}), ("b", {"observe": ("t",)}), ("c", {})], feed={"x": 1})
        assert [r.model for r in got] == ["a", "b", "c"]
        assert outs == [{"out": "a(1)"}, {"out": "b(1)"}, {"out": "c(1)"}]
        assert backend.closed == []
    assert sorted(backend.closed) == ["a", "b", "c"]
    assert threading.current_thread().name not in backend.threads and len(backend.threads) == 3


def test_one_that_fails_raises_and_the_others_are_closed():
    backend = Recording(parallel=True, fail="b")
    with pytest.raises(ModelError, match="b does not load"), ExitStack() as stack:
        open_runners(stack, backend, [("a", {}), ("b", {}), ("c", {})])
    assert sorted(backend.opened) == ["a", "c"] and sorted(backend.closed) == ["a", "c"]


def test_one_whose_first_run_fails_raises_and_every_opened_one_is_closed():
    backend = Recording(parallel=True)
    backend.barrier = None
    backend.fail_run = "a"
    with pytest.raises(ModelError, match="a does not run"), ExitStack() as stack:
        open_runners(stack, backend, [("a", {}), ("b", {}), ("c", {})], feed={"x": 1})
    assert sorted(backend.closed) == ["a", "b", "c"]


def test_without_the_capability_one_after_another_here():
    backend = Recording(parallel=False)
    with ExitStack() as stack:
        got, outs = open_runners(stack, backend, [("a", {}), ("b", {})])
        assert [r.model for r in got] == ["a", "b"] and outs == [None, None]
    assert backend.opened == ["a", "b"] and backend.closed == ["b", "a"]
    assert backend.threads == {threading.current_thread().name}


def test_an_interrupt_while_others_still_open_closes_the_opened_ones():
    """Ctrl-C reaches the caller while it waits for the threads: each runner opened by then, and each opened after, is
    closed with the stack (they were pushed only after every thread had returned, so an interrupt left them open)."""
    import signal
    import time

    class Interrupting(Recording):
        @contextmanager
        def runner(self, model, **kw):
            if model == "c":
                time.sleep(0.2)  # every thread started: the caller waits for their results
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # and gets KeyboardInterrupt there
                time.sleep(0.5)
            with super().runner(model, **kw) as r:
                yield r

    backend = Interrupting(parallel=True)
    backend.barrier = None
    closed_by_the_stack: list[str] = []
    with pytest.raises(KeyboardInterrupt), ExitStack() as stack:
        stack.callback(lambda: closed_by_the_stack.extend(backend.closed))  # runs last, after what open_runners pushed
        open_runners(stack, backend, [("a", {}), ("b", {}), ("c", {})], feed={"x": 1})
        time.sleep(1)  # not reached where the interrupt arrives in open_runners
    assert sorted(backend.opened) == ["a", "b", "c"] and sorted(closed_by_the_stack) == ["a", "b", "c"]
