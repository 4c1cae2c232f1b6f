"""`quantscope doctor`: the facts a bug report starts from (versions, providers, GPU, usable features)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import shutil
import sys

from engine.backends.select import available_providers
from engine.compare.reducers import HOST_KERNEL, device_library

__all__ = ["doctor", "doctor_lines"]

PACKAGES = ("quantscope", "onnx", "onnxruntime", "onnxruntime-gpu", "polygraphy", "numpy", "pandas", "streamlit", "plotly",
            "pillow", "tensorrt", "cupy-cuda12x", "cupy-cuda13x", "torch")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _gpu() -> str | None:
    if importlib.util.find_spec("torch") is not None:
        try:
            import torch

            if torch.cuda.is_available():
                return torch.cuda.get_device_name(0)
        except Exception:  # noqa: BLE001 - a broken CUDA install is reported as "no GPU"
            return None
    return None


def doctor() -> dict:
    providers = available_providers()
    try:
        import onnxruntime as ort

        ort_providers = ort.get_available_providers()
    except ImportError:
        ort_providers = []
    lib = device_library()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in PACKAGES},
        "onnxruntime_providers": ort_providers,
        "gpu": _gpu(),
        "device_array_library": lib,
        "features": {
            "compare on ONNX Runtime CPU": providers["cpu"],
            "compare on ONNX Runtime CUDA": providers["cuda"],
            "metrics computed on the GPU (cupy or torch)": providers["cuda"] and lib is not None,
            "host metrics in one compiled pass (else numpy, about 4x slower on two cores; needs a C compiler at install)":
                HOST_KERNEL == "compiled",
            "TensorRT backend": providers["tensorrt"],
            "browser tests (/usr/bin/chromium)": shutil.which("chromium") is not None,
        },
    }


def doctor_lines(report: dict | None = None) -> list[str]:
    r = report or doctor()
    lines = [f"python {r['python']} on {r['platform']}"]
    lines += [f"{name:16} {version or 'not installed'}" for name, version in r["packages"].items()]
    lines.append(f"onnxruntime providers: {', '.join(r['onnxruntime_providers']) or 'none'}")
    lines.append(f"GPU: {r['gpu'] or 'none visible'}; device array library: {r['device_array_library'] or 'none'}")
    lines += [f"[{'yes' if ok else ' no'}] {feature}" for feature, ok in r["features"].items()]
    return lines
