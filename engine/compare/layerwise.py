"""The streaming comparison, one loop for every backend: per batch, the reference tensors (cached, or from a run of
the reference with every observed tensor marked), the candidate with every observed tensor marked, and the unmodified
candidate for the final outputs. A reducer turns each pair of tensors into sufficient statistics where the tensors
are (host numpy, or GPU kernels for outputs kept in device memory); nothing but per-tensor accumulators outlives a
batch."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np
import onnx
import pandas as pd

from engine.backends.base import Backend
from engine.backends.open_runners import open_runners
from engine.compare.cache_policy import recompute_is_cheaper
from engine.compare.graph import GraphView
from engine.compare.memory_plan import (
    PASS_BYTES,
    MemoryPlan,
    loop_budget,
    parts,
    plan_memory,
    sample_types,
    static_bytes_per_sample,
)
from engine.compare.metrics import METRIC_COLUMNS, Accumulator, TensorStats
from engine.compare.output_channels import ChannelAccumulator, ChannelSplit
from engine.compare.ranking import input_snr, introduced_db
from engine.compare.reducers import HostReducer, Reducer
from engine.compare.reference_cache import ReferenceCache
from engine.compare.task_metrics import TaskAccumulator, TaskMetrics, task_output
from engine.data.source import Batch
from engine.progress import ProgressCallback, ProgressEvent, Stage, TimeLeft, no_progress, samples_text

__all__ = ["LayerwiseRun", "run_layerwise", "LAYER_COLUMNS", "layer_frame"]

LAYER_COLUMNS = ("tensor", "node", "op_type", "quantized", *METRIC_COLUMNS[:3], "introduced_db", *METRIC_COLUMNS[3:])

Pair = tuple[Batch, "dict[str, np.ndarray] | None"]  # inputs, and the reference tensors when already known
Part = tuple[Batch, "dict[str, np.ndarray] | None", int]  # the same, for a part of batch number k


@dataclass
class LayerwiseRun:
    layers: pd.DataFrame
    outputs: dict[str, TensorStats]
    marked_outputs: dict[str, TensorStats]
    task: TaskMetrics
    batches: int
    samples: int
    timings: dict[str, float] = field(default_factory=dict)
    shape_mismatches: tuple[str, ...] = ()
    unobservable: tuple[str, ...] = ()  # tensors the backend fused away (e.g. TensorRT): reported, never paired
    unmodified_batches: int = 0  # batches on which the unmodified candidate ran (see run_layerwise)
    artifacts: dict = field(default_factory=dict)  # what the unmodified candidate's runner handed back (TensorRT engine)
    passes: int = 1  # marked passes per batch (see memory_plan)
    micro_batch: int | None = None  # samples per marked pass, where batches were split (see memory_plan)
    channel_splits: tuple[ChannelSplit, ...] = ()  # final outputs whose small-scale channels the SNR hides
    float_outputs: tuple[str, ...] = ()  # the final outputs of a float type (what the ranking scores; not ArgMax labels)
    input_independent: bool = False  # every sample's FP32 float outputs were the same (2 samples at least): nothing to compare


class _Clock:
    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings

    def add(self, key: str, t0: float) -> None:
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0


def run_layerwise(
    view: GraphView,
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    backend: Backend,
    pairs: Iterator[Pair] | Iterator[Part],
    total_batches: int,
    *,
    reducer: Reducer | None = None,
    on_device: bool = False,
    labels: np.ndarray | None = None,
    progress: ProgressCallback = no_progress,
    timings: dict[str, float] | None = None,
    cache: ReferenceCache | None = None,
    fallback: frozenset[str] = frozenset(),
    memory_budget: int | None = None,
    dynamic_batch: bool = True,
    auto_cache: bool = False,
    batch_count: int | None = None,
    known: Mapping[str, TensorStats] | None = None,
) -> LayerwiseRun:
    """pairs: (inputs, reference tensors or None[, batch number]): a batch, or a part of one (the cache's entries).
    Where the reference is None it runs here, marked, on the backend.
    on_device: marked runs keep their outputs in device memory and `reducer` reads them there.
    cache: written with every part's inputs (and, for host tensors, the reference tensors) for later rebuilds.
    auto_cache: the reference tensors go into the cache only where computing them again would cost more (cache_policy).
    memory_budget: bytes the observed tensors of a pass may take (see memory_plan); None: no limit.
    known: metrics of observed tensors an earlier build measured and this one computes the same way (tensor_keys):
    neither marked nor reduced again. Unmarking them changes no other tensor's value: the reference is the
    pre-processed graph, already optimized as far as our sessions' level optimizes it, and the candidate's marked
    tensors sit between its Q/DQ pairs or FP16 casts, where no fusion reaches (tests/engine/test_tensor_keys.py
    checks the rows equal a full rebuild's bit for bit). Fewer marks copy less and, on a fixed batch, need fewer
    passes."""
    reducer = reducer or HostReducer()
    clock = _Clock(timings if timings is not None else {})
    known = dict(known or {})
    names = [t for t in view.names if t not in known]
    cached = list(dict.fromkeys([*names, *view.outputs]))  # integer outputs (an ArgMax label) too: a rebuild reports them
    acc = {t: Accumulator() for t in names}
    final = {o: Accumulator() for o in view.outputs}
    channels = {o: ChannelAccumulator() for o in view.outputs}  # outputs whose channels differ in scale (a detector's)
    final_reducer = HostReducer()
    mismatched: set[str] = set()
    missing: set[str] = set()
    task: TaskAccumulator | None = None
    entries = samples = 0
    batch_ids: set[int] = set()
    started = first_done = time.perf_counter()
    # The final outputs must be those of the unmodified candidate (marking tensors can change fusion). For each
    # input shape its first batch runs both; when the unmodified outputs equal the marked run's bit for bit, fusion
    # did not change them, and later batches of that shape reuse the marked run's outputs instead of running again.
    # A difference (or a non-deterministic backend) keeps the unmodified run on every batch.
    identical: dict[tuple, bool] = {}
    unmodified = 0
    float_outputs: tuple[str, ...] = ()
    # the first sample's FP32 float outputs, while every later sample's equal them (a model whose weights are all one
    # constant outputs the same for any input: a trial's as-found ShuffleNet read 'exact' SNR and a culprit)
    same_as_first: dict[str, np.ndarray] | None = {}
    plan: MemoryPlan | None = None
    runs = 1  # marked runs a batch (parts times passes), once the plan is known
    pace = TimeLeft()  # within batches of several runs: the time left from the runs' pace, the first batch's too
    current: int | None = None

    def close_batch() -> None:
        for a in acc.values():
            a.close_batch()
        for a in final.values():
            a.close_batch()

    # total_batches counts the entries of `pairs`; where they are parts of batches (a rebuild reads the cache's
    # micro-batches), batch_count says how many batches they make, and progress names both: a rebuild of 3 batches of 25
    # said "batch 3/64"
    batch_count = batch_count if batch_count is not None else total_batches
    split = batch_count != total_batches

    def where(entry: int) -> str:  # `entry`: the entries done (a batch event) or the one under way (a pass event)
        return (f"batch {len(batch_ids)}/{batch_count}, part {entry}/{total_batches}" if split
                else f"batch {entry}/{total_batches}")

    progress(ProgressEvent(Stage.COMPARE, 0, total_batches, f"starting sessions (0/{batch_count} batches)"))
    with ExitStack() as stack:
        ref_runners: dict[int, object] = {}
        cand_runners: dict[int, object] = {}
        cand_plain = None
        warm: dict[str, dict] = {}  # the first part's outputs of the runners opened for it (see below)

        def runner(store: dict, g: int, model: onnx.ModelProto, group: tuple[str, ...], **kw):
            if g not in store:
                t0 = time.perf_counter()
                store[g] = stack.enter_context(backend.runner(model, observe=group, on_device=on_device, **kw))
                clock.add("sessions", t0)
            return store[g]

        for item in pairs:
            inputs, ref = item[0], item[1]
            batch_id = item[2] if len(item) > 2 else entries
            if current is not None and batch_id != current:
                close_batch()
            current = batch_id
            batch_ids.add(batch_id)
            n = len(next(iter(inputs.values())))
            if plan is None:
                t0 = time.perf_counter()
                budget = None if memory_budget is None else loop_budget(memory_budget, cache is not None and not on_device)
                # batch-1 shape inference, run at most once, for the plan and the cache policy alike
                types = functools.cache(functools.partial(sample_types, reference, {k: v.shape for k, v in inputs.items()}))
                plan = _plan(names, reference, backend, inputs, ref, budget, dynamic_batch, on_device, types)
                runs = len(parts(n, plan.micro)) * len(plan.groups)  # marked runs of a whole batch: progress counts them
                clock.add("plan", t0)
                # the sessions of the first pass, opened side by side where the backend allows, each with its first
                # run (its warm-up) on the first part: "sessions" times both, and those runs are not done again below
                t0 = time.perf_counter()
                first = plan.groups[0]
                specs = [(candidate, {"fallback": fallback}),
                         (candidate, {"observe": first, "on_device": on_device, "fallback": fallback})]
                if ref is None:
                    specs.append((reference, {"observe": first, "on_device": on_device}))
                sl = parts(n, plan.micro)[0]
                opened, outs = open_runners(stack, backend, specs, feed={k: v[sl] for k, v in inputs.items()})
                cand_plain, cand_runners[0] = opened[:2]
                warm = {"plain": outs[0], "candidate": outs[1]}
                if ref is None:
                    ref_runners[0], warm["reference"] = opened[2], outs[2]
                clock.add("sessions", t0)
                if cache is not None:
                    cheaper = auto_cache and not on_device and plan.passes == 1 and recompute_is_cheaper(
                        reference, types(), plan.bytes_per_sample)
                    cache.reset(inputs_only=on_device or plan.passes > 1 or cheaper,
                                why="device" if on_device else "passes" if plan.passes > 1 else "cheaper")
                    stack.callback(cache.stop_writer)  # a cancel or an error on the way out leaves no writer thread behind
            steps = parts(n, plan.micro)
            for step, sl in enumerate(steps):
                sub = {k: v[sl] for k, v in inputs.items()} if sl.stop - sl.start < n else inputs
                given = None if ref is None else ({k: v[sl] for k, v in ref.items()} if sub is not inputs else ref)
                ref_out: dict[str, np.ndarray] = {}
                cand_out: dict[str, np.ndarray] = {}
                fresh: dict = {}
                for g, group in enumerate(plan.groups):
                    if given is None:
                        t0 = time.perf_counter()
                        r = warm.pop("reference") if "reference" in warm else runner(ref_runners, g, reference, group).infer(sub)
                        clock.add("reference", t0)
                        if plan.passes == 1:
                            fresh = r
                    else:
                        r = given
                    t0 = time.perf_counter()
                    c = warm.pop("candidate") if "candidate" in warm else \
                        runner(cand_runners, g, candidate, group, fallback=fallback).infer(sub)
                    clock.add("candidate", t0)
                    t0 = time.perf_counter()
                    used = []
                    for t in group:
                        if t in mismatched or t in missing:
                            continue
                        if t not in r or t not in c:  # fused away by the backend: not observable
                            missing.add(t)
                        elif reducer.shape(r[t]) != reducer.shape(c[t]):
                            mismatched.add(t)
                        else:
                            used.append(t)
                    stats, counts, sizes = reducer.reduce([(r[t], c[t]) for t in used], used)
                    for k, t in enumerate(used):
                        acc[t].add_part(stats[k], int(sizes[k]), None if counts is None else counts[k])
                    if g == 0:
                        ref_out = {o: reducer.to_host(r[o]) for o in view.outputs if o in r}
                        cand_out = {o: reducer.to_host(c[o]) for o in view.outputs if o in c}
                    del r, c
                    clock.add("metrics", t0)
                    within = step * len(plan.groups) + g + 1  # runs of this batch done
                    if within < len(steps) * len(plan.groups):  # a batch of several runs: the cancel's chance between them
                        done = entries * runs + within
                        left = pace.seconds(done, total_batches * runs)
                        # counted in runs, so one batch of 16 samples in 64 runs fills the bar as they go (it stayed empty)
                        progress(ProgressEvent(Stage.COMPARE, done, total_batches * runs, where(entries + 1) + (
                            f", {samples_text(sl.start, sl.stop, n)}" if len(steps) > 1 else "") + (
                            f", pass {g + 1}/{len(plan.groups)}" if len(plan.groups) > 1 else "") + (
                            f", about {left:.0f} s left" if left is not None else "")))
                if cache is not None and given is None:
                    t0 = time.perf_counter()
                    cache.append(sub, {k: fresh[k] for k in cached if k in fresh} if plan.passes == 1 and not on_device else {},
                                 batch_id, finals=ref_out)
                    clock.add("cache_write", t0)
                del fresh

                t0 = time.perf_counter()
                shapes = tuple(sorted((k, v.shape) for k, v in sub.items()))
                if identical.get(shapes):
                    plain = cand_out
                else:
                    plain = warm.pop("plain") if "plain" in warm else cand_plain.infer(sub)
                    unmodified += 1
                    if shapes not in identical:  # checked once per shape, not on every batch that already differed
                        identical[shapes] = all(o in cand_out and o in plain and cand_out[o].shape == plain[o].shape and
                                                np.array_equal(cand_out[o], plain[o]) for o in view.outputs)
                task = _update_final_outputs(final, final_reducer, task, view, ref_out, plain, labels, channels,
                                             sl.stop - sl.start)
                if not float_outputs:
                    float_outputs = tuple(o for o in view.outputs if o in ref_out and np.issubdtype(ref_out[o].dtype, np.floating))
                same_as_first = _still_the_same(same_as_first, ref_out, float_outputs, sl.stop - sl.start)
                clock.add("final_outputs", t0)
            entries += 1
            samples += n
            if entries == 1:
                first_done = time.perf_counter()  # the first batch carries each session's warm-up
            eta = (time.perf_counter() - started) / entries * (total_batches - entries)
            if runs > 1:  # the runs' pace, as the events between them say (the two estimates read 63 s, then 36 s)
                eta = pace.seconds(entries * runs, total_batches * runs) or eta
            progress(ProgressEvent(Stage.COMPARE, entries * runs, total_batches * runs, f"{where(entries)}, about {eta:.0f} s left"))
        close_batch()
        for t, counts in reducer.take_counts().items():  # histograms a device reducer kept on the device
            acc[t].hist.counts += counts
        artifacts = cand_plain.artifacts() if cand_plain is not None else {}
    if entries > 1:
        clock.timings["steady_batches"] = entries - 1
        clock.timings["steady_loop"] = time.perf_counter() - first_done
    if cache is not None:
        if plan is None:
            cache.reset(inputs_only=on_device)
        cache.finish(samples)
    stats_by_tensor = {t: a.result() for t, a in acc.items() if t not in mismatched and t not in missing and a.batches}
    stats_by_tensor.update(known)
    return LayerwiseRun(
        layers=layer_frame(view, stats_by_tensor),
        outputs={o: a.result() for o, a in final.items() if a.batches},
        marked_outputs={o: stats_by_tensor[o] for o in view.outputs if o in stats_by_tensor},
        task=(task or TaskAccumulator(None, None)).result(),
        channel_splits=tuple(s for o, a in channels.items() if (s := a.result(o)) is not None),
        batches=len(batch_ids),
        samples=samples,
        timings=clock.timings,
        shape_mismatches=tuple(sorted(mismatched)),
        unobservable=tuple(sorted(missing)),
        unmodified_batches=unmodified,
        artifacts=artifacts,
        passes=plan.passes if plan is not None else 1,
        micro_batch=plan.micro if plan is not None else None,
        float_outputs=float_outputs,
        input_independent=bool(same_as_first) and samples > 1,
    )


def _still_the_same(first: dict[str, np.ndarray] | None, ref: dict[str, np.ndarray], outputs: tuple[str, ...],
                    n: int) -> dict[str, np.ndarray] | None:
    """The first sample's outputs while every sample so far gave the same (None once one differs, or an output's axis 0
    is not the batch)."""
    if first is None or not outputs:
        return None
    for o in outputs:
        r = ref.get(o)
        if r is None or r.shape[:1] != (n,):
            return None
        if o not in first:
            first[o] = r[:1].copy()
        if first[o].shape[1:] != r.shape[1:] or not np.array_equal(r, np.broadcast_to(first[o], r.shape)):
            return None
    return first


def _plan(names: list[str], reference: onnx.ModelProto, backend: Backend, inputs: Batch, ref: dict | None,
          budget: int | None, dynamic_batch: bool, on_device: bool, types: Callable[[], dict | None]) -> MemoryPlan:
    """The memory plan from the first batch: bytes per sample of every tensor in `names` (those marked), from the cached
    reference, from shape inference, or (last resort) measured on one sample (the whole batch where it is fixed). On the
    host a dynamic batch also runs in passes of at most PASS_BYTES (see memory_plan)."""
    n = len(next(iter(inputs.values())))
    if on_device or (budget is None and not dynamic_batch):  # device memory is the runtime's business
        return MemoryPlan(None, (tuple(names),))
    if ref is not None:
        per_sample = {t: ref[t].nbytes // max(n, 1) for t in names if t in ref}
    else:
        per_sample = static_bytes_per_sample(names, types())
        if per_sample is None:
            probe = {k: v[:1] for k, v in inputs.items()} if dynamic_batch else inputs
            with backend.runner(reference, observe=names) as r:
                out = r.infer(probe)
            per_sample = {t: out[t].nbytes // len(next(iter(probe.values()))) for t in names if t in out}
            del out
    limit = budget if budget is not None else 2**62
    return plan_memory(per_sample, names, n, dynamic_batch, limit, pass_bytes=PASS_BYTES)


def _update_final_outputs(final: dict[str, Accumulator], reducer: HostReducer, task: TaskAccumulator | None, view: GraphView,
                          ref: dict[str, np.ndarray], plain: dict[str, np.ndarray], labels: np.ndarray | None,
                          channels: dict[str, ChannelAccumulator], samples: int) -> TaskAccumulator:
    """Final-output metrics and task metrics from the unmodified candidate's outputs `plain` (of `samples` samples);
    returns the task accumulator (created on the first batch, when the classifier-shaped or CTC output is known)."""
    pairs = [(o, ref[o], plain[o]) for o in final if o in ref and o in plain and ref[o].shape == plain[o].shape]
    stats, counts, sizes = reducer.reduce([(r, c) for _, r, c in pairs])
    for k, (o, r, c) in enumerate(pairs):
        final[o].add_part(stats[k], int(sizes[k]), counts[k])
        channels[o].update(r, c)
    if task is None:
        output, ctc_axis = task_output(view.outputs, ref, samples)
        task = TaskAccumulator(output, labels, ctc_axis)
    if task.output is not None:
        task.update(ref[task.output], plain[task.output])
    return task


def layer_frame(view: GraphView, stats: dict[str, TensorStats]) -> pd.DataFrame:
    stats = {**stats, **{t.tensor: stats[view.source_of(t.tensor)] for t in view.tensors
                         if t.tensor not in stats and view.source_of(t.tensor) in stats}}
    snr = {t: s.snr_db for t, s in stats.items()}
    intro = introduced_db(tuple(t for t in view.tensors if t.tensor in stats), snr)
    rows = []
    for order, t in enumerate(view.tensors):
        s = stats.get(t.tensor)
        row = {"tensor": t.tensor, "node": t.node, "op_type": t.op_type, "quantized": t.node in view.quantized_nodes}
        row.update({k: (s[k] if s is not None else math.nan) for k in METRIC_COLUMNS})
        row["introduced_db"] = intro[t.tensor] if s is not None else math.nan
        row["input_snr_db"] = input_snr(t, snr)
        row["order"] = order
        rows.append(row)
    return pd.DataFrame(rows, columns=[*LAYER_COLUMNS, "input_snr_db", "order"])
