"""QuantScope engine: find where INT8 post-training quantization loses accuracy, and fix it with FP16 fallback.

UI-free (never imports streamlit). The dashboard and the CLI call only what `__all__` lists."""

from engine.backends import PROVIDERS, available_providers, resolve_backend
from engine.data import ArraySource, BatchSource, ImagePreprocess, load_data, load_labels
from engine.diagnose import AutoFallbackResult, Target, UnitMode, autofallback, sensitivity
from engine.doctor import doctor, doctor_lines
from engine.errors import (
                           BackendError,
                           ConfigError,
                           DataError,
                           ModelError,
                           QuantScopeError,
                           RunFolderError,
                           unexpected_error_sentence,
)
from engine.latency import BuildLatency, measure_latency
from engine.model import ModelInfo, TensorSpec, load_model, load_model_bytes, model_info
from engine.pipeline import compare, effective_batch_size, load_result, rebuild
from engine.progress import ProgressCallback, ProgressEvent, Stage
from engine.quantize import TRT_INT8_OP_TYPES, CalibrationMethod, FallbackPrecision, QuantConfig, RangeOverride
from engine.results import ComparisonResult, Culprit, OutputMetrics, Summary
from engine.runs import RunFolder

__all__ = [
    "compare", "rebuild", "load_result", "effective_batch_size",
    "doctor", "doctor_lines", "sensitivity", "autofallback", "measure_latency", "BuildLatency", "AutoFallbackResult", "Target", "UnitMode",
    "QuantConfig", "CalibrationMethod", "FallbackPrecision", "RangeOverride", "TRT_INT8_OP_TYPES",
    "ComparisonResult", "Summary", "OutputMetrics", "Culprit", "RunFolder",
    "load_model", "load_model_bytes", "model_info", "ModelInfo", "TensorSpec",
    "load_data", "load_labels", "ArraySource", "BatchSource", "ImagePreprocess",
    "PROVIDERS", "available_providers", "resolve_backend",
    "ProgressEvent", "ProgressCallback", "Stage",
    "QuantScopeError", "unexpected_error_sentence", "ModelError", "DataError", "ConfigError", "BackendError", "RunFolderError",
]
