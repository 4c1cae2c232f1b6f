"""A calibration sweep: many quantization configurations of one or more models, compared on the final outputs.

Per model, what every configuration shares is done once: pre-processing (cached), the reference's final outputs
on the evaluation data, and one pass over the calibration data whose activations feed every calibration method
(calibrate_many). Per configuration (calibration x op types x precision): emit its Q/DQ candidate, run it on the
evaluation data, find its culprit with a quick screen (every unit alone in INT8 on a few samples) and time it (once per op-type set
and precision: calibration changes scales, not the graph, so the others take its latency). The
configurations are independent tasks: an engine.scale executor runs them on Ray workers.

DIR/sweep.json and DIR/sweep.csv hold the table, the best configuration of each model marked; DIR/<model>/ holds
the shared reference and the calibration caches. `quantscope compare --sweep DIR` starts from the best one."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import pandas as pd

from engine.backends.base import Backend
from engine.backends.select import probe_backend, resolve_backend
from engine.compare.graph import fallback_candidates
from engine.data.images import ImagePreprocess
from engine.data.loading import load_labels
from engine.diagnose.probe_scoring import ProbeData, measure_model
from engine.diagnose.probes import OutputProbe, ProbeRequest
from engine.diagnose.run_probe import samples_within
from engine.diagnose.units import UnitMode, fallback_units
from engine.errors import Cancelled, ConfigError, QuantScopeError
from engine.latency import time_model
from engine.model.info import model_info
from engine.model.loading import read_model
from engine.pipeline import PREPROCESS_CACHE, calibration_plan, effective_batch_size, load_sources
from engine.progress import ProgressCallback, ProgressEvent, Stage, no_progress
from engine.quantize.calibration import CalibrationSpec, calibrate_many
from engine.quantize.config import TRT_INT8_OP_TYPES, CalibrationMethod, Precision, QuantConfig, check_percentile
from engine.quantize.emit import quantize_all
from engine.quantize.fp8 import fp8_reference, to_fp8
from engine.quantize.preprocess import preprocess
from engine.results import json_number
from engine.runs import RunFolder
from engine.scale import SerialExecutor
from engine.settings import Settings

__all__ = ["SweepConfig", "SweepRow", "SweepResult", "sweep", "load_sweep", "SELECT_METRICS", "SCREEN_SAMPLES"]

SELECT_METRICS = ("snr_db", "cosine", "top1_agreement", "accuracy", "text_agreement")


@dataclass(frozen=True)
class SweepConfig:
    calibration: CalibrationSpec
    op_types: tuple[str, ...]
    precision: Precision

    @property
    def graph(self) -> tuple:
        """What decides the emitted graph's structure: configurations that differ only in calibration emit the same
        nodes with other scales, so they run at the same speed and are timed once."""
        return self.op_types, self.precision

    @property
    def label(self) -> str:
        return f"{self.calibration.label} / {'+'.join(self.op_types)} / {self.precision.value}"

    def quant(self) -> QuantConfig:
        return QuantConfig(calibration=self.calibration.method, op_types=self.op_types, percentile=self.calibration.percentile,
                           precision=self.precision)

    def to_dict(self) -> dict:
        percentile = self.calibration.percentile if self.calibration.method is CalibrationMethod.PERCENTILE else None
        return {"calibration": self.calibration.method.value, "percentile": percentile,
                "op_types": list(self.op_types), "precision": self.precision.value}

    @classmethod
    def from_dict(cls, d: dict) -> SweepConfig:
        method = CalibrationMethod.parse(d["calibration"])
        spec = CalibrationSpec(method, float(d["percentile"])) if d.get("percentile") is not None else CalibrationSpec(method)
        return cls(spec, tuple(d["op_types"]),
                   Precision.parse(d["precision"]))


@dataclass(frozen=True)
class SweepRow:
    model: str
    config: SweepConfig
    snr_db: float = math.nan  # the model's: its float outputs together, each against its own signal (the headline's)
    cosine: float = math.nan  # the first output's
    first_output_snr_db: float = math.nan  # the first output's own (the same as snr_db where the model has one)
    top1_agreement: float | None = None
    accuracy: float | None = None
    quantized_nodes: int = 0
    culprit: str | None = None  # the unit that hurts most alone in INT8 (quick screen)
    culprit_alone_snr_db: float = math.nan
    latency_ms: float | None = None
    seconds: float = 0.0
    note: str = ""  # why a configuration has no numbers (FP8 the backend cannot run, say)
    best: bool = False
    text_agreement: float | None = None  # a CTC recogniser: samples reading FP32's text
    latency_batch: int | None = None  # samples in the timed batch (the evaluation batch, within the memory setting)

    def to_dict(self) -> dict:
        return {"model": self.model, "config": self.config.label, **self.config.to_dict(), "snr_db": json_number(self.snr_db),
                "cosine": json_number(self.cosine), "first_output_snr_db": json_number(self.first_output_snr_db),
                "top1_agreement": self.top1_agreement, "accuracy": self.accuracy, "quantized_nodes": self.quantized_nodes,
                "culprit": self.culprit, "culprit_alone_snr_db": json_number(self.culprit_alone_snr_db),
                "latency_ms": self.latency_ms, "seconds": round(self.seconds, 3), "note": self.note, "best": self.best,
                "text_agreement": self.text_agreement, "latency_batch": self.latency_batch}

    @classmethod
    def from_dict(cls, d: dict) -> SweepRow:
        num = lambda x: float(x) if x is not None else math.nan  # noqa: E731
        if "first_output_snr_db" in d:
            snr, first = num(d["snr_db"]), num(d["first_output_snr_db"])
        else:  # written before 2026-12-08: snr_db was the first output's, outputs_snr_db every float output's together
            snr, first = num(d["outputs_snr_db"]), num(d["snr_db"])
        return cls(d["model"], SweepConfig.from_dict(d), snr, num(d["cosine"]), first,
                   d.get("top1_agreement"), d.get("accuracy"), int(d.get("quantized_nodes", 0)), d.get("culprit"),
                   num(d.get("culprit_alone_snr_db")), d.get("latency_ms"), float(d.get("seconds", 0)), d.get("note", ""),
                   bool(d.get("best", False)), d.get("text_agreement"), d.get("latency_batch"))


@dataclass(frozen=True)
class SweepResult:
    folder: Path
    rows: tuple[SweepRow, ...]
    select: str
    timings: dict[str, float] = field(default_factory=dict)
    executor: str = "serial"

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([r.to_dict() for r in self.rows])

    def best(self, model: str | None = None) -> SweepRow | None:
        return next((r for r in self.rows if r.best and (model is None or r.model == model)), None)

    def to_dict(self) -> dict:
        return {"select": self.select, "executor": self.executor, "timings": {k: round(v, 3) for k, v in self.timings.items()},
                "rows": [r.to_dict() for r in self.rows]}


SCREEN_SAMPLES = 8  # samples of each configuration's quick culprit ranking

def _configs(methods, percentiles, op_type_sets, precisions) -> list[SweepConfig]:
    specs = []
    for m in methods:
        method = CalibrationMethod.parse(m) if isinstance(m, str) else m
        if method is CalibrationMethod.PERCENTILE:
            if not percentiles:
                raise ConfigError("The sweep has the percentile method but no percentile; give one or more, e.g. 99.99 99.999.",
                                  option="percentiles")
            specs += [CalibrationSpec(method, check_percentile(p, "percentiles")) for p in percentiles]
        else:
            specs.append(CalibrationSpec(method))
    precs = [Precision.parse(p) if isinstance(p, str) else p for p in precisions]
    return [SweepConfig(s, tuple(ops), p) for ops in op_type_sets for p in precs for s in specs]


def _screen_culprit(backend: Backend, reference: onnx.ModelProto, candidate: onnx.ModelProto, op_types, data: ProbeData,
                    screen: int, resume_bytes: int) -> tuple[str | None, float]:
    """The unit that hurts the final outputs most alone in INT8, on `screen` samples spread over the data (resume_bytes: what its
    probes may keep of the all-fallback run, as a compare's ranking: half of the memory setting)."""
    nodes = fallback_candidates(candidate, op_types)
    if not nodes or screen <= 0:
        return None, math.nan
    units = fallback_units(reference, nodes, UnitMode.NODE)
    probe = OutputProbe(backend, reference, candidate, units, data.spread(screen), lambda f: candidate, resume_bytes=resume_bytes)
    with probe:  # one batch of requests, so the probe can resume them from its all-fallback run
        alone = [m.outputs_snr_db for m in probe.measure_many([ProbeRequest(only=u) for u in units])]
    k = int(np.nanargmin(alone)) if not all(math.isnan(a) for a in alone) else 0
    return "+".join(units[k]), alone[k]


def _latency(backend: Backend, model: onnx.ModelProto, feed: dict, runs: int) -> float | None:
    """Median ms of `runs` runs after a short warm-up (None: not timed)."""
    return time_model(backend, model, feed, runs, warmup=min(3, runs))[0] if runs > 0 else None


def _untimed(rows: Sequence[SweepRow]) -> list[SweepRow]:
    """One successful row of each graph no row has a latency for (its timed configuration failed)."""
    timed = {r.config.graph for r in rows if r.latency_ms is not None}
    return list({r.config.graph: r for r in reversed(rows) if not r.note and r.config.graph not in timed}.values())


def _shared_latency(rows: Sequence[SweepRow]) -> list[SweepRow]:
    """Each configuration's latency: its own where it was timed, else that of the timed one with the same graph."""
    by_graph = {r.config.graph: r.latency_ms for r in rows if r.latency_ms is not None}
    return [r if r.note or r.latency_ms is not None else replace(r, latency_ms=by_graph.get(r.config.graph)) for r in rows]


def _calibration_cache(folder: Path, spec: CalibrationSpec) -> Path:
    """Where the sweep keeps one calibration's ranges (ORT's calibration cache) for a model."""
    return folder / f"calibration_{spec.label.replace(' ', '_')}.json"


def _emit(config: SweepConfig, base: Path) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """(reference, candidate) of a configuration, from the shared reference and its calibration cache."""
    fp8 = config.precision is Precision.FP8
    ref_path = base / ("reference_fp8.onnx" if fp8 else "reference.onnx")
    if not ref_path.is_file():
        raise ConfigError("FP8 needs the model at opset 19, which this model could not be converted to; "
                          "the INT8 configurations are unaffected.", option="precision")
    reference = onnx.load(ref_path)
    candidate = quantize_all(reference, ref_path, _calibration_cache(base, config.calibration), config.quant())
    return reference, to_fp8(candidate, reference) if fp8 else candidate


def _timed(config: SweepConfig, folder: Path, provider: str, data: ProbeData, runs: int) -> float | None:
    """The configuration's latency, its candidate emitted again (from the calibration cache, no calibration)."""
    backend = probe_backend(resolve_backend(provider).backend)
    return _latency(backend, _emit(config, folder)[1], data.batches[0], runs)


CONFIG_STEPS = ("emitting its Q/DQ model", "running it on the evaluation data", "ranking its culprit", "timing it")
STEPS_PER_CONFIG = len(CONFIG_STEPS)  # progress units a configuration


def _run_config(config: SweepConfig, *, model: str, folder: str, provider: str, data: ProbeData, screen: int,
                latency_runs: int, timed: frozenset[SweepConfig], resume_bytes: int,
                on_step: Callable[[int], None] | None = None) -> SweepRow:
    """One configuration, start to end: a task (it can run on a Ray worker; everything it reads is in `folder`).
    Its latency is timed only if it is in `timed` (the first configuration of each graph structure). on_step(k): before
    CONFIG_STEPS[k] (serial sweeps only: a PP-OCRv4 detector's configuration ran 80 s with its bar at 0, and a cancel
    waited for it)."""
    t0 = time.perf_counter()
    base = Path(folder)
    step = on_step or (lambda k: None)
    try:
        backend = probe_backend(resolve_backend(provider).backend)
        step(0)
        reference, candidate = _emit(config, base)
        step(1)
        m = measure_model(backend, candidate, data)
        step(2)
        culprit, alone = _screen_culprit(backend, reference, candidate, config.op_types, data, screen, resume_bytes)
        step(3)
        latency = _latency(backend, candidate, data.batches[0], latency_runs if config in timed else 0)
        return SweepRow(model, config, m.outputs_snr_db, m.cosine, m.snr_db, m.top1_agreement, m.accuracy,
                        len(fallback_candidates(candidate, config.op_types)), culprit, alone, latency, time.perf_counter() - t0,
                        text_agreement=m.text_agreement)
    except Cancelled:  # said at a step (on_step): the sweep stops, it is not this configuration's note
        raise
    except QuantScopeError as err:
        return SweepRow(model, config, seconds=time.perf_counter() - t0, note=str(err))
    except Exception as err:  # noqa: BLE001 - one configuration failing keeps the rest of the sweep
        text = str(err).strip().splitlines()
        what = "FP8" if config.precision is Precision.FP8 else "this configuration"
        note = (f"ONNX Runtime could not run {what} ({text[-1][:200] if text else type(err).__name__}); "
                "the other configurations are unaffected.")
        return SweepRow(model, config, seconds=time.perf_counter() - t0, note=note)


def _prepare(model_path, calib, data, labels, images, batch_size, provider, configs, folder: Path, settings: Settings,
             progress: ProgressCallback, name: str | None = None) -> tuple[str, ProbeData]:
    """What every configuration of one model shares: the reference (and its opset-19 twin for FP8), every calibration
    from one pass, and the reference's final outputs on the evaluation data, in batches a task runs within the memory
    setting. The same batches whatever the executor: Ray's tasks give the serial run's numbers bit for bit (cut
    otherwise, their sums would round differently), and each may hold up to the setting."""
    proto, files = read_model(model_path)
    info = model_info(proto)
    name = name or Path(model_path).name
    batch, _ = effective_batch_size(info, batch_size)
    calib_src, eval_src = load_sources(calib, data, info, images, batch)
    folder.mkdir(parents=True, exist_ok=True)
    run = RunFolder(folder)
    prepared = preprocess(proto, settings.runs_root / PREPROCESS_CACHE, files)
    reference = prepared.model
    run.write_model(folder / "reference.onnx", reference)
    if any(c.precision is Precision.FP8 for c in configs):
        try:
            run.write_model(folder / "reference_fp8.onnx", fp8_reference(reference))
        except QuantScopeError:
            (folder / "reference_fp8.onnx").unlink(missing_ok=True)  # FP8 rows say why
    op_union = tuple(dict.fromkeys(op for c in configs for op in c.op_types))
    specs = list(dict.fromkeys(c.calibration for c in configs))
    ranges = calibrate_many(folder / "reference.onnx", calib_src, op_union, specs, batch, progress,
                            plan=calibration_plan(reference, calib_src, None, batch, info.fixed_batch is None, settings))
    from onnxruntime.quantization.calibrate import save_tensors_data

    for spec, r in ranges.items():
        save_tensors_data(r, _calibration_cache(folder, spec))
    backend = probe_backend(resolve_backend(provider).backend)
    outputs = [o.name for o in reference.graph.output]
    if info.fixed_batch is None:  # evaluation batches within the memory setting, as a compare's (the latency's too):
        # PP-OCRv4's detector at batch 25 timed 16 pages at once, and its sweep peaked at 2.2 GB where its compare took 1.6
        shapes = {k: shape for k, (shape, _) in eval_src.sample_spec().items()}
        batch = min(batch, samples_within(reference, shapes, backend, settings.memory_bytes) or batch)
    batches, refs = [], []
    with backend.runner(reference) as runner:
        for b in eval_src.batches(batch):
            out = runner.infer(b)
            batches.append(b)
            refs.append({o: out[o] for o in outputs})
    label_arr = load_labels(labels, eval_src.num_samples) if labels is not None else None
    return name, ProbeData(tuple(batches), tuple(refs), label_arr, info.fixed_batch is not None)


def sweep(models: Sequence[str | os.PathLike], calib: str | os.PathLike, *, out_dir: str | os.PathLike,
          data: str | os.PathLike | None = None, labels: str | os.PathLike | None = None,
          methods: Sequence = ("minmax", "entropy", "percentile"), percentiles: Sequence[float] = (99.999,),
          op_type_sets: Sequence[Sequence[str]] = (TRT_INT8_OP_TYPES,), precisions: Sequence = ("int8",), batch_size: int = 8,
          provider: str = "auto", images: ImagePreprocess | None = None, screen_samples: int = SCREEN_SAMPLES, latency_runs: int = 10,
          select: str = "snr_db", progress: ProgressCallback = no_progress, executor=None,
          settings: Settings | None = None, model_names: Sequence[str] | None = None) -> SweepResult:
    """Every configuration of every model; see the module's docstring. executor: an engine.scale executor (serial by
    default). select: the metric that marks the best configuration of each model. model_names: what the table and the
    progress call each model (the dashboard's uploads are stored as model.onnx; default: the file's name)."""
    settings = settings or Settings.from_env()
    executor = executor or SerialExecutor()
    if select not in SELECT_METRICS:
        raise ConfigError(f"Unknown metric '{select}' to pick the best configuration; use one of {', '.join(SELECT_METRICS)}.",
                          option="select")
    configs = _configs(methods, percentiles, op_type_sets, precisions)
    if not configs or not models:
        raise ConfigError("The sweep has nothing to compare; give at least one model and one method.", option="methods")
    out = Path(out_dir)
    resolved = resolve_backend(provider)
    timings: dict[str, float] = {}
    rows: list[SweepRow] = []
    for i, model_path in enumerate(models):
        t0 = time.perf_counter()
        folder = out / f"{i:02d}_{Path(model_path).stem}"
        name, probe_data = _prepare(model_path, calib, data, labels, images, batch_size, resolved.provider, configs, folder,
                                    settings, progress, model_names[i] if model_names else None)
        timings[f"prepare:{name}"] = time.perf_counter() - t0
        t0 = time.perf_counter()

        finished = [0]  # configurations done: a serial sweep's steps belong to the next one

        def on_result(done: int, total: int, name=name, finished=finished) -> None:
            finished[0] = done
            progress(ProgressEvent(Stage.SWEEP, done * STEPS_PER_CONFIG, total * STEPS_PER_CONFIG, f"{name}: configuration {done}/{total} done"))

        def on_step(k: int, name=name, total=len(configs), finished=finished, started=time.perf_counter()) -> None:
            done = finished[0]
            left = ("" if not done and not k else  # before anything ran, the dashboard says the time left comes later
                    "; the time left is known after the first configuration" if not done else
                    f", about {(time.perf_counter() - started) / done * (total - done):.0f} s left")
            progress(ProgressEvent(Stage.SWEEP, done * STEPS_PER_CONFIG + k, total * STEPS_PER_CONFIG,
                                   f"{name}: configuration {done + 1}/{total}, {CONFIG_STEPS[k]}{left}"))

        # the stage starts now (not at the first configuration's end), so a time left is not based on one too few
        progress(ProgressEvent(Stage.SWEEP, 0, len(configs) * STEPS_PER_CONFIG, f"{name}: 0/{len(configs)} configurations done"))
        timed = frozenset({c.graph: c for c in reversed(configs)}.values())  # the first configuration of each structure
        shared = {"model": name, "folder": str(folder), "provider": resolved.provider, "data": probe_data,
                  "screen": screen_samples, "latency_runs": 0 if executor.concurrent else latency_runs, "timed": timed,
                  "resume_bytes": settings.memory_bytes // 2}
        if not executor.concurrent:  # a callback cannot travel to a worker; in this process each step says so
            shared["on_step"] = on_step
        model_rows = executor.map_tasks(_run_config, configs, shared, on_result, device=resolved.backend.capabilities.device)
        # graphs no task timed (concurrent tasks time nothing, as they would slow each other down; or the timed
        # configuration failed): one configuration of each is timed here, one at a time
        if latency_runs > 0:
            late = _untimed(model_rows)
            model_rows = [replace(r, latency_ms=_timed(r.config, folder, resolved.provider, probe_data, latency_runs))
                          if any(r is x for x in late) else r for r in model_rows]
        timed_batch = len(next(iter(probe_data.batches[0].values())))
        model_rows = [r if r.latency_ms is None else replace(r, latency_batch=timed_batch) for r in _shared_latency(model_rows)]
        timings[f"configurations:{name}"] = time.perf_counter() - t0
        scored = [r for r in model_rows if not r.note and getattr(r, select) is not None and not math.isnan(getattr(r, select))]
        best = max(scored, key=lambda r: getattr(r, select), default=None)
        rows += [replace(r, best=r is best) for r in model_rows]
    result = SweepResult(out, tuple(rows), select, timings, executor.name)
    out.mkdir(parents=True, exist_ok=True)
    RunFolder(out).write_json(out / "sweep.json", result.to_dict())
    RunFolder(out).write_frame(out / "sweep.csv", result.to_frame())
    return result


def load_sweep(folder: str | os.PathLike) -> SweepResult:
    path = Path(folder) / "sweep.json"
    try:
        d = json.loads(path.read_text())
        return SweepResult(Path(folder), tuple(SweepRow.from_dict(r) for r in d["rows"]), d["select"], d.get("timings", {}),
                           d.get("executor", "serial"))
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{path} is missing or not a QuantScope sweep; run `quantscope sweep ... --out {folder}` first.",
                          option="sweep") from None
