"""A probe over a run folder: its reference, its calibration cache and its cached batches."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from engine.backends.base import Backend
from engine.backends.select import probe_backend, resolve_backend
from engine.compare.graph import fallback_candidates
from engine.compare.memory_plan import PEAK_FACTOR, live_bytes_per_sample
from engine.compare.reference_cache import ReferenceCache
from engine.diagnose.probe_scoring import ProbeData, join_batches
from engine.diagnose.probes import OutputProbe
from engine.diagnose.spread import spread_order, spread_rows
from engine.diagnose.units import UnitMode, fallback_units
from engine.errors import ConfigError, RunFolderError
from engine.model.info import model_info
from engine.progress import ProgressCallback, ProgressEvent, Stage, no_progress
from engine.quantize.config import FallbackPrecision, QuantConfig
from engine.quantize.emit import emit_candidate
from engine.run_config import RunConfig
from engine.runs import RunFolder

__all__ = ["open_probe", "probe_for_run", "cached_probe_data", "samples_within", "PREPARE_STEPS", "DEFAULT_SENSITIVITY_SAMPLES"]

DEFAULT_SENSITIVITY_SAMPLES = 64  # what sensitivity and the fallback search probe on by default (spread over the run's)
PREPARE_STEPS = 3  # the probe data, the FP32 outputs where the cache has none, the probe session


MERGED_BATCH = 32  # probes run on batches of up to this many samples: one run a probe on a GPU, where runs cost launches


def _whole(parts, outputs: list[str]):
    """(inputs, final outputs) per batch: consecutive parts with one batch number concatenated on axis 0."""
    group: list[tuple[dict, dict]] = []
    current = None

    def joined():
        if len(group) == 1:
            return group[0]
        return ({k: np.concatenate([g[0][k] for g in group]) for k in group[0][0]},
                {k: np.concatenate([g[1][k] for g in group]) for k in group[0][1] if all(k in g[1] for g in group)})

    for inputs, ref, batch in parts:
        if group and batch != current:
            yield joined()
            group = []
        current = batch
        group.append((inputs, {o: ref[o] for o in outputs if o in ref}))
    if group:
        yield joined()


def cached_probe_data(run: RunFolder, reference: onnx.ModelProto, backend: Backend, samples: int | None = None,
                      whole_batches: bool = False, on_batch: Callable[[int, int], None] | None = None,
                      memory_bytes: int | None = None) -> ProbeData:
    """`samples` of the run's cached samples (all if None) spread over them in spread_order, with the reference's final
    outputs, from the cache or, where it kept only inputs, recomputed. whole_batches: whole batches are picked, never
    split or joined (a model whose batch size is fixed: as many as hold `samples`, one at least); otherwise the picked
    samples are joined into batches of up to MERGED_BATCH samples, on the host no more than `memory_bytes` of activations
    take (merge_limit)."""
    cache = ReferenceCache(run.cache_dir)
    if not cache.complete:
        raise RunFolderError(f"The batch cache in {run.path} is incomplete; run `quantscope compare` again.")
    outputs = [o.name for o in reference.graph.output]
    entries = list(_whole(cache.parts(), outputs)) if whole_batches else \
        [(inputs, {o: ref[o] for o in outputs if o in ref}) for inputs, ref, _ in cache.parts()]
    sizes = [len(next(iter(inputs.values()))) for inputs, _ in entries]
    starts = np.cumsum([0, *sizes])
    total = int(starts[-1])
    all_labels = np.load(run.labels, allow_pickle=False)[:total] if run.labels.is_file() else None
    pieces: list[tuple[dict, dict | None]] = []
    picked: list[int] = []  # the samples taken, in order (for the labels)
    if whole_batches:
        want = len(entries) if samples is None else max(1, min(len(entries), samples // max(1, max(sizes, default=1))))
        for e in spread_order(len(entries), want):
            inputs, ref = entries[e]
            pieces.append(({k: np.array(v) for k, v in inputs.items()},
                           {o: np.array(ref[o]) for o in outputs} if all(o in ref for o in outputs) else None))
            picked += range(int(starts[e]), int(starts[e + 1]))
    else:
        for e, i, g in spread_rows(sizes, total if samples is None else samples):
            inputs, ref = entries[e]
            # an output whose axis 0 is not the batch (a CTC recogniser's time-major T x N x classes) cannot be cut to a
            # sample: recomputed below
            whole = all(o in ref and ref[o].shape[:1] == (sizes[e],) for o in outputs)
            pieces.append(({k: np.array(v[i : i + 1]) for k, v in inputs.items()},
                           {o: np.array(ref[o][i : i + 1]) for o in outputs} if whole else None))
            picked.append(g)
        if pieces:
            limit = merge_limit(reference, [pieces[0][0]], backend, memory_bytes)
            pieces = [(join_batches([b for b, _ in group]),
                       None if any(r is None for _, r in group) else join_batches([r for _, r in group]))
                      for group in (pieces[i : i + limit] for i in range(0, len(pieces), limit))]
    batches = [b for b, _ in pieces]
    refs = [r for _, r in pieces]
    if any(r is None for r in refs):  # the cache kept inputs only, or an output could not be cut
        with backend.runner(reference) as runner:
            for i, b in enumerate(batches):  # one run a batch
                out = runner.infer(b)
                refs[i] = {o: out[o] for o in outputs}
                if on_batch is not None:
                    on_batch(i + 1, len(batches))
    labels = all_labels[picked] if all_labels is not None else None
    return ProbeData(tuple(batches), tuple(refs), labels, whole_batches)


def merge_limit(reference: onnx.ModelProto, batches: list[dict], backend: Backend, memory_bytes: int | None) -> int:
    """Samples a probe batch may join: MERGED_BATCH, and on the host no more than samples_within allows (a gated probe
    computes each quantized node both ways). PP-OCRv4's detector (45 MB alive at once a 640 x 640 page, 650 MB in all)
    joined 16 single-page parts, about 145 MB a page in its probe session, and its search took the dashboard's server to
    2.8 GB."""
    if not batches:
        return MERGED_BATCH
    within = samples_within(reference, {k: v.shape[1:] for k, v in batches[0].items()}, backend, memory_bytes)
    return MERGED_BATCH if within is None else min(MERGED_BATCH, within)


def samples_within(reference: onnx.ModelProto, sample_shapes: dict[str, tuple[int, ...]], backend: Backend,
                   memory_bytes: int | None) -> int | None:
    """The most samples a run of `reference` (or a build of it) may take on the host for `memory_bytes`: PEAK_FACTOR
    times its most activations alive at once (memory_plan.live_bytes_per_sample), one at least. None: no bound (no
    budget, device memory, which is the runtime's business, or shapes unknown)."""
    if memory_bytes is None or backend.capabilities.device_outputs:
        return None
    live = live_bytes_per_sample(reference, sample_shapes)
    return max(1, int(memory_bytes // (PEAK_FACTOR * live))) if live else None


@dataclass(frozen=True)
class RunEmitter:
    """emit(fallback) for a run folder: picklable, so a probe can travel to a worker process on this machine."""

    reference_path: Path
    calibration_cache: Path
    base_cache: Path
    config: QuantConfig

    def __call__(self, fallback: frozenset[str]) -> onnx.ModelProto:
        reference = onnx.load(self.reference_path)
        return emit_candidate(reference, self.reference_path, self.calibration_cache, self.config.with_fallback(fallback),
                              base_cache=self.base_cache).model


def probe_for_run(run: RunFolder, cfg: RunConfig, reference: onnx.ModelProto, backend: Backend, units: UnitMode,
                  samples: int | None, device_library: str | None = None,
                  on_batch: Callable[[int, int], None] | None = None) -> OutputProbe | None:
    """A probe (not yet entered) over `samples` of the run's cached samples (spread over them), every fallback candidate of the run's
    quantization in a unit; None when nothing is quantized. A unit in fallback takes the run's fallback precision."""
    config = cfg.quant.with_fallback(())
    emit = RunEmitter(run.reference, run.calibration_cache, run.int8_base, config)
    candidate = emit_candidate(reference, run.reference, run.calibration_cache, config, base_cache=run.int8_base).model
    nodes = fallback_candidates(candidate, config.op_types)
    if not nodes:
        return None
    data = cached_probe_data(run, reference, backend, samples, whole_batches=model_info(reference).fixed_batch is not None,
                             on_batch=on_batch, memory_bytes=cfg.memory_bytes)
    return OutputProbe(backend, reference, candidate, fallback_units(reference, nodes, units), data, emit,
                       fp16=config.fallback_precision is FallbackPrecision.FP16, device_library=device_library,
                       resume_bytes=cfg.memory_bytes // 2)


def open_probe(run_dir: str | os.PathLike, provider: str | None = None, units: UnitMode = UnitMode.NODE,
               samples: int | None = None, progress: ProgressCallback = no_progress) -> tuple[RunFolder, RunConfig, OutputProbe]:
    """The run folder, its settings and a probe over it, on the run's resolved backend (or on ONNX Runtime where that
    backend cannot switch Q/DQ at run time). progress: the PREPARE_PROBES stage (what a user waited on, unannounced,
    for 49 s on a layout detector whose cache kept inputs only: its reference outputs are computed again here)."""
    run = RunFolder(run_dir)
    run.require()
    cfg = run.read_config()
    progress(ProgressEvent(Stage.PREPARE_PROBES, 0, PREPARE_STEPS,
                           f"emitting the all-{cfg.quant.precision.label} candidate and reading the cached samples"))
    backend = probe_backend(resolve_backend(provider or cfg.provider).backend)

    def on_batch(done: int, total: int) -> None:
        progress(ProgressEvent(Stage.PREPARE_PROBES, 1, PREPARE_STEPS,
                               f"the FP32 model's outputs, which the batch cache did not keep: batch {done}/{total}"))

    probe = probe_for_run(run, cfg, onnx.load(run.reference), backend, units, samples, on_batch=on_batch)
    if probe is None:
        raise ConfigError(f"Nothing in {run.path} is quantized ({', '.join(cfg.quant.op_types)}), so there is nothing to probe; "
                          "compare again with other --op-types.", option="op_types")
    progress(ProgressEvent(Stage.PREPARE_PROBES, 2, PREPARE_STEPS, "opening the probe session and timing its first probe"))
    return run, cfg, probe
