"""The public workflow: compare (pre-process, calibrate, emit, compare) and rebuild (re-emit, re-compare)."""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pandas as pd

from engine.backends.select import resolve_backend
from engine.compare.graph import observe
from engine.compare.layerwise import LayerwiseRun, cached_stream, reference_stream, run_layerwise
from engine.compare.ranking import culprit_sentence, rank_culprits
from engine.compare.reference_cache import DEFAULT_CACHE_BYTES, MB, ReferenceCache, configured_cache_bytes
from engine.compare.tensor_stats import METRIC_COLUMNS
from engine.data.images import ImagePreprocess
from engine.data.loading import load_data, load_labels
from engine.data.source import BatchSource
from engine.errors import ConfigError, DataError, RunFolderError
from engine.model.info import ModelInfo, model_info
from engine.model.loading import DEFAULT_MAX_MODEL_BYTES, load_model
from engine.progress import ProgressCallback, ProgressEvent, Stage, no_progress
from engine.quantize.calibration import calibrate
from engine.quantize.config import FallbackPrecision, QuantConfig, RangeOverride
from engine.quantize.emit import emit_candidate
from engine.quantize.preprocess import preprocess
from engine.results import ComparisonResult, Culprit, OutputMetrics, Summary
from engine.runs import RunFolder

__all__ = ["compare", "rebuild", "load_result", "effective_batch_size"]

DataArg = str | os.PathLike | BatchSource


def effective_batch_size(info: ModelInfo, requested: int) -> tuple[int, str | None]:
    if requested < 1:
        raise ConfigError(f"The batch size {requested} is not positive; use 1 or more.")
    b = _fixed_batch_dim(info)
    if b is not None:
        if b != requested:
            return b, f"The model's batch dimension is fixed at {b}, so batches of {b} were used instead of {requested}."
    return requested, None


def _fixed_batch_dim(info: ModelInfo) -> int | None:
    """The batch size a model's inputs fix on axis 0, or None when axis 0 is dynamic."""
    return next((t.shape[0] for t in info.inputs if t.shape and isinstance(t.shape[0], int)), None)


def _source(arg: DataArg, info: ModelInfo, images: ImagePreprocess | None, what: str) -> BatchSource:
    if isinstance(arg, (str, os.PathLike)):  # name the file and its role: 'x.npz' (calibration data)
        return load_data(arg, info, images=images, what=f"'{Path(arg).name}' ({what.removeprefix('the ')})")
    from engine.data.validation import check_source

    check_source(arg, info, what)
    return arg


def _check_fixed_batch(source: BatchSource, info: ModelInfo, batch: int, what: str) -> None:
    if _fixed_batch_dim(info) is not None and source.num_samples % batch:
        raise DataError(f"The model's batch dimension is fixed at {batch} but {what} has {source.num_samples} samples; "
                        f"provide a multiple of {batch} samples.")


def compare(
    model: str | os.PathLike | onnx.ModelProto,
    calib: DataArg,
    *,
    out_dir: str | os.PathLike,
    data: DataArg | None = None,
    labels: str | os.PathLike | np.ndarray | None = None,
    config: QuantConfig = QuantConfig(),
    batch_size: int = 8,
    provider: str = "auto",
    images: ImagePreprocess | None = None,
    model_name: str | None = None,
    progress: ProgressCallback = no_progress,
    cache_bytes: int | None = None,
    max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES,
) -> ComparisonResult:
    """Quantizes `model` with `calib`, compares FP32 vs INT8 layer by layer on `data` (default: `calib`).
    cache_bytes: reference tensors kept for rebuilds (default QUANTSCOPE_CACHE_MB, see reference_cache)."""
    timings: dict[str, float] = {}
    cache_bytes = configured_cache_bytes() if cache_bytes is None else cache_bytes
    t0 = time.perf_counter()
    choice = resolve_backend(provider)
    proto = load_model(model, max_bytes=max_model_bytes) if not isinstance(model, onnx.ModelProto) else model
    name = model_name or (Path(model).name if not isinstance(model, onnx.ModelProto) else proto.graph.name or "model")
    info = model_info(proto)
    if not any(n.op_type in config.op_types for n in proto.graph.node):
        raise ConfigError(f"The model has no {', '.join(config.op_types)} node to quantize; choose op types it has "
                          f"(it has {', '.join(list(info.op_histogram)[:8])}) with --op-types.")
    batch, batch_note = effective_batch_size(info, batch_size)
    calib_src = _source(calib, info, images, "the calibration data")
    eval_src = calib_src if data is None else _source(data, info, images, "the evaluation data")
    _check_fixed_batch(eval_src, info, batch, "the evaluation data" if data is not None else "the calibration data")
    _check_fixed_batch(calib_src, info, batch, "the calibration data")
    label_arr = None
    if labels is not None:
        label_arr = labels if isinstance(labels, np.ndarray) else load_labels(labels, eval_src.num_samples)
        if len(label_arr) != eval_src.num_samples:
            raise DataError(f"There are {len(label_arr)} labels but the evaluation data has {eval_src.num_samples} samples; give one label per sample.")
    run = RunFolder(out_dir)
    run.create()
    with run.lock():  # one writer per run folder
        run.archive_results()  # a new comparison in an old folder keeps the old results in history/
        timings["load"] = time.perf_counter() - t0

        progress(ProgressEvent(Stage.PREPROCESS, 0, 1, "pre-processing the model"))
        t0 = time.perf_counter()
        reference = preprocess(proto)
        run.write_model(run.reference, reference)
        timings["preprocess"] = time.perf_counter() - t0
        progress(ProgressEvent(Stage.PREPROCESS, 1, 1, "pre-processed"))

        t0 = time.perf_counter()
        cache_tmp = run.calibration_cache.with_name("calibration_cache.json.tmp")
        cache_tmp.unlink(missing_ok=True)
        calibrate(run.reference, calib_src, config, cache_tmp, batch, progress)
        os.replace(cache_tmp, run.calibration_cache)
        timings["calibrate"] = time.perf_counter() - t0

        if label_arr is not None:
            np.save(run.labels, label_arr, allow_pickle=False)
        else:
            run.labels.unlink(missing_ok=True)
        run.write_json(run.config, {
            "version": 1, "model": name, "batch_size": batch, "provider": provider, "quant": config.to_dict(),
            "samples": eval_src.num_samples, "calibration_samples": calib_src.num_samples,
            "cache_bytes": cache_bytes, "has_labels": label_arr is not None,
        })
        warnings = (batch_note,) if batch_note else ()
        return _emit_and_compare(run, reference, config, choice, batch, label_arr, progress, timings, name,
                                 fresh_source=eval_src, recalibrated=True, warnings=warnings, cache_bytes=cache_bytes)


def rebuild(
    run_dir: str | os.PathLike,
    *,
    fallback,
    ranges: tuple[RangeOverride, ...] | None = None,
    fallback_precision: FallbackPrecision | str | None = None,
    provider: str | None = None,
    progress: ProgressCallback = no_progress,
) -> ComparisonResult:
    """Re-emits the candidate with a new fallback set from the calibration cache and re-compares only the
    candidate against the cached reference. Earlier results move to history/N."""
    run = RunFolder(run_dir)
    run.require()
    with run.lock():  # one writer per run folder
        cfg = run.read_json(run.config)
        config = QuantConfig.from_dict(cfg["quant"])
        precision = FallbackPrecision.parse(fallback_precision) if isinstance(fallback_precision, str) else fallback_precision
        config = config.with_fallback(fallback, precision)
        if ranges is not None:
            config = replace(config, ranges=tuple(ranges))
        reference = onnx.load(run.reference)
        choice = resolve_backend(provider or cfg["provider"])
        label_arr = np.load(run.labels, allow_pickle=False) if run.labels.is_file() else None
        cache = ReferenceCache(run.cache_dir)
        if not cache.complete:
            raise RunFolderError(f"The batch cache in {run.path} is incomplete (the comparison was interrupted); run `quantscope compare` again.")
        run.archive_results()
        return _emit_and_compare(run, reference, config, choice, cfg["batch_size"], label_arr, progress, {}, cfg["model"],
                                 fresh_source=None, recalibrated=False, warnings=(), cache_bytes=cfg.get("cache_bytes", DEFAULT_CACHE_BYTES))


def _emit_and_compare(run: RunFolder, reference: onnx.ModelProto, config: QuantConfig, choice, batch: int, labels,
                      progress: ProgressCallback, timings: dict[str, float], name: str, *, fresh_source: BatchSource | None,
                      recalibrated: bool, warnings: tuple[str, ...], cache_bytes: int) -> ComparisonResult:
    progress(ProgressEvent(Stage.QUANTIZE, 0, 1, "emitting the Q/DQ model"))
    t0 = time.perf_counter()
    emitted = emit_candidate(reference, run.reference, run.calibration_cache, config)
    timings["quantize"] = time.perf_counter() - t0
    progress(ProgressEvent(Stage.QUANTIZE, 1, 1, "Q/DQ model ready"))
    view = observe(reference, emitted.model)
    cache = ReferenceCache(run.cache_dir)
    backend = choice.backend
    if hasattr(backend, "fallback_layers"):  # TensorRT's classic path sets these layers' precision at build time
        backend.fallback_layers = frozenset(config.fallback)
    t0 = time.perf_counter()
    if getattr(backend, "keeps_outputs_on_device", False):
        from engine.compare.layerwise_device import run_layerwise_on_device

        if fresh_source is not None:
            total, inputs, write = -(-fresh_source.num_samples // batch), fresh_source.batches(batch), cache
        else:
            total, inputs, write = cache.meta["batches"], (inp for inp, _ in cache.batches()), None
        lw = run_layerwise_on_device(view, reference, emitted.model, backend, inputs, total, labels, progress, timings, write)
    else:
        if fresh_source is not None:
            total = -(-fresh_source.num_samples // batch)
            pairs = reference_stream(reference, view, backend, fresh_source.batches(batch), cache, timings, cache_bytes)
        elif cache.has_reference:
            total = cache.meta["batches"]
            pairs = cached_stream(cache)
        else:  # the cache kept inputs only: recompute the reference from them
            total = cache.meta["batches"]
            pairs = reference_stream(reference, view, backend, (inp for inp, _ in cache.batches()), None, timings)
        lw = run_layerwise(view, emitted.model, backend, pairs, total, labels, progress, timings)
        if fresh_source is not None and not (meta := cache.meta)["with_reference"]:  # this run just wrote the cache
            warnings += (f"The batch cache kept only the inputs: the reference tensors outgrew its budget of "
                         f"{meta['budget_bytes'] // MB} MB (QUANTSCOPE_CACHE_MB, at most half the free disk space), "
                         "so each rebuild runs the FP32 model again.",)
    timings["compare"] = time.perf_counter() - t0
    summary = _summary(lw, view, config, emitted, choice, batch, name, timings, recalibrated, warnings)
    if hasattr(backend, "save_artifacts"):  # TensorRT: serialized engine + layer information
        summary = replace(summary, extra={**summary.extra, "engine": backend.save_artifacts(run.path)})
    layers = lw.layers
    run.write_model(run.candidate, emitted.model)
    run.write_frame(run.layers, layers)
    run.write_json(run.summary, summary.to_dict())
    return ComparisonResult(run.path, layers, summary)


def _summary(lw: LayerwiseRun, view, config: QuantConfig, emitted, choice, batch: int, name: str,
             timings: dict[str, float], recalibrated: bool, warnings: tuple[str, ...]) -> Summary:
    ranked = rank_culprits(lw.layers)
    culprits = tuple(
        Culprit(r.node, r.op_type, float(r.introduced_db), float(r.snr_db), float(r.input_snr_db), float(r.cosine), bool(r.quantized))
        for r in ranked.head(20).itertuples()
    )
    outputs = {
        o: OutputMetrics.from_stats(o, s, lw.marked_outputs[o].snr_db if o in lw.marked_outputs else math.nan)
        for o, s in lw.outputs.items()
    }
    notes = list(warnings)
    for o, m in outputs.items():
        if m.fusion_disagrees:
            notes.append(f"Output '{o}' has SNR {m.snr_db:.1f} dB in the unmodified candidate but {m.marked_run_snr_db:.1f} dB "
                         "with every tensor marked: marking outputs changed fusion, so trust the unmodified figure.")
    if lw.shape_mismatches:
        notes.append(f"{len(lw.shape_mismatches)} tensor(s) differ in shape between reference and candidate and were not compared.")
    if lw.unobservable:
        notes.append(f"{len(lw.unobservable)} tensor(s) were fused away by {choice.backend.name} and are not observable; "
                     "they are listed in not_observable, never paired with another tensor.")
    if view.missing_in_candidate:
        notes.append(f"{len(view.missing_in_candidate)} reference tensor(s) have no same-named tensor in the candidate (not observable).")
    headline = culprit_sentence(ranked.iloc[0]) if len(ranked) else "No node adds measurable error: the candidate matches the reference."
    return Summary(
        model=name, backend=choice.backend.name, backend_note=choice.note, samples=lw.samples, batches=lw.batches,
        batch_size=batch, outputs=outputs, task=lw.task.to_dict(), culprits=culprits, headline=headline,
        fallback=tuple(sorted(config.fallback)), fallback_precision=config.fallback_precision.value,
        fp16_nodes=emitted.fp16_nodes, quantized_nodes=len(view.quantized_nodes), config=config.to_dict(),
        timings=timings, not_observable=view.missing_in_candidate + lw.unobservable + lw.shape_mismatches, warnings=tuple(notes),
        recalibrated=recalibrated, extra={"unmodified_candidate_batches": lw.unmodified_batches},
    )


def load_result(run_dir: str | os.PathLike) -> ComparisonResult:
    """Reads a run folder's current results (e.g. for the dashboard or a report)."""
    run = RunFolder(run_dir)
    if not run.has_results():
        raise RunFolderError(f"{run.path} has no results yet; run `quantscope compare ... --out {run.path}` first.")
    layers = pd.read_csv(run.layers)
    d = run.read_json(run.summary)
    return ComparisonResult(run.path, layers, summary_from_dict(d))


def _f(x) -> float:
    return float(x) if x is not None else math.nan


def summary_from_dict(d: dict) -> Summary:
    outputs = {k: OutputMetrics(**{c: _f(v[c]) for c in METRIC_COLUMNS}, elements=int(v.get("elements", 0)), name=k,
                                marked_run_snr_db=_f(v["marked_run_snr_db"])) for k, v in d["outputs"].items()}
    culprits = tuple(Culprit(c["node"], c["op_type"], _f(c["introduced_db"]), _f(c["snr_db"]), _f(c["input_snr_db"]),
                             _f(c["cosine"]), bool(c["quantized"])) for c in d["culprit_details"])
    return Summary(
        model=d["model"], backend=d["backend"], backend_note=d.get("backend_note", ""), samples=d["samples"], batches=d["batches"],
        batch_size=d["batch_size"], outputs=outputs, task=d["task"], culprits=culprits, headline=d["headline"],
        fallback=tuple(d["fallback"]), fallback_precision=d["fallback_precision"], fp16_nodes=tuple(d.get("fp16_nodes", ())),
        quantized_nodes=d["quantized_nodes"], config=d["config"], timings=d["timings"],
        not_observable=tuple(d.get("not_observable", ())), warnings=tuple(d.get("warnings", ())), recalibrated=d.get("recalibrated", True),
        extra={k: d[k] for k in ("unmodified_candidate_batches", "engine") if k in d},
    )

