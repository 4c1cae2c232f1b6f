"""Runners opened side by side: each comes back in order and is closed with the stack, also when another failed to
open; a backend that does not declare parallel_sessions opens them one after another on the calling thread."""

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
        self.fail, self.opened, self.closed, self.threads = fail, [], [], set()
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
            yield f"runner of {model}"
        finally:
            self.closed.append(model)


def test_side_by_side_in_order_and_closed_with_the_stack():
    backend = Recording(parallel=True)
    with ExitStack() as stack:
        got = open_runners(stack, backend, [("a", {}), ("b", {"observe": ("t",)}), ("c", {})])
        assert got == ["runner of a", "runner of b", "runner of c"]
        assert backend.closed == []
    assert sorted(backend.closed) == ["a", "b", "c"]
    assert threading.current_thread().name not in backend.threads and len(backend.threads) == 3


def test_one_that_fails_raises_and_the_others_are_closed():
    backend = Recording(parallel=True, fail="b")
    with pytest.raises(ModelError, match="b does not load"), ExitStack() as stack:
        open_runners(stack, backend, [("a", {}), ("b", {}), ("c", {})])
    assert sorted(backend.opened) == ["a", "c"] and sorted(backend.closed) == ["a", "c"]


def test_without_the_capability_one_after_another_here():
    backend = Recording(parallel=False)
    with ExitStack() as stack:
        assert open_runners(stack, backend, [("a", {}), ("b", {})]) == ["runner of a", "runner of b"]
    assert backend.opened == ["a", "b"] and backend.closed == ["b", "a"]
    assert backend.threads == {threading.current_thread().name}
