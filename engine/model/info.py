"""Model metadata read with onnx alone (no runtime): inputs, outputs, op histogram."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

__all__ = ["TensorSpec", "ModelInfo", "model_info", "onnx_dtype_to_numpy"]

Dim = int | str | None  # int: fixed; str: named dynamic dim; None: unknown


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...] | None  # None when the rank itself is unknown
    dtype: str  # numpy dtype name, e.g. "float32"

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    def shape_text(self) -> str:
        if self.shape is None:
            return "unknown"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"


@dataclass(frozen=True)
class ModelInfo:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    node_count: int
    op_histogram: dict[str, int]
    opset: int
    ir_version: int
    producer: str

    def input(self, name: str) -> TensorSpec:
        return next(i for i in self.inputs if i.name == name)

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the inputs fix on axis 0, or None when axis 0 is dynamic."""
        return next((t.shape[0] for t in self.inputs if t.shape and isinstance(t.shape[0], int)), None)

    def class_scores(self) -> bool | None:
        """Whether an output is declared N x classes (more than one column, then only 1s), the shape accuracy and top-1
        agreement are computed on (engine/compare/task_metrics.py); None where an output's rank is not declared."""
        if any(t.shape is not None and len(t.shape) >= 2 and t.shape[1] != 1 and all(d == 1 for d in t.shape[2:])
               for t in self.outputs):
            return True
        return None if any(t.rank is None for t in self.outputs) else False

    def to_dict(self) -> dict:
        return {
            "inputs": [{"name": t.name, "shape": t.shape_text(), "dtype": t.dtype} for t in self.inputs],
            "outputs": [{"name": t.name, "shape": t.shape_text(), "dtype": t.dtype} for t in self.outputs],
            "node_count": self.node_count,
            "op_histogram": dict(self.op_histogram),
            "opset": self.opset,
            "ir_version": self.ir_version,
            "producer": self.producer,
        }


def onnx_dtype_to_numpy(elem_type: int) -> str:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError, ValueError):
        return f"onnx-type-{elem_type}"


def _spec(vi: onnx.ValueInfoProto) -> TensorSpec:
    tt = vi.type.tensor_type
    shape: tuple[Dim, ...] | None = None
    if tt.HasField("shape"):
        dims: list[Dim] = []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif d.HasField("dim_value"):  # some exporters (PaddlePaddle) write a dynamic dimension as -1
                dims.append(None)
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        shape = tuple(dims)
    return TensorSpec(vi.name, shape, onnx_dtype_to_numpy(tt.elem_type))


def model_info(model: onnx.ModelProto) -> ModelInfo:
    g = model.graph
    init_names = {i.name for i in g.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ModelInfo(
        inputs=tuple(_spec(i) for i in g.input if i.name not in init_names),
        outputs=tuple(_spec(o) for o in g.output),
        node_count=len(g.node),
        op_histogram=dict(Counter(n.op_type for n in g.node).most_common()),
        opset=int(opset),
        ir_version=int(model.ir_version),
        producer=f"{model.producer_name} {model.producer_version}".strip(),
    )
