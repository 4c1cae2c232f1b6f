"""Reading, validating and describing ONNX models."""

from engine.model.info import ModelInfo, TensorSpec, model_info
from engine.model.loading import DEFAULT_MAX_MODEL_BYTES, load_model, load_model_bytes

__all__ = ["ModelInfo", "TensorSpec", "model_info", "load_model", "load_model_bytes", "DEFAULT_MAX_MODEL_BYTES"]
