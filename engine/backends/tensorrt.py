"""TensorRT through Polygraphy's loaders (NetworkFromOnnxBytes, CreateConfig, EngineFromNetwork, TrtRunner).

Paths:
  strongly-typed  (TensorRT 11, default wherever available) the network takes its types from the Q/DQ ONNX
                  model: INT8 where Q/DQ says so, FP16 where the fallback rewrite put FP16, FP32 elsewhere.
  classic         (TensorRT 10 only) FP16 + INT8 builder flags, the fallback nodes' layers set to FP16 and
                  precision constraints "obey". TensorRT 11 removed these flags.
Observation: tensors are read as debug tensors (`mark_unfused_tensors_as_debug_tensors`, TensorRT 10.x+),
so fusion is what deployment gets; tensors fused away are absent and reported as not observable. Where
debug tensors do not exist, tensors are marked as outputs with a warning that fusion is disturbed.
Nothing here is imported unless TensorRT is importable."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import onnx

from engine.errors import BackendError, ModelError

__all__ = ["TensorRTBackend", "trt_capabilities"]


def trt_capabilities() -> dict:
    import tensorrt as trt

    major = int(trt.__version__.split(".")[0])
    return {
        "version": trt.__version__,
        "strongly_typed": hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"),
        "classic": major < 11 and hasattr(trt.BuilderFlag, "INT8"),
        "debug_tensors": hasattr(trt.INetworkDefinition, "mark_unfused_tensors_as_debug_tensors"),
    }


class _LazyTrtRunner:
    """Builds the engine on the first batch, with an optimization profile for that batch's shapes."""

    def __init__(self, backend: TensorRTBackend, model: onnx.ModelProto, observe: Sequence[str]) -> None:
        self.backend, self.model, self.observe = backend, model, list(observe)
        self.runner = None

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

        caps = self.backend.caps
        typed = self.backend.path == "strongly-typed"
        debug = bool(self.observe) and caps["debug_tensors"]
        network = NetworkFromOnnxBytes(self.model.SerializeToString(), strongly_typed=typed,
                                       mark_unfused_tensors_as_debug_tensors=debug)
        if self.observe and not debug:
            warnings.warn("This TensorRT has no debug tensors: observed tensors are marked as outputs, which disturbs "
                          "fusion, so the engine measured is not the one deployed.", stacklevel=2)
            self.backend.notes.add("observed tensors were marked as outputs (no debug tensors in this TensorRT): fusion disturbed")
            network = ModifyNetworkOutputs(network, outputs=self.observe + [o.name for o in self.model.graph.output])
        fallback = self.backend.fallback_layers
        if not typed and fallback:
            network = SetLayerPrecisions(network, {name: trt.float16 for name in fallback})
        profile = Profile()
        for name, arr in feed.items():
            shape = tuple(arr.shape)
            profile.add(name, min=(1, *shape[1:]), opt=shape, max=shape)
        kwargs = dict(profiles=[profile], profiling_verbosity=trt.ProfilingVerbosity.DETAILED, tf32=False)
        if not typed:
            kwargs.update(fp16=True, int8=True, precision_constraints="obey")
        engine = EngineFromNetwork(network, CreateConfig(**kwargs))()
        self.backend.record_engine(engine)
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

    def close(self) -> None:
        if self.runner is not None:
            self.runner.deactivate()


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
        self.fallback_layers: frozenset[str] = frozenset()
        self.notes: set[str] = set()
        self.engine_bytes: bytes | None = None
        self.layer_info: dict | None = None

    def record_engine(self, engine) -> None:
        """Keeps the last engine built (in a comparison: the unmodified candidate, built after the reference and
        the marked candidate) for download, with its layer information (precisions, Reformat count)."""
        import tensorrt as trt

        self.engine_bytes = bytes(engine.serialize())
        inspector = engine.create_engine_inspector()
        self.layer_info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))

    def engine_summary(self) -> dict:
        layers = (self.layer_info or {}).get("Layers", [])
        layers = [lay if isinstance(lay, dict) else {"Name": lay} for lay in layers]
        reformats = [lay.get("Name", "") for lay in layers if lay.get("LayerType") == "Reformat" or "reformat" in str(lay.get("Name", "")).lower()]
        precisions: dict[str, int] = {}
        for lay in layers:
            for out in lay.get("Outputs", []) or []:
                fmt = str(out.get("Format/Datatype", "")) if isinstance(out, dict) else ""
                key = next((p for p in ("Int8", "Half", "Float", "FP8", "BF16") if p.lower() in fmt.lower()), "other")
                precisions[key] = precisions.get(key, 0) + 1
        return {"tensorrt": self.caps["version"], "path": self.path, "layers": len(layers), "reformat_layers": len(reformats),
                "output_precisions": precisions, "notes": sorted(self.notes)}

    def save_artifacts(self, run_dir) -> dict:
        from pathlib import Path

        if self.engine_bytes is not None:
            (Path(run_dir) / "candidate.engine").write_bytes(self.engine_bytes)
            (Path(run_dir) / "trt_layers.json").write_text(json.dumps(self.layer_info, indent=1))
        return self.engine_summary()

    @contextmanager
    def runner(self, model: onnx.ModelProto, observe: Sequence[str] = ()) -> Iterator[_LazyTrtRunner]:
        r = _LazyTrtRunner(self, model, observe)
        try:
            yield r
        finally:
            r.close()
