"""Which backend runs a comparison: `auto` prefers TensorRT, then ONNX Runtime CUDA, then CPU, and says so."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from engine.backends.base import Backend
from engine.backends.onnxrt import OnnxRuntimeBackend, cuda_available
from engine.errors import BackendError

__all__ = ["PROVIDERS", "BackendChoice", "available_providers", "resolve_backend", "tensorrt_importable"]

PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")


def tensorrt_importable() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


@dataclass(frozen=True)
class BackendChoice:
    backend: Backend
    note: str  # one line a user reads: what was picked and why


def available_providers() -> dict[str, bool]:
    return {"cpu": True, "cuda": cuda_available(), "tensorrt": tensorrt_importable()}


def resolve_backend(provider: str = "auto") -> BackendChoice:
    provider = provider.lower()
    if provider not in PROVIDERS:
        raise BackendError(f"Unknown provider '{provider}'; use one of: {', '.join(PROVIDERS)}.")
    have = available_providers()
    if provider == "tensorrt" or (provider == "auto" and have["tensorrt"]):
        if not have["tensorrt"]:
            raise BackendError("TensorRT is not installed here (import tensorrt fails); install it with pip install .[trt] on a machine with NVIDIA's index, or use --provider cuda or cpu.")
        from engine.backends.tensorrt import TensorRTBackend

        backend = TensorRTBackend()
        return BackendChoice(backend, f"Using TensorRT {backend.caps['version']} ({backend.path} network).")
    if provider == "cuda" or (provider == "auto" and have["cuda"]):
        note = "Using ONNX Runtime CUDA." + ("" if provider == "cuda" else " TensorRT not installed.")
        return BackendChoice(OnnxRuntimeBackend("cuda"), note)
    missing = [] if provider == "cpu" else [n for n in ("TensorRT", "CUDA") if not have[n.lower()]]
    note = "Using ONNX Runtime CPU." + (f" {' and '.join(missing)} not available." if missing else "")
    return BackendChoice(OnnxRuntimeBackend("cpu"), note)
