"""The one backend protocol. The rest of the engine never knows which backend ran."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

import numpy as np
import onnx

__all__ = ["Runner", "Backend"]


class Runner(Protocol):
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Backend(Protocol):
    name: str  # what summary.json reports, e.g. "onnxruntime-cpu"

    def runner(self, model: onnx.ModelProto, observe: Sequence[str] = ()) -> AbstractContextManager[Runner]:
        """A started runner for `model`. `infer` returns its graph outputs plus those of the `observe` tensors
        the backend can see. How it observes them is the backend's business: ONNX Runtime marks them as
        outputs; TensorRT reads debug tensors so fusion is kept, and tensors fused away are simply absent
        (the caller reports them as not observable, never pairs anything else)."""
        ...
