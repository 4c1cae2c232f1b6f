"""A fake backend that speaks the whole backend protocol, for tests of the layerwise loop."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np

from engine.backends.base import Capabilities


class FakeRunner:
    def __init__(self, fn: Callable[[dict, bool], dict], observing: bool) -> None:
        self.fn, self.observing = fn, observing

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.fn(feed, self.observing)

    def resident(self, arrays: dict[str, np.ndarray], reuse: dict | None = None) -> dict[str, np.ndarray]:
        return arrays

    def artifacts(self) -> dict:
        return {}


class FakeBackend:
    """`fn(feed, observing, model)` computes a runner's outputs; observing is True for marked runs."""

    def __init__(self, fn: Callable[[dict, bool, object], dict], name: str = "fake") -> None:
        self.fn, self.name = fn, name
        self.capabilities = Capabilities(name, "cpu", runtime_gates=False, fp16_kernels=False, observes_fused=False,
                                         device_outputs=False)

    def with_threads(self, threads):
        return self

    def runner(self, model, observe=(), *, on_device=False, optimized=False, fallback=frozenset()):
        return contextlib.nullcontext(FakeRunner(lambda feed, obs: self.fn(feed, obs, model), bool(observe)))
