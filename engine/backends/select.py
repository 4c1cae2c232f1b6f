"""Which backend runs a comparison: `auto` prefers TensorRT, then ONNX Runtime CUDA, then CPU, and says so."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from engine.backends.base import Backend
from engine.backends.onnxrt import OnnxRuntimeBackend, cuda_available
from engine.errors import BackendError

__all__ = ["PROVIDERS", "BackendChoice", "available_providers", "resolve_backend", "tensorrt_importable", "probe_backend", "change_note"]

PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")


def tensorrt_importable() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


@dataclass(frozen=True)
class BackendChoice:
    backend: Backend
    note: str  # one line a user reads: what was picked and why
    provider: str  # what it resolved to: cpu | cuda | tensorrt (stored in the run's config, never resolved again)


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
        return BackendChoice(backend, f"Using TensorRT {backend.caps['version']} ({backend.path} network).", "tensorrt")
    if provider == "cuda" or (provider == "auto" and have["cuda"]):
        note = "Using ONNX Runtime CUDA." + ("" if provider == "cuda" else " TensorRT not installed.")
        return BackendChoice(OnnxRuntimeBackend("cuda"), note, "cuda")
    missing = [] if provider == "cpu" else [n for n in ("TensorRT", "CUDA") if not have[n.lower()]]
    note = "Using ONNX Runtime CPU." + (f" {' and '.join(missing)} not available." if missing else "")
    return BackendChoice(OnnxRuntimeBackend("cpu"), note, "cpu")


def probe_backend(backend: Backend) -> Backend:
    """The backend for many quick probes: `backend` itself where it switches Q/DQ at run time, else ONNX Runtime on the
    same device (TensorRT would build an engine per probe; ranking which nodes hurt does not need its kernels)."""
    if backend.capabilities.runtime_gates:
        return backend
    return OnnxRuntimeBackend("cuda" if backend.capabilities.device == "cuda" and cuda_available() else "cpu")


def change_note(choice: BackendChoice, previous: str) -> str | None:
    """A sentence when `choice` is not the backend an earlier result came from (named `previous` in its config)."""
    if choice.backend.name == previous:
        return None
    return (f"This rebuild ran on {choice.backend.name} while the results before it came from {previous}; "
            "compare before and after with that in mind.")
