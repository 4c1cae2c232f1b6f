"""Opening several runners at once: side by side in threads where the backend's start-up leaves the GIL (a CUDA session
of ONNX Runtime spends most of its 0.3-0.4 s there), one after another otherwise."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import onnx

from engine.backends.base import Backend, Runner

__all__ = ["open_runners"]


def open_runners(stack: ExitStack, backend: Backend, specs: Sequence[tuple[onnx.ModelProto, Mapping]]) -> list[Runner]:
    """Runners for `specs` (a model and the keywords of backend.runner), in order, each closed by `stack`. Where one
    fails, the others are still closed by `stack` and the first error is raised."""
    managers = [backend.runner(model, **kw) for model, kw in specs]
    if len(managers) < 2 or not backend.capabilities.parallel_sessions:
        return [stack.enter_context(m) for m in managers]
    with ThreadPoolExecutor(len(managers), thread_name_prefix="quantscope-session") as pool:
        futures = [pool.submit(m.__enter__) for m in managers]
    runners, error = [], None
    for manager, future in zip(managers, futures):
        try:
            runners.append(future.result())
            stack.push(manager)  # entered: its __exit__ runs when the stack closes
        except BaseException as err:  # noqa: BLE001 - re-raised below, after every opened runner is on the stack
            error = error or err
    if error is not None:
        raise error
    return runners
