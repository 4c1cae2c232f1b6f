"""Emits the explicit Q/DQ candidate from the calibration cache (never recalibrates)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import onnx

from engine.errors import ConfigError, RunFolderError
from engine.quantize.calibration import ORT_METHODS
from engine.quantize.config import FallbackPrecision, QuantConfig
from engine.quantize.fallback_fp16 import convert_nodes_to_fp16
from engine.quantize.preprocess import pin_ir_version

__all__ = ["emit_candidate", "EmitResult"]


class EmitResult:
    def __init__(self, model: onnx.ModelProto, fp16_nodes: tuple[str, ...], fp32_nodes: tuple[str, ...]) -> None:
        self.model, self.fp16_nodes, self.fp32_nodes = model, fp16_nodes, fp32_nodes


def emit_candidate(reference: onnx.ModelProto, reference_path: Path, cache_path: Path, config: QuantConfig) -> EmitResult:
    """Symmetric per-tensor INT8 activations, symmetric per-channel INT8 weights, float bias (what TensorRT
    consumes); fallback nodes get no Q/DQ and, for fp16, FP16 types with casts at their boundaries."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    node_names = {n.name for n in reference.graph.node}
    unknown = sorted(set(config.fallback) - node_names)
    if unknown:
        raise ConfigError(f"The fallback node '{unknown[0]}' is not in the compared graph; use a node name from layers.csv.")
    tensors = {o for n in reference.graph.node for o in n.output} | {i.name for i in reference.graph.input}
    for r in config.ranges:
        if r.tensor not in tensors:
            raise ConfigError(f"The range override names the tensor '{r.tensor}', which is not in the compared graph; use a tensor name from layers.csv.")
    if not cache_path.is_file():
        raise RunFolderError(f"The calibration cache {cache_path} is missing; run `quantscope compare` again to recalibrate.")
    extra = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,  # TensorRT takes float bias; int32 bias DQ is not an explicit-quantization input
        "QDQKeepRemovableActivations": True,  # keep every reference node so names line up one to one
        # TensorRT's placement: Q/DQ on the inputs of weighted ops only, never on their outputs
        "OpTypesToExcludeOutputQuantization": list(config.op_types),
        "TensorQuantOverrides": {r.tensor: [{"rmin": r.min, "rmax": r.max}] for r in config.ranges},
    }
    with tempfile.TemporaryDirectory(prefix="quantscope-emit-") as tmp:
        out = Path(tmp) / "candidate.onnx"
        logging.getLogger("root").setLevel(logging.WARNING)
        quantize_static(
            str(reference_path), str(out), None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(config.op_types),
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=sorted(config.fallback),
            calibrate_method=ORT_METHODS()[config.calibration],
            extra_options=extra,
            calibration_cache_path=str(cache_path),
        )
        model = onnx.load(out)
    pin_ir_version(model, reference.ir_version)
    fp16: tuple[str, ...] = ()
    fp32 = tuple(sorted(config.fallback))
    if config.fallback_precision is FallbackPrecision.FP16 and config.fallback:
        fp16, fp32 = convert_nodes_to_fp16(model, config.fallback)
    return EmitResult(model, fp16, fp32)
