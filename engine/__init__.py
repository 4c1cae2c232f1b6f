"""QuantScope engine: find where INT8 post-training quantization loses accuracy, and fix it with FP16 fallback.

UI-free (never imports streamlit). The dashboard and the CLI call only what `__all__` lists."""

from engine.backends import PROVIDERS, available_providers, resolve_backend
from engine.compare.metrics import METRICS, Metric, format_metric
from engine.compare.ranking import FLOOR_DB
from engine.data import ArraySource, BatchSource, ImagePreprocess, load_data, load_labels
from engine.diagnose import AutoFallbackResult, Target, UnitMode, search_fallback, sensitivity, sensitivity_estimate
from engine.diagnose.autofallback import STRATEGIES
from engine.diagnose.harm_ranking import TOP_SET as RANKING_TOP_SET
from engine.diagnose.kept_results import kept_search, kept_sensitivity
from engine.diagnose.targets import METRICS as TARGET_METRICS
from engine.diagnose.targets import WORDS as TARGET_WORDS
from engine.doctor import doctor, doctor_lines
from engine.errors import (
                           BackendError,
                           Cancelled,
                           ConfigError,
                           DataError,
                           ModelError,
                           QuantScopeError,
                           RunFolderError,
                           unexpected_error_sentence,
)
from engine.fallback import autofallback
from engine.latency import BuildLatency, measure_latency
from engine.model import ModelInfo, TensorSpec, load_model, load_model_bytes, model_info
from engine.node_view import Neighbourhood, TensorView, neighbourhood, tensor_view
from engine.pipeline import compare, effective_batch_size, load_result, rebuild
from engine.progress import ProgressCallback, ProgressEvent, Stage
from engine.quantize import TRT_INT8_OP_TYPES, CalibrationMethod, FallbackPrecision, Precision, QuantConfig, RangeOverride
from engine.quantize.config import in_name_order
from engine.quantize.preprocess import model_digest
from engine.report_data import QuantizedReader, quantized_readers, run_neighbourhood
from engine.results import Amplifier, ComparisonResult, Culprit, OutputMetrics, RankingInfo, Summary, not_like_for_like
from engine.run_config import RunConfig
from engine.run_index import RunIndex, RunRecord, RunStatus
from engine.runs import RunFolder
from engine.settings import Settings
from engine.sweep import SCREEN_SAMPLES as SWEEP_SCREEN_SAMPLES
from engine.sweep import SELECT_METRICS, SweepResult, SweepRow, load_sweep, sweep

__all__ = [
    "FLOOR_DB", "RANKING_TOP_SET",
    "compare", "rebuild", "load_result", "effective_batch_size",
    "doctor", "doctor_lines", "sensitivity", "sensitivity_estimate", "autofallback", "search_fallback", "kept_sensitivity", "kept_search", "measure_latency", "BuildLatency", "AutoFallbackResult", "Target", "UnitMode",
    "STRATEGIES", "TARGET_METRICS", "TARGET_WORDS", "sweep", "load_sweep", "SweepResult", "SweepRow", "SELECT_METRICS", "SWEEP_SCREEN_SAMPLES",
    "QuantConfig", "in_name_order", "CalibrationMethod", "FallbackPrecision", "Precision", "RangeOverride", "TRT_INT8_OP_TYPES",
    "QuantizedReader", "quantized_readers", "run_neighbourhood", "RunIndex", "RunRecord", "RunStatus",
    "ComparisonResult", "Summary", "not_like_for_like", "OutputMetrics", "Culprit", "Amplifier", "RankingInfo", "RunFolder", "RunConfig", "Settings",
    "METRICS", "Metric", "format_metric", "neighbourhood", "Neighbourhood", "tensor_view", "TensorView",
    "load_model", "load_model_bytes", "model_info", "model_digest", "ModelInfo", "TensorSpec",
    "load_data", "load_labels", "ArraySource", "BatchSource", "ImagePreprocess",
    "PROVIDERS", "available_providers", "resolve_backend",
    "ProgressEvent", "ProgressCallback", "Stage",
    "QuantScopeError", "Cancelled", "unexpected_error_sentence", "ModelError", "DataError", "ConfigError", "BackendError", "RunFolderError",
]
