"""Pre-processing before calibration: shape inference, BN folding, constant folding, stable node names."""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from pathlib import Path

import onnx

from engine.errors import ModelError

__all__ = ["preprocess", "name_nodes", "initializers_are_not_inputs", "upgrade_opset", "pin_ir_version", "MAX_IR_VERSION"]

# onnx 1.23 writes IR 14, onnxruntime-gpu 1.31 reads at most 13: never write a newer IR than the input had.
MAX_IR_VERSION = 10
# per-channel QuantizeLinear/DequantizeLinear (the `axis` attribute) needs opset 13
MIN_OPSET = 13


def preprocess(model: onnx.ModelProto) -> onnx.ModelProto:
    """ORT's quantization pre-processing (symbolic shape inference + basic graph optimizations, which fold
    BatchNormalization into Conv and fold constants), then readable names for every node."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source_ir = max(model.ir_version, 4)
    named = onnx.ModelProto()
    named.CopyFrom(model)
    initializers_are_not_inputs(named)
    name_nodes(named)
    named = upgrade_opset(named)
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


def upgrade_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """Models below opset 13 are converted with onnx's version converter (per-channel Q/DQ needs 13)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), MIN_OPSET)
    if opset >= MIN_OPSET:
        return model
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(model, MIN_OPSET)
    except Exception as err:  # noqa: BLE001 - the converter raises bare RuntimeErrors
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ModelError(
            f"The model uses opset {opset}, and converting it to opset {MIN_OPSET} (needed for per-channel INT8) failed "
            f"({first}); export it again with opset {MIN_OPSET} or newer."
        ) from None
    upgraded.ir_version = max(upgraded.ir_version, model.ir_version)
    # the converter renames every node n0, n1, ...; give back the names by the (unchanged) output tensors
    by_output = {n.output[0]: n.name for n in model.graph.node if n.output and n.name}
    used: set[str] = set()
    for node in upgraded.graph.node:
        original = by_output.get(node.output[0]) if node.output else None
        if original and original not in used:
            node.name = original
            used.add(original)
        else:
            node.name = ""  # a node the converter added: named by name_nodes afterwards
    return upgraded


def initializers_are_not_inputs(model: onnx.ModelProto) -> None:
    """IR < 4 lists weights as graph inputs too. ORT's optimizer may merge or fold such initializers and leave
    the inputs behind as *required* inputs, so weights stop being inputs here (which needs IR >= 4)."""
    inits = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    if len(keep) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(keep)
        model.ir_version = max(model.ir_version, 4)


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
