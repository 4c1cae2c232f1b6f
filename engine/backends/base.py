"""The one backend protocol. The rest of the engine never knows which backend ran: it reads `capabilities`."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnx

__all__ = ["Runner", "Backend", "Capabilities"]


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, declared once, so nothing outside backends/ asks which backend it has."""

    name: str  # what summary.json reports, e.g. "onnxruntime-cpu"
    device: str  # "cpu" or "cuda"
    runtime_gates: bool  # runs a Q/DQ graph whose Q/DQ is switched by runtime inputs exactly as emitted (one session for all probes)
    fp16_kernels: bool  # an FP16 build runs in FP16 (latency of it means something)
    observes_fused: bool  # observed tensors are read without changing fusion (TensorRT debug tensors)
    device_outputs: bool  # runners can leave outputs in device memory for a device reducer (`on_device=True`)
    branchless: bool = False  # control flow (If) costs more than computing both sides: switch Q/DQ with Where instead
    parallel_sessions: bool = False  # runners may be opened side by side in threads (their start-up leaves the GIL)
    # a graph computes each tensor bit for bit the same in every session (kernels chosen by shape, never by timing), so
    # a tensor two builds compute the same way (compare/tensor_keys) has the same metrics in both
    repeatable: bool = False


class Runner(Protocol):
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Graph outputs (and observed tensors) for `feed`: numpy arrays, or values `resident` returned."""
        ...

    def resident(self, arrays: dict[str, np.ndarray], reuse: dict | None = None) -> dict:
        """Copies of `arrays` in the memory this runner computes in, to feed it again and again without a copy each run
        (a runner that leaves its outputs on a device); a host runner returns the arrays themselves. reuse: values an
        earlier call returned, overwritten in place where name, shape and type match (a probe's gates)."""
        ...

    def artifacts(self) -> dict:
        """What this runner built and the run folder should keep: {"files": {name: bytes}, "engine": {...}}, or {}."""
        ...


class Backend(Protocol):
    name: str
    capabilities: Capabilities

    def with_threads(self, threads: int) -> Backend:
        """The same backend with at most `threads` CPU threads per session (workers that share a machine)."""
        ...

    def runner(self, model: onnx.ModelProto, observe: Sequence[str] = (), *, on_device: bool = False,
               optimized: bool = False, fallback: frozenset[str] = frozenset()) -> AbstractContextManager[Runner]:
        """A started runner for `model`, holding no state beyond its own life. on_device: outputs stay in device memory
        (only where `capabilities.device_outputs`). optimized: the runtime's deployment optimizations (latency), not
        the as-written Q/DQ arithmetic (accuracy). fallback: the nodes the model keeps out of INT8, for backends that
        must be told at build time. `infer` returns its graph outputs plus those of the `observe` tensors
        the backend can see. How it observes them is the backend's business: ONNX Runtime marks them as
        outputs; TensorRT reads debug tensors so fusion is kept, and tensors fused away are simply absent
        (the caller reports them as not observable, never pairs anything else)."""
        ...
