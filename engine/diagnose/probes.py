"""One probe = emit a candidate from the cached calibration, run it output-only on the cached inputs,
measure the final outputs against the cached reference outputs. No tensors marked, no recalibration."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx

from engine.backends.base import Backend
from engine.compare.reference_cache import ReferenceCache
from engine.compare.task_metrics import TaskAccumulator, is_classifier_shaped
from engine.compare.tensor_stats import TensorAccumulator
from engine.errors import RunFolderError
from engine.quantize.config import FallbackPrecision, QuantConfig
from engine.quantize.emit import emit_candidate
from engine.runs import RunFolder

__all__ = ["ProbeMetrics", "OutputProbe"]


@dataclass(frozen=True)
class ProbeMetrics:
    cosine: float
    snr_db: float
    top1_agreement: float | None
    accuracy: float | None
    accuracy_drop: float | None
    seconds: float

    def get(self, metric: str) -> float | None:
        return getattr(self, metric)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class OutputProbe:
    """Holds the inputs and reference final outputs of a run in memory (outputs are small), and measures
    any fallback set against them."""

    def __init__(self, run: RunFolder, config: QuantConfig, backend: Backend) -> None:
        self.run, self.config, self.backend = run, config, backend
        self.reference = onnx.load(run.reference)
        self.outputs = [o.name for o in self.reference.graph.output]
        cache = ReferenceCache(run.cache_dir)
        if not cache.complete:
            raise RunFolderError(f"The batch cache in {run.path} is incomplete; run `quantscope compare` again.")
        self.batches: list[dict[str, np.ndarray]] = []
        self.ref_outputs: list[dict[str, np.ndarray]] = []
        for inputs, ref in cache.batches():
            self.batches.append({k: np.array(v) for k, v in inputs.items()})
            self.ref_outputs.append({o: np.array(ref[o]) for o in self.outputs if o in ref})
        if any(len(r) < len(self.outputs) for r in self.ref_outputs):  # cache kept inputs only
            with backend.runner(self.reference) as runner:
                self.ref_outputs = [{o: runner.infer(b)[o] for o in self.outputs} for b in self.batches]
        self.labels = np.load(run.labels, allow_pickle=False) if run.labels.is_file() else None
        first = self.ref_outputs[0]
        self.task_output = next((o for o in self.outputs if is_classifier_shaped(first[o])), None)
        self.probes = 0
        self.quantizable = tuple(n.name for n in self.reference.graph.node if n.op_type in config.op_types)

    def emit(self, fallback: frozenset[str], precision: FallbackPrecision | None = None) -> onnx.ModelProto:
        return emit_candidate(self.reference, self.run.reference, self.run.calibration_cache,
                              self.config.with_fallback(fallback, precision)).model

    def measure(self, fallback, precision: FallbackPrecision | None = None) -> ProbeMetrics:
        t0 = time.perf_counter()
        model = self.emit(frozenset(fallback), precision)
        self.probes += 1
        return self._measure_model(model, t0)

    def measure_reference(self) -> ProbeMetrics:
        return self.measure_model(self.reference)

    def measure_model(self, model: onnx.ModelProto) -> ProbeMetrics:
        """Any model with the reference's inputs and outputs (an FP16 build, say) against the cached reference."""
        return self._measure_model(model, time.perf_counter())

    def _measure_model(self, model: onnx.ModelProto, t0: float) -> ProbeMetrics:
        acc = TensorAccumulator()
        task = TaskAccumulator(self.task_output, self.labels)
        first = self.outputs[0]
        with self.backend.runner(model) as runner:
            for inputs, ref in zip(self.batches, self.ref_outputs):
                out = runner.infer(inputs)
                acc.update(ref[first], out[first])
                if self.task_output is not None:
                    task.update(ref[self.task_output], out[self.task_output])
        s, t = acc.result(), task.result()
        return ProbeMetrics(s.cosine, s.snr_db, t.top1_agreement, t.candidate_accuracy, t.accuracy_drop,
                            time.perf_counter() - t0)
