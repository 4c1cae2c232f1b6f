"""Where many independent pieces of work run: here, one after another (SerialExecutor), or on Ray workers
(engine.scale.ray_executor, only imported when asked for: Ray is an optional extra, `pip install .[scale]`).

Two kinds of work: probe pools (workers that each hold a session of one gated candidate and answer ProbeRequests)
and tasks (a function applied to items, with large shared inputs sent once)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from engine.diagnose.probes import OnResult, OutputProbe, ProbePool, serial_pool
from engine.errors import ConfigError

__all__ = ["Executor", "SerialExecutor", "open_executor", "OnResult"]



class Executor(Protocol):
    name: str  # for summaries: "serial" or "ray (N workers)"
    concurrent: bool  # tasks run at the same time (so a task must not time anything)

    def probe_pool(self, probe: OutputProbe) -> AbstractContextManager[ProbePool]: ...

    def map_tasks(self, fn: Callable, items: Sequence, shared: dict, on_result: OnResult | None = None,
                  device: str = "cpu") -> list:
        """fn(item, **shared) for every item, results in item order; device: where each task's sessions run."""
        ...

    def close(self) -> None: ...


class SerialExecutor:
    name = "serial"
    concurrent = False

    def probe_pool(self, probe: OutputProbe) -> AbstractContextManager[ProbePool]:
        return serial_pool(probe)

    def map_tasks(self, fn: Callable, items: Sequence, shared: dict, on_result: OnResult | None = None, device: str = "cpu") -> list:
        out = []
        for item in items:
            out.append(fn(item, **shared))
            if on_result is not None:
                on_result(len(out), len(items))
        return out

    def close(self) -> None:
        return None


def open_executor(ray: str | None) -> Executor:
    """None: serial. "auto": a local Ray runtime on this machine's cores (and GPUs). Anything else: the address of a Ray
    cluster to join (e.g. ray://head:10001 or head:6379)."""
    if not ray:
        return SerialExecutor()
    try:
        from engine.scale.ray_executor import RayExecutor
    except ImportError:
        raise ConfigError("Ray is not installed here; install the optional extra with pip install .[scale], or leave out --ray "
                          "to run one probe after another.", option="ray") from None
    return RayExecutor(None if ray == "auto" else ray)
