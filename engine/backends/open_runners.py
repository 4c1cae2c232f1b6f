"""Opening several runners at once: side by side in threads where the backend's start-up leaves the GIL (a CUDA session
of ONNX Runtime spends most of its 0.3-0.4 s there), one after another otherwise. Each may also run once on a first
feed in its thread: a session's first run carries its warm-up (on the GPU, allocations and kernel choices)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack

import onnx

from engine.backends.base import Backend, Runner

__all__ = ["open_runners"]


def open_runners(stack: ExitStack, backend: Backend, specs: Sequence[tuple[onnx.ModelProto, Mapping]],
                 feed: Mapping | None = None) -> tuple[list[Runner], list[dict | None]]:
    """Runners for `specs` (a model and the keywords of backend.runner), in order, each closed by `stack`, and each one's
    outputs for `feed` (None where no feed is given). Where one fails, the opened ones are still closed by `stack` and
    the first error is raised."""
    managers = [backend.runner(model, **kw) for model, kw in specs]
    lock = threading.Lock()

    def open_one(manager: AbstractContextManager) -> tuple[Runner | None, dict | None, BaseException | None]:
        try:
            runner = manager.__enter__()
        except BaseException as err:  # noqa: BLE001 - raised by the caller's thread
            return None, None, err
        with lock:  # on the stack as soon as it is open: an interrupt of the caller while others still open closes it
            stack.push(manager)
        try:
            return runner, (None if feed is None else runner.infer(dict(feed))), None
        except BaseException as err:  # noqa: BLE001 - opened: closed by the stack, then raised
            return runner, None, err

    if len(managers) < 2 or not backend.capabilities.parallel_sessions:
        results = []
        for manager in managers:
            results.append(open_one(manager))
            if results[-1][2] is not None:
                raise results[-1][2]
    else:
        with ThreadPoolExecutor(len(managers), thread_name_prefix="quantscope-session") as pool:
            results = list(pool.map(open_one, managers))
        error = next((err for _, _, err in results if err is not None), None)
        if error is not None:
            raise error
    return [r for r, _, _ in results], [out for _, out, _ in results]
