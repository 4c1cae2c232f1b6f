"""The one backend protocol. The rest of the engine never knows which backend ran."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

import numpy as np
import onnx

__all__ = ["Runner", "Backend"]


class Runner(Protocol):
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Backend(Protocol):
    name: str  # what summary.json reports, e.g. "onnxruntime-cpu"

    def runner(self, model: onnx.ModelProto) -> AbstractContextManager[Runner]:
        """A started runner for `model` (its graph outputs are what infer returns)."""
        ...
