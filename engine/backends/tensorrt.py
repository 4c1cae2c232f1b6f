"""TensorRT through Polygraphy's loaders (NetworkFromOnnxBytes, CreateConfig, EngineFromNetwork, TrtRunner).

Paths:
  strongly-typed  (TensorRT 11, default wherever available) the network takes its types from the Q/DQ ONNX
                  model: INT8 where Q/DQ says so, FP16 where the fallback rewrite put FP16, FP32 elsewhere.
  classic         (TensorRT 10 only) FP16 + INT8 builder flags, the fallback nodes' layers set to FP16 and
                  precision constraints "obey". TensorRT 11 removed these flags.
Observation: tensors are read as debug tensors (`mark_unfused_tensors_as_debug_tensors`, TensorRT 10.x+),
so fusion is what deployment gets; tensors fused away are absent and reported as not observable. Where
debug tensors do not exist, tensors are marked as outputs, with a note that fusion is disturbed.
Runners are stateless: each builds its own engine and hands it back with `artifacts()`; the backend object keeps
nothing between runs. Nothing here is imported unless TensorRT is importable."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import onnx

from engine.backends.base import Capabilities
from engine.errors import BackendError, ModelError

__all__ = ["TensorRTBackend", "trt_capabilities", "engine_summary"]

DEBUG_NOTE = "observed tensors were marked as outputs (no debug tensors in this TensorRT): fusion disturbed"


def trt_capabilities() -> dict:
    import tensorrt as trt

    major = int(trt.__version__.split(".")[0])
    return {
        "version": trt.__version__,
        "strongly_typed": hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"),
        "classic": major < 11 and hasattr(trt.BuilderFlag, "INT8"),
        "debug_tensors": hasattr(trt.INetworkDefinition, "mark_unfused_tensors_as_debug_tensors"),
    }


def engine_summary(layer_info: dict | None, caps: dict, path: str, notes: Sequence[str]) -> dict:
    """Layer count, Reformat layers and output precisions from the engine inspector's JSON."""
    layers = (layer_info or {}).get("Layers", [])
    layers = [lay if isinstance(lay, dict) else {"Name": lay} for lay in layers]
    reformats = [lay.get("Name", "") for lay in layers if lay.get("LayerType") == "Reformat" or "reformat" in str(lay.get("Name", "")).lower()]
    precisions: dict[str, int] = {}
    for lay in layers:
        for out in lay.get("Outputs", []) or []:
            fmt = str(out.get("Format/Datatype", "")) if isinstance(out, dict) else ""
            key = next((p for p in ("Int8", "Half", "Float", "FP8", "BF16") if p.lower() in fmt.lower()), "other")
            precisions[key] = precisions.get(key, 0) + 1
    return {"tensorrt": caps["version"], "path": path, "layers": len(layers), "reformat_layers": len(reformats),
            "output_precisions": precisions, "notes": sorted(set(notes))}


class _TrtRunner:
    """Builds its engine on the first batch, with an optimization profile for that batch's shapes."""

    def __init__(self, caps: dict, path: str, model: onnx.ModelProto, observe: Sequence[str], fallback: frozenset[str]) -> None:
        self.caps, self.path, self.model, self.observe, self.fallback = caps, path, model, list(observe), fallback
        self.runner = None
        self.engine_bytes: bytes | None = None
        self.layer_info: dict | None = None
        self.notes: list[str] = []

    def _build(self, feed: dict[str, np.ndarray]):
        import tensorrt as trt
        from polygraphy.backend.trt import (
            CreateConfig,
            EngineFromNetwork,
            ModifyNetworkOutputs,
            NetworkFromOnnxBytes,
            Profile,
            SetLayerPrecisions,
            TrtRunner,
        )

        typed = self.path == "strongly-typed"
        debug = bool(self.observe) and self.caps["debug_tensors"]
        network = NetworkFromOnnxBytes(self.model.SerializeToString(), strongly_typed=typed,
                                       mark_unfused_tensors_as_debug_tensors=debug)
        if self.observe and not debug:
            self.notes.append(DEBUG_NOTE)
            network = ModifyNetworkOutputs(network, outputs=self.observe + [o.name for o in self.model.graph.output])
        if not typed and self.fallback:
            network = SetLayerPrecisions(network, {name: trt.float16 for name in self.fallback})
        profile = Profile()
        for name, arr in feed.items():
            shape = tuple(arr.shape)
            profile.add(name, min=(1, *shape[1:]), opt=shape, max=shape)
        kwargs = dict(profiles=[profile], profiling_verbosity=trt.ProfilingVerbosity.DETAILED, tf32=False)
        if not typed:
            kwargs.update(fp16=True, int8=True, precision_constraints="obey")
        engine = EngineFromNetwork(network, CreateConfig(**kwargs))()
        self.engine_bytes = bytes(engine.serialize())
        inspector = engine.create_engine_inspector()
        self.layer_info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
        self.runner = TrtRunner(engine)
        self.runner.activate()

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            if self.runner is None:
                self._build(feed)
            out = self.runner.infer(feed, check_inputs=False)
        except Exception as err:  # noqa: BLE001 - TensorRT/Polygraphy raise many types
            text = str(err).strip().splitlines()
            raise ModelError(f"TensorRT could not build or run the model ({text[-1][:300] if text else type(err).__name__}); "
                             "try --provider cuda, or check the model with `polygraphy run model.onnx --trt`.") from None
        return {k: np.asarray(v) for k, v in out.items()}

    def resident(self, arrays: dict[str, np.ndarray], reuse: dict | None = None) -> dict[str, np.ndarray]:
        return arrays  # Polygraphy's TrtRunner copies host arrays in and out itself

    def artifacts(self) -> dict:
        """The serialized engine and its layer information (precisions, Reformat count), once built."""
        if self.engine_bytes is None:
            return {}
        return {"files": {"candidate.engine": self.engine_bytes, "trt_layers.json": json.dumps(self.layer_info, indent=1).encode()},
                "engine": engine_summary(self.layer_info, self.caps, self.path, self.notes)}

    def close(self) -> None:
        if self.runner is not None:
            self.runner.deactivate()
            self.runner = None


class TensorRTBackend:
    def __init__(self, path: str = "auto") -> None:
        try:
            self.caps = trt_capabilities()
        except ImportError:
            raise BackendError("TensorRT is not installed here (import tensorrt fails); use --provider cuda or cpu.") from None
        if path == "auto":
            path = "strongly-typed" if self.caps["strongly_typed"] else "classic"
        if path == "classic" and not self.caps["classic"]:
            raise BackendError(f"TensorRT {self.caps['version']} has no precision flags (removed in TensorRT 11); use the strongly-typed path.")
        if path == "strongly-typed" and not self.caps["strongly_typed"]:
            raise BackendError(f"TensorRT {self.caps['version']} cannot build strongly typed networks; use the classic path.")
        self.path = path
        self.name = f"tensorrt-{path}"
        # Q/DQ switched by Where would keep TensorRT from fusing it into INT8 kernels: each probe builds its own engine.
        self.capabilities = Capabilities(self.name, "cuda", runtime_gates=False, fp16_kernels=True,
                                         observes_fused=self.caps["debug_tensors"], device_outputs=False)

    def with_threads(self, threads: int) -> TensorRTBackend:
        return self  # TensorRT's engines run on the GPU; host threads are not its setting

    @contextmanager
    def runner(self, model: onnx.ModelProto, observe: Sequence[str] = (), *, on_device: bool = False,
               optimized: bool = False, fallback: frozenset[str] = frozenset()) -> Iterator[_TrtRunner]:
        """fallback: on the classic path these layers are set to FP16 at build time (the strongly typed path reads
        the types from the model). on_device/optimized: TensorRT engines are always optimized; outputs come to the host."""
        r = _TrtRunner(self.caps, self.path, model, observe, frozenset(fallback))
        try:
            yield r
        finally:
            r.close()
