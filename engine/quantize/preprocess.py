"""Pre-processing before calibration: shape inference, BN folding, constant folding, stable node names."""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from pathlib import Path

import onnx

from engine.errors import ModelError

__all__ = ["preprocess", "name_nodes", "pin_ir_version", "MAX_IR_VERSION"]

# onnx 1.23 writes IR 14, onnxruntime-gpu 1.31 reads at most 13: never write a newer IR than the input had.
MAX_IR_VERSION = 10


def preprocess(model: onnx.ModelProto) -> onnx.ModelProto:
    """ORT's quantization pre-processing (symbolic shape inference + basic graph optimizations, which fold
    BatchNormalization into Conv and fold constants), then readable names for every node."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source_ir = model.ir_version
    named = onnx.ModelProto()
    named.CopyFrom(model)
    name_nodes(named)  # before optimization too, so fused nodes keep user-visible names
    with tempfile.TemporaryDirectory(prefix="quantscope-pre-") as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(named, src)
        last_err: Exception | None = None
        for symbolic in (True, False):  # symbolic shape inference fails on some exotic graphs
            try:
                quant_pre_process(str(src), str(dst), skip_symbolic_shape=not symbolic)
                break
            except Exception as err:  # noqa: BLE001 - ORT raises bare Exceptions of many kinds here
                logging.getLogger(__name__).info("pre-processing (symbolic=%s) failed: %s", symbolic, err)
                last_err = err
        else:
            first = str(last_err).strip().splitlines()[0][:200] if str(last_err).strip() else type(last_err).__name__
            raise ModelError(
                f"ONNX Runtime could not pre-process the model ({first}); check that it runs in ONNX Runtime, "
                "e.g. with `polygraphy run model.onnx --onnxrt`."
            ) from None
        out = onnx.load(dst)
    name_nodes(out)
    pin_ir_version(out, source_ir)
    return out


def name_nodes(model: onnx.ModelProto) -> None:
    """Gives every unnamed node `<OpType>_<k>` (k counts per op type in graph order), unique and stable."""
    taken = Counter(n.name for n in model.graph.node if n.name)
    counters: Counter[str] = Counter()
    for node in model.graph.node:
        if node.name:
            continue
        while True:
            candidate = f"{node.op_type}_{counters[node.op_type]}"
            counters[node.op_type] += 1
            if candidate not in taken:
                break
        node.name = candidate
        taken[candidate] += 1


def pin_ir_version(model: onnx.ModelProto, source_ir: int) -> None:
    model.ir_version = min(model.ir_version, max(source_ir, MAX_IR_VERSION))
