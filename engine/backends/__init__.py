"""Backends: one protocol for ONNX Runtime (CPU/CUDA) and TensorRT."""

from engine.backends.base import Backend, Runner
from engine.backends.onnxrt import OnnxRuntimeBackend
from engine.backends.select import PROVIDERS, BackendChoice, available_providers, resolve_backend, tensorrt_importable

__all__ = ["Backend", "Runner", "OnnxRuntimeBackend", "BackendChoice", "PROVIDERS", "available_providers",
           "resolve_backend", "tensorrt_importable"]
