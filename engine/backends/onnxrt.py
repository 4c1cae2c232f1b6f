"""ONNX Runtime (CPU or CUDA) through Polygraphy's OnnxrtRunner, with a session loader of our own.

Graph optimization stays at BASIC for accuracy: it folds constants but does not fuse Q/DQ into ORT's own int8
kernels. The Q/DQ graph then computes exactly what an int32-accumulating engine (TensorRT) computes, while ORT
CPU's fused u8s8 kernels saturate on CPUs without VNNI (measured on the sample: 33.8 dB at BASIC, -4.0 dB at
ENABLE_ALL for the same model). Latency uses ENABLE_ALL (`optimized=True`): what ONNX Runtime deploys."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import onnx

from engine.backends.base import Capabilities
from engine.backends.shared_arena import SHARED_CPU_ARENA
from engine.errors import BackendError, ModelError
from engine.model.outputs import with_outputs

__all__ = ["OnnxRuntimeBackend", "cuda_available"]


def cuda_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


class _SessionLoader:
    """A Polygraphy-style loader (cheap until called) that builds the ONNX Runtime session itself, because the
    accuracy path must disable ORT's WeightBiasQuantization: at the BASIC level it rewrites a Conv/Gemm whose input
    and weight are dequantized to use an int32-quantized bias, which TensorRT never does (it takes the float bias).
    On the outlier sample that rewrite moved the logits by up to 0.38."""

    ACCURACY_DISABLED = ("WeightBiasQuantization",)

    def __init__(self, model_bytes: bytes, providers: list, optimized: bool, threads: int | None = None) -> None:
        self.model_bytes, self.providers, self.optimized, self.threads = model_bytes, providers, optimized, threads
        self.shared = False  # the session uses the process's shared CPU arena (release it when the session is gone)

    def __call__(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        if self.optimized:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            disabled: tuple[str, ...] = ()
        else:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            disabled = self.ACCURACY_DISABLED
            # Accuracy sessions take turns (reference, marked candidate, plain candidate, probes), each with its own thread
            # pool: pool threads that spin-wait after a run take the cores the next session needs. Without spinning, a
            # MobileNetV3 rebuild on 2 cores ran its reference in 0.38 s instead of 0.59 s and its candidate in 0.42 s
            # instead of 0.65 s. Latency sessions (optimized) keep ONNX Runtime's default, as deployed.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.shared = not self.optimized and self.providers == ["CPUExecutionProvider"] and SHARED_CPU_ARENA.acquire()
        if self.shared:
            options.add_session_config_entry("session.use_env_allocators", "1")
        try:
            return ort.InferenceSession(self.model_bytes, options, providers=self.providers, disabled_optimizers=list(disabled))
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """After the session is gone: the shared arena no longer counts it (see shared_arena)."""
        if self.shared:
            self.shared = False
            SHARED_CPU_ARENA.release()


class _HostRunner:
    """Polygraphy's OnnxrtRunner: numpy in, numpy out. Runs go to the session the runner opened: OnnxrtRunner.infer asks
    each input whether it is a torch tensor, which imports torch where it is installed (3.9 s of a 13 s compare from
    the command line on the GPU host), and our inputs are always numpy arrays."""

    def __init__(self, runner) -> None:
        self._runner = runner
        self._names = [o.name for o in runner.sess.get_outputs()]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return dict(zip(self._names, self._runner.sess.run(self._names, feed)))
        except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
            raise ModelError(f"ONNX Runtime failed while running the model ({_first_line(err)}); check the input data's shapes.") from None

    def resident(self, arrays: dict[str, np.ndarray], reuse: dict | None = None) -> dict[str, np.ndarray]:
        return arrays

    def artifacts(self) -> dict:
        return {}


class _DeviceRunner:
    """Outputs stay in device memory (IOBinding) as OrtValues; a device reducer reads them there. After the first run
    of each input shape the outputs are bound to the buffers that run allocated, so later runs of that shape write into
    the same memory: no allocation and no per-output binding a batch, and pointers a reducer can keep."""

    MAX_SHAPES = 4  # input shapes whose buffers are kept (a data set has one or two: full batches and the last)

    def __init__(self, sess, device: str) -> None:
        self._sess, self._device = sess, device
        self._outputs = [o.name for o in sess.get_outputs()]
        self._bound: dict[tuple, tuple] = {}

    def resident(self, arrays: dict[str, np.ndarray], reuse: dict | None = None) -> dict:
        """OrtValues in this session's device memory; one that `reuse` holds under the same name with the same shape and
        type is overwritten in place (no allocation, the binding stays valid)."""
        from onnxruntime import OrtValue

        out = {}
        for k, v in arrays.items():
            v = np.ascontiguousarray(v)
            old = (reuse or {}).get(k)
            if old is not None and tuple(old.shape()) == v.shape and old.data_type() == OrtValue.ortvalue_from_numpy(v).data_type():
                old.update_inplace(v)
                out[k] = old
            else:
                out[k] = OrtValue.ortvalue_from_numpy(v, self._device, 0)
        return out

    def infer(self, feed: dict) -> dict:
        """`feed`: numpy arrays (copied in each run) or OrtValues from `resident` (bound where they are, and not bound
        again while the same value is fed: a probe's data and gates stay bound from one run to the next)."""
        key = tuple((k, v.shape, v.dtype.str) if isinstance(v, np.ndarray) else (k, tuple(v.shape()), v.data_type())
                    for k, v in feed.items())
        known = self._bound.get(key)
        binding, bound = (known[0], known[2]) if known is not None else (self._sess.io_binding(), {})
        for name, arr in feed.items():
            if isinstance(arr, np.ndarray):
                binding.bind_cpu_input(name, np.ascontiguousarray(arr))
                bound.pop(name, None)
            elif bound.get(name) is not arr:
                binding.bind_ortvalue_input(name, arr)
                bound[name] = arr
        if known is None:
            for name in self._outputs:
                binding.bind_output(name, self._device)
        try:
            self._sess.run_with_iobinding(binding)
            binding.synchronize_outputs()  # the arrays are read by other CUDA streams next
        except Exception as err:  # noqa: BLE001
            raise ModelError(f"ONNX Runtime failed while running the model ({_first_line(err)}); check the input data's shapes.") from None
        if known is not None:
            return known[1]
        values = dict(zip(self._outputs, binding.get_outputs()))
        if len(self._bound) < self.MAX_SHAPES:
            for name, value in values.items():
                binding.bind_ortvalue_output(name, value)
            self._bound[key] = (binding, values, bound)
        return values

    def artifacts(self) -> dict:
        return {}


class OnnxRuntimeBackend:
    def __init__(self, device: str = "cpu", threads: int | None = None) -> None:
        """threads: CPU threads per session (None: ONNX Runtime's default, every core)."""
        if device not in ("cpu", "cuda"):
            raise BackendError(f"Unknown ONNX Runtime device '{device}'; use cpu or cuda.")
        if device == "cuda" and not cuda_available():
            raise BackendError("ONNX Runtime's CUDA provider is not available here; install onnxruntime-gpu (pip install .[gpu]) or use --provider cpu.")
        self.device = device
        self.threads = threads
        self.name = f"onnxruntime-{device}"
        self.capabilities = Capabilities(self.name, device, runtime_gates=True, fp16_kernels=device == "cuda",
                                         observes_fused=False, device_outputs=device == "cuda", branchless=device == "cuda",
                                         parallel_sessions=device == "cuda", repeatable=True)
        # parallel sessions: measured on CUDA; CPU sessions opened side by side only made several all-core thread pools
        # compete (no gain on 2 cores). repeatable: MLAS splits no reduction by thread count, and cuDNN's algorithms are
        # picked by heuristic (cudnn_conv_algo_search below), not by timing

    def with_threads(self, threads: int) -> OnnxRuntimeBackend:
        return OnnxRuntimeBackend(self.device, threads)

    def _loader(self, model: onnx.ModelProto, optimized: bool) -> _SessionLoader:
        import onnxruntime as ort

        ort.set_default_logger_severity(4)  # errors ORT recovers from itself (cuDNN plans it falls back from) are not ours
        _quiet_polygraphy()
        # TF32 off: FP32 convolutions on the GPU then agree with the CPU's, so differences are quantization's. cuDNN picks
        # its convolution algorithms by heuristic within a fixed workspace, not by timing them or by the memory free at
        # the time: every session, in any process, picks the same and computes the same bits.
        cuda = {"use_tf32": "0", "cudnn_conv_algo_search": "HEURISTIC", "cudnn_conv_use_max_workspace": "0"}
        providers = [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"] if self.device == "cuda" else ["CPUExecutionProvider"]
        return _SessionLoader(model.SerializeToString(), providers, optimized, self.threads)

    @contextmanager
    def runner(self, model: onnx.ModelProto, observe: Sequence[str] = (), *, on_device: bool = False,
               optimized: bool = False, fallback: frozenset[str] = frozenset()) -> Iterator[_HostRunner | _DeviceRunner]:
        """Observed tensors become graph outputs (ONNX Runtime has no other way to expose them). on_device: outputs
        stay in the session's device memory (CUDA). fallback: nothing to do here, the Q/DQ graph says it all."""
        loader = self._loader(with_outputs(model, list(observe)), optimized)
        if on_device:
            try:
                sess = loader()
            except Exception as err:  # noqa: BLE001
                raise ModelError(_session_error(err)) from None
            yield _DeviceRunner(sess, self.device)
            return
        from polygraphy.backend.onnxrt import OnnxrtRunner

        try:
            runner = OnnxrtRunner(loader)
            runner.activate()
        except Exception as err:  # noqa: BLE001
            loader.release()
            raise ModelError(_session_error(err)) from None
        try:
            yield _HostRunner(runner)
        finally:
            try:
                runner.deactivate()  # the session goes with it
            finally:
                loader.release()


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
