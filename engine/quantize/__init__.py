"""Pre-processing, calibration and explicit Q/DQ emission."""

from engine.quantize.calibration import calibrate
from engine.quantize.config import TRT_INT8_OP_TYPES, CalibrationMethod, FallbackPrecision, Precision, QuantConfig, RangeOverride
from engine.quantize.emit import EmitResult, emit_candidate
from engine.quantize.preprocess import name_nodes, preprocess

__all__ = [
    "CalibrationMethod", "FallbackPrecision", "Precision", "QuantConfig", "RangeOverride", "TRT_INT8_OP_TYPES",
    "calibrate", "emit_candidate", "EmitResult", "preprocess", "name_nodes",
]
