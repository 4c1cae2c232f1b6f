"""ONNX Runtime (CPU or CUDA) through Polygraphy's SessionFromOnnx loader and OnnxrtRunner.

Graph optimization stays at BASIC: it folds constants but does not fuse Q/DQ into ORT's own int8 kernels.
The Q/DQ graph then computes exactly what an int32-accumulating engine (TensorRT) computes, while ORT
CPU's fused u8s8 kernels saturate on CPUs without VNNI (measured on the sample: 33.8 dB at BASIC,
-4.0 dB at ENABLE_ALL for the same model)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import onnx

from engine.compare.graph import with_outputs
from engine.errors import BackendError, ModelError

__all__ = ["OnnxRuntimeBackend", "cuda_available"]


def cuda_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


class _PolygraphyRunner:
    def __init__(self, runner) -> None:
        self._runner = runner

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return dict(self._runner.infer(feed, check_inputs=False))
        except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
            raise ModelError(f"ONNX Runtime failed while running the model ({_first_line(err)}); check the input data's shapes.") from None


class _DeviceBoundRunner:
    """Outputs stay in GPU memory (IOBinding); the caller wraps them with DLPack."""

    def __init__(self, sess, device: str) -> None:
        self._sess, self._device = sess, device
        self._outputs = [o.name for o in sess.get_outputs()]

    def infer_on_device(self, feed: dict[str, np.ndarray]) -> dict:
        binding = self._sess.io_binding()
        for name, arr in feed.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(arr))
        for name in self._outputs:
            binding.bind_output(name, self._device)
        try:
            self._sess.run_with_iobinding(binding)
            binding.synchronize_outputs()  # the arrays are read by other CUDA streams next
        except Exception as err:  # noqa: BLE001
            raise ModelError(f"ONNX Runtime failed while running the model ({_first_line(err)}); check the input data's shapes.") from None
        return dict(zip(self._outputs, binding.get_outputs()))


class OnnxRuntimeBackend:
    def __init__(self, device: str = "cpu", optimization: str = "basic") -> None:
        """optimization: "basic" for accuracy (Q/DQ computed as written), "all" for latency (ORT's fused kernels)."""
        if device not in ("cpu", "cuda"):
            raise BackendError(f"Unknown ONNX Runtime device '{device}'; use cpu or cuda.")
        if device == "cuda" and not cuda_available():
            raise BackendError("ONNX Runtime's CUDA provider is not available here; install onnxruntime-gpu (pip install .[gpu]) or use --provider cpu.")
        self.device = device
        self.optimization = optimization
        self.name = f"onnxruntime-{device}"

    @property
    def keeps_outputs_on_device(self) -> bool:
        """True when metrics can be computed where the tensors are (CUDA + cupy or torch)."""
        from engine.compare.device_stats import device_library

        return self.device == "cuda" and device_library() is not None

    def _loader(self, model: onnx.ModelProto):
        import onnxruntime as ort
        from polygraphy.backend.onnxrt import SessionFromOnnx

        ort.set_default_logger_severity(3)
        _quiet_polygraphy()
        # TF32 off: FP32 convolutions on the GPU then agree with the CPU's, so differences are quantization's.
        providers = [("cuda", {"use_tf32": "0"}), "cpu"] if self.device == "cuda" else ["cpu"]
        level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL if self.optimization == "all" else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        return SessionFromOnnx(model.SerializeToString(), providers=providers, graph_optimization_level=level)

    @contextmanager
    def device_runner(self, model: onnx.ModelProto, observe: Sequence[str] = ()) -> Iterator[_DeviceBoundRunner]:
        try:
            sess = self._loader(with_outputs(model, list(observe)))()
        except Exception as err:  # noqa: BLE001
            raise ModelError(_session_error(err)) from None
        yield _DeviceBoundRunner(sess, self.device)

    @contextmanager
    def runner(self, model: onnx.ModelProto, observe: Sequence[str] = ()) -> Iterator[_PolygraphyRunner]:
        """Observed tensors become graph outputs (ONNX Runtime has no other way to expose them)."""
        from polygraphy.backend.onnxrt import OnnxrtRunner

        loader = self._loader(with_outputs(model, list(observe)))
        try:
            runner = OnnxrtRunner(loader)
            runner.activate()
        except Exception as err:  # noqa: BLE001
            raise ModelError(_session_error(err)) from None
        try:
            yield _PolygraphyRunner(runner)
        finally:
            runner.deactivate()


def _quiet_polygraphy() -> None:
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.ERROR
    G_LOGGER.colors = False


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return (text.splitlines()[-1] if text else type(err).__name__)[:300]


def _session_error(err: Exception) -> str:
    text = str(err)
    if "NOT_IMPLEMENTED" in text or "Could not find an implementation" in text:
        return f"ONNX Runtime has no kernel for an op in this model ({_first_line(err)}); this runtime cannot run it."
    if "Unsupported model IR version" in text or "opset" in text.lower() and "support" in text.lower():
        return f"The installed ONNX Runtime cannot read this model's IR/opset version ({_first_line(err)}); upgrade onnxruntime or export with an older opset."
    return f"ONNX Runtime could not load the model ({_first_line(err)}); check that it runs with `polygraphy run model.onnx --onnxrt`."
