"""The public workflow: compare (pre-process, calibrate, emit, compare, rank) and rebuild (re-emit, re-compare).

Settings from the environment are read here, once, when a caller does not pass them (the CLI and the dashboard do)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import onnx
import pandas as pd

from engine.backends.select import BackendChoice, change_note, probe_backend, resolve_backend
from engine.compare.graph import observe
from engine.compare.layerwise import run_layerwise
from engine.compare.memory_plan import activation_bytes_per_sample
from engine.compare.reducers import KERNEL_CACHE, device_reducer
from engine.compare.reference_cache import ReferenceCache
from engine.compare.tensor_keys import KEY_COLUMN, key_salt, reusable_stats, tensor_keys
from engine.data.images import ImagePreprocess
from engine.data.loading import load_data, load_labels
from engine.data.source import BatchSource
from engine.diagnose.probes import PoolFactory, local_pool
from engine.diagnose.rank_run import rank_run
from engine.errors import ConfigError, DataError, RunFolderError
from engine.model.graph_reads import nested_op_counts
from engine.model.info import ModelInfo, model_info
from engine.model.loading import DEFAULT_MAX_MODEL_BYTES, read_model
from engine.model.provenance import Origin, origin_text, resolve_node
from engine.progress import ProgressCallback, ProgressEvent, Stage, no_progress
from engine.quantize.calibration import CollectPlan, calibrate, collect_plan
from engine.quantize.calibration_store import CALIBRATION_STORE, calibration_key, keep, keep_base, take, take_base
from engine.quantize.config import FallbackPrecision, Precision, QuantConfig, RangeOverride
from engine.quantize.emit import emit_candidate
from engine.quantize.fp8 import fp8_reference
from engine.quantize.preprocess import preprocess
from engine.results import ComparisonResult, Summary
from engine.run_config import DEFAULT_SCREEN_SAMPLES, RunConfig
from engine.runs import RunFolder
from engine.settings import MB, Settings
from engine.summarize import ranked_layers, summarize

__all__ = ["compare", "rebuild", "load_result", "effective_batch_size", "check_fixed_batch", "load_sources", "check_fallback", "resolve_fallback"]

DataArg = str | os.PathLike | BatchSource
PREPROCESS_CACHE = "preprocess-cache"  # under the runs root


def effective_batch_size(info: ModelInfo, requested: int) -> tuple[int, str | None]:
    if requested < 1:
        raise ConfigError(f"The batch size {requested} is not positive; use 1 or more.")
    b = info.fixed_batch
    if b is not None and b != requested:
        return b, f"The model's batch dimension is fixed at {b}, so batches of {b} were used instead of {requested}."
    return requested, None


def _source(arg: DataArg, info: ModelInfo, images: ImagePreprocess | None, what: str) -> BatchSource:
    if isinstance(arg, (str, os.PathLike)):  # name the file and its role: 'x.npz' (calibration data)
        return load_data(arg, info, images=images, what=f"'{Path(arg).name}' ({what.removeprefix('the ')})")
    from engine.data.validation import check_batch_axes, check_source

    check_batch_axes(info)
    check_source(arg, info, what)
    return arg


def load_sources(calib: DataArg, data: DataArg | None, info: ModelInfo, images: ImagePreprocess | None,
                 batch: int) -> tuple[BatchSource, BatchSource]:
    """(calibration, evaluation) sources, the evaluation data being the calibration data where none is given, each
    checked against the model's inputs and, where the batch is fixed, against its size."""
    calib_src = _source(calib, info, images, "the calibration data")
    eval_src = calib_src if data is None else _source(data, info, images, "the evaluation data")
    check_fixed_batch(eval_src, info, batch, "the evaluation data" if data is not None else "the calibration data")
    check_fixed_batch(calib_src, info, batch, "the calibration data")
    return calib_src, eval_src


def check_fixed_batch(source: BatchSource, info: ModelInfo, batch: int, what: str) -> None:
    if info.fixed_batch is not None and source.num_samples % batch:
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
    screen_samples: int = DEFAULT_SCREEN_SAMPLES,
    settings: Settings | None = None,
    pools: PoolFactory = local_pool,
) -> ComparisonResult:
    """Quantizes `model` with `calib`, compares FP32 vs INT8 layer by layer on `data` (default: `calib`), and ranks the
    fallback candidates by their measured harm on `screen_samples` samples spread over the data (0: skip those probes).
    cache_bytes: reference tensors kept for rebuilds (default: settings.cache_bytes; where QUANTSCOPE_CACHE_MB is unset,
    only for a model that computes them slower than a disk writes and reads them, see compare/cache_policy.py).
    pools: where the ranking's probes run (default: here; an engine.scale executor's probe_pool spreads them)."""
    settings = settings or Settings.from_env()
    timings: dict[str, float] = {}
    cache_auto = cache_bytes is None and settings.cache_auto
    cache_bytes = settings.cache_bytes if cache_bytes is None else cache_bytes
    if screen_samples < 0:
        raise ConfigError(f"The screening subset of {screen_samples} samples is negative; use 0 (no ranking probes) or more.")
    t0 = time.perf_counter()
    choice = resolve_backend(provider)
    proto, files = read_model(model, max_bytes=max_model_bytes) if not isinstance(model, onnx.ModelProto) else (model, "")
    name = model_name or (Path(model).name if not isinstance(model, onnx.ModelProto) else proto.graph.name or "model")
    info = model_info(proto)
    if not any(n.op_type in config.op_types for n in proto.graph.node):
        nested = nested_op_counts(proto.graph, config.op_types)
        if nested:
            raise ConfigError(f"The model's {' and '.join(f'{c} {op}' for op, c in nested.most_common())} nodes all sit inside "
                              "control-flow subgraphs (If, Loop, Scan), which QuantScope does not quantize; export the model "
                              "without control flow around them.")
        raise ConfigError(f"The model has no {', '.join(config.op_types)} node to quantize; choose op types it has "
                          f"(it has {', '.join(list(info.op_histogram)[:8])}) with --op-types.")
    batch, batch_note = effective_batch_size(info, batch_size)
    calib_src, eval_src = load_sources(calib, data, info, images, batch)
    label_arr = None
    if labels is not None:
        label_arr = labels if isinstance(labels, np.ndarray) else load_labels(labels, eval_src.num_samples)
        if len(label_arr) != eval_src.num_samples:
            raise DataError(f"There are {len(label_arr)} labels but the evaluation data has {eval_src.num_samples} samples; give one label per sample.")
    run = RunFolder(out_dir)
    run.create()
    with run.lock():  # one writer per run folder
        run.archive_results()  # a new comparison in an old folder keeps the old results in history/
        run.config.unlink(missing_ok=True)  # until this comparison finishes, the folder is not a run to rebuild
        timings["load"] = time.perf_counter() - t0

        progress(ProgressEvent(Stage.PREPROCESS, 0, 1, "pre-processing the model"))
        t0 = time.perf_counter()
        prepared = preprocess(proto, settings.runs_root / PREPROCESS_CACHE, files)
        if config.precision is Precision.FP8:
            reference = fp8_reference(prepared.model)
            run.write_model(run.reference, reference)
        else:
            reference = prepared.model
            run.write_model(run.reference, reference, stored=prepared.file)
        run.write_provenance(prepared.provenance)
        timings["preprocess"] = time.perf_counter() - t0
        progress(ProgressEvent(Stage.PREPROCESS, 1, 1, "pre-processed (cached)" if prepared.cached else "pre-processed"))

        t0 = time.perf_counter()
        cache_tmp = run.calibration_cache.with_name("calibration_cache.json.tmp")
        cache_tmp.unlink(missing_ok=True)
        store = settings.runs_root / CALIBRATION_STORE
        dynamic = info.fixed_batch is None
        plan = calibration_plan(reference, calib_src, config, batch, dynamic, settings)  # shape inference: 20-30 ms
        key = calibration_key(prepared.digest, calib_src, config, batch, dynamic, plan)
        reused = take(store, key, cache_tmp)
        if reused:
            progress(ProgressEvent(Stage.CALIBRATE, 1, 1, "calibration (cached: same model, data and method)"))
        else:
            calibrate(run.reference, calib_src, config, cache_tmp, batch, progress, dynamic_batch=dynamic, plan=plan)
            keep(store, key, cache_tmp)
        os.replace(cache_tmp, run.calibration_cache)
        timings["calibrate"] = time.perf_counter() - t0

        if label_arr is not None:
            np.save(run.labels, label_arr, allow_pickle=False)
        else:
            run.labels.unlink(missing_ok=True)
        run.ranking.unlink(missing_ok=True)  # a new calibration: the old ranking and all-INT8 graph do not apply
        run.int8_base.unlink(missing_ok=True)
        cfg = RunConfig(model=name, batch_size=batch, requested_provider=provider.lower(), provider=choice.provider,
                        backend=choice.backend.name, quant=config, samples=eval_src.num_samples,
                        calibration_samples=calib_src.num_samples, has_labels=label_arr is not None, cache_bytes=cache_bytes,
                        memory_bytes=settings.memory_bytes, screen_samples=screen_samples, images=images,
                        model_sha256=prepared.digest, data_sha256=eval_src.content_digest() or "", cache_auto=cache_auto)
        cfg = cfg.updated(fallback=resolve_fallback(config.fallback, reference, prepared.provenance, config.op_types))
        check_fallback(cfg, reference)
        # the all-INT8 graph of this calibration and quantization too, where an earlier compare kept it
        had_base = reused and take_base(store, key, cfg.quant, run.int8_base)
        warnings = (batch_note,) if batch_note else ()
        result = _emit_and_compare(run, cfg, reference, choice, label_arr, progress, timings, settings,
                                   fresh_source=eval_src, recalibrated=True, warnings=warnings, pools=pools)
        if not had_base:
            keep_base(store, key, cfg.quant, run.int8_base)
        return result


def calibration_plan(reference: onnx.ModelProto, source: BatchSource, config: QuantConfig | None, batch: int, dynamic: bool,
                  settings: Settings) -> CollectPlan:
    """How calibration cuts the data to stay within the memory budget (collect_plan); config None: a sweep's shared pass."""
    sample_bytes = activation_bytes_per_sample(reference, {k: shape for k, (shape, _) in source.sample_spec().items()})
    return collect_plan(config.calibration if config else None, batch, dynamic, sample_bytes, settings.memory_bytes)


def rebuild(
    run_dir: str | os.PathLike,
    *,
    fallback=None,
    ranges: tuple[RangeOverride, ...] | None = None,
    fallback_precision: FallbackPrecision | str | None = None,
    provider: str | None = None,
    progress: ProgressCallback = no_progress,
    settings: Settings | None = None,
    pools: PoolFactory = local_pool,
) -> ComparisonResult:
    """Re-emits the candidate from the calibration cache and re-compares it against the cached reference. Every argument
    left as None keeps the run's current value (RunConfig.updated). Earlier results move to history/N."""
    settings = settings or Settings.from_env()
    run = RunFolder(run_dir)
    run.require()
    with run.lock():  # one writer per run folder
        cfg = run.read_config()
        precision = FallbackPrecision.parse(fallback_precision) if isinstance(fallback_precision, str) else fallback_precision
        choice = resolve_backend(provider or cfg.provider)
        warnings = tuple(n for n in [change_note(choice, cfg.backend)] if n)
        reference = onnx.load(run.reference)
        if fallback is not None:
            fallback = resolve_fallback(fallback, reference, run.read_provenance(), cfg.quant.op_types)
        new = cfg.updated(fallback=fallback, ranges=ranges, fallback_precision=precision, provider=choice.provider,
                          backend=choice.backend.name)
        check_fallback(new, reference)
        label_arr = np.load(run.labels, allow_pickle=False) if run.labels.is_file() else None
        cache = ReferenceCache(run.cache_dir)
        if not cache.complete:
            raise RunFolderError(f"The batch cache in {run.path} is incomplete (the comparison was interrupted); run `quantscope compare` again.")
        return _emit_and_compare(run, new, reference, choice, label_arr, progress, {}, settings,
                                 fresh_source=None, recalibrated=False, warnings=warnings, pools=pools)


def resolve_fallback(names, reference: onnx.ModelProto, prov: dict[str, tuple[Origin, ...]], op_types) -> frozenset[str]:
    """Fallback names as the user may give them: nodes of the compared graph, or names (or '#index') of nodes in their
    own file, which become the quantized node(s) those were prepared into."""
    ops = {n.name: n.op_type for n in reference.graph.node}
    quantizable = {n for n, op in ops.items() if op in op_types}
    out: set[str] = set()
    for name in names:
        found = [name] if name in ops else resolve_node(name, prov, quantizable)
        if not found and (became := resolve_node(name, prov, set(ops))):
            raise ConfigError(f"The node '{name}' of your file became {'+'.join(became)} "
                              f"({'+'.join(ops[b] for b in became)}) in the compared graph, which "
                              f"{'is' if len(became) == 1 else 'are'} not quantized, so falling it back would change nothing; "
                              f"pick a {'/'.join(op_types)} node from the ranking.", option="fallback")
        out.update(found or [name])  # an unknown name stays: check_fallback says so in one sentence
    return frozenset(out)


def check_fallback(cfg: RunConfig, reference: onnx.ModelProto) -> None:
    """Fallback names must be nodes of the compared graph whose op type is quantized; anything else would change nothing."""
    ops = {n.name: n.op_type for n in reference.graph.node}
    for node in sorted(cfg.quant.fallback):
        if node not in ops:
            raise ConfigError(f"The fallback node '{node}' is not in the compared graph; use a node name from layers.csv.",
                              option="fallback")
        if ops[node] not in cfg.quant.op_types:
            raise ConfigError(f"The node '{node}' ({ops[node]}) is not quantized, so falling it back would change nothing; "
                              f"pick a {'/'.join(cfg.quant.op_types)} node from the ranking.", option="fallback")


def _emit_and_compare(run: RunFolder, cfg: RunConfig, reference: onnx.ModelProto, choice: BackendChoice, labels,
                      progress: ProgressCallback, timings: dict[str, float], settings: Settings, *,
                      fresh_source: BatchSource | None, recalibrated: bool, warnings: tuple[str, ...],
                      pools: PoolFactory = local_pool) -> ComparisonResult:
    progress(ProgressEvent(Stage.QUANTIZE, 0, 1, "emitting the Q/DQ model"))
    t0 = time.perf_counter()
    emitted = emit_candidate(reference, run.reference, run.calibration_cache, cfg.quant, base_cache=run.int8_base)
    timings["quantize"] = time.perf_counter() - t0
    progress(ProgressEvent(Stage.QUANTIZE, 1, 1, "Q/DQ model ready"))
    view = observe(reference, emitted.model, cfg.quant.op_types)
    backend = choice.backend
    reducer = device_reducer(settings.device_library, settings.runs_root / KERNEL_CACHE) if backend.capabilities.device_outputs else None
    cache = ReferenceCache(run.cache_dir, budget=cfg.cache_bytes)
    t0 = time.perf_counter()
    if fresh_source is not None:
        total = batch_count = -(-fresh_source.num_samples // cfg.batch_size)
        pairs = ((inputs, None, k) for k, inputs in enumerate(fresh_source.batches(cfg.batch_size)))
        writer = cache
        known, keys = {}, {}
    else:
        total = cache.meta["batches"]
        batch_count = len(set(cache.meta.get("batch_of") or range(total)))
        # tensors this build computes as the results in the folder measured them (everything before the nodes whose
        # fallback changed): their metrics are read back, not reduced again
        keys = _tensor_keys(emitted.model, backend, cache)
        outputs = set(view.outputs)  # measured every time: the summary reads them from this run
        known = reusable_stats(run.layers, keys, [t for t in view.names if t not in outputs]) if keys else {}
        timings["tensors_reused"] = len(known)
        keep_ref = cache.has_reference and reducer is None  # a device reducer recomputes the reference on the device
        pairs = ((inputs, ref if keep_ref else None, k) for inputs, ref, k in cache.parts())
        writer = None
    lw = run_layerwise(view, reference, emitted.model, backend, pairs, total, reducer=reducer, on_device=reducer is not None,
                       labels=labels, progress=progress, timings=timings, cache=writer, fallback=cfg.quant.fallback,
                       memory_budget=cfg.memory_bytes, dynamic_batch=model_info(reference).fixed_batch is None,
                       auto_cache=cfg.cache_auto, batch_count=batch_count, known=known)
    why = (meta := cache.meta).get("inputs_only_because") if writer is not None and not cache.meta["with_reference"] else None
    # why == "cheaper" warns of nothing: recomputing is the faster choice (cache_policy), and the cache's meta.json says so;
    # shown in the dashboard it told a browser user to set the server's QUANTSCOPE_CACHE_MB
    if why == "budget":
        warnings += (f"The batch cache kept only the inputs: the reference tensors outgrew its budget of "
                     f"{meta['budget_bytes'] // MB} MB (QUANTSCOPE_CACHE_MB, at most half the free disk space), "
                     "so each rebuild runs the FP32 model again.",)
    elif why == "passes":
        warnings += (f"The comparison observed the tensors in {lw.passes} passes to stay within its memory budget "
                     f"({cfg.memory_bytes // MB} MB, QUANTSCOPE_MEMORY_MB), so the batch cache kept only the inputs and each "
                     "rebuild runs the FP32 model again.",)
    timings["compare"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ranking, reused = rank_run(run, cfg, reference, probe_backend(backend), progress, pools, settings.device_library)
    timings["rank"] = time.perf_counter() - t0
    summary = summarize(lw, view, cfg, fp16_nodes=emitted.fp16_nodes, backend_note=choice.note, ranking=ranking,
                        ranking_reused=reused, timings=timings, recalibrated=recalibrated, warnings=warnings)
    prov = run.read_provenance()
    layers = ranked_layers(lw.layers, summary.culprits, summary.held)
    layers["original"] = layers["node"].map(lambda n: origin_text(prov.get(n, ())))
    if fresh_source is not None:  # a new cache: its own name
        keys = _tensor_keys(emitted.model, backend, cache)
    layers[KEY_COLUMN] = [keys.get(t, "") if s == s else "" for t, s in zip(layers["tensor"], layers["snr_db"])]
    if not recalibrated:  # a rebuild replaces the results only now: cancelled or failed before here, the run is as it was
        run.archive_results()
    for filename, content in lw.artifacts.get("files", {}).items():  # TensorRT: the serialized engine, its layers
        run.write_bytes(run.path / filename, content)
    run.write_model(run.candidate, emitted.model)
    run.write_frame(run.layers, layers)
    run.write_config(cfg)  # with the results it produced: a rebuild killed before here leaves the run as it was
    run.write_json(run.summary, summary.to_dict())
    return ComparisonResult(run.path, layers, summary)


def _tensor_keys(candidate: onnx.ModelProto, backend, cache: ReferenceCache) -> dict[str, str]:
    """The keys this build's metrics are measured under (tensor_keys); none where the backend does not repeat itself
    bit for bit or the cache's batches have no name."""
    salt = key_salt(backend.name, cache.generation) if backend.capabilities.repeatable else None
    return tensor_keys(candidate, salt) if salt is not None else {}


def load_result(run_dir: str | os.PathLike) -> ComparisonResult:
    """Reads a run folder's current results (e.g. for the dashboard or a report)."""
    run = RunFolder(run_dir)
    if not run.has_results():
        raise RunFolderError(f"{run.path} has no results yet; run `quantscope compare ... --out {run.path}` first.")
    layers = pd.read_csv(run.layers)
    try:
        summary = Summary.from_dict(run.read_json(run.summary))
    except (KeyError, TypeError, ValueError):
        raise RunFolderError(f"{run.summary} is not a QuantScope summary; run `quantscope compare` again for this folder.") from None
    return ComparisonResult(run.path, layers, summary)
