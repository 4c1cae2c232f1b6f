"""The streaming comparison with tensors kept on the GPU: both marked runs write into device memory
(IOBinding), per-tensor statistics are reduced there (device_stats), and one small copy per batch brings
back scalars and histogram counts. Only the final outputs (small) come to the host."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import onnx

from engine.compare.device_stats import CupyKernels, device_math
from engine.compare.graph import GraphView
from engine.compare.layerwise import LayerwiseRun, _frame, update_final_outputs
from engine.compare.reference_cache import ReferenceCache
from engine.compare.task_metrics import TaskAccumulator
from engine.compare.tensor_stats import TensorAccumulator
from engine.data.source import Batch
from engine.progress import ProgressCallback, ProgressEvent, Stage, no_progress

__all__ = ["run_layerwise_on_device"]


def run_layerwise_on_device(view: GraphView, reference: onnx.ModelProto, candidate: onnx.ModelProto, backend,
                            batches: Iterator[Batch], total_batches: int, labels: np.ndarray | None = None,
                            progress: ProgressCallback = no_progress, timings: dict[str, float] | None = None,
                            cache: ReferenceCache | None = None) -> LayerwiseRun:
    timings = timings if timings is not None else {}
    dm = device_math()
    assert dm is not None, "no device array library"
    names = view.names
    kernels = CupyKernels() if dm.library == "cupy" else None
    acc = {t: TensorAccumulator() for t in names}
    final = {o: TensorAccumulator() for o in view.outputs}
    mismatched: set[str] = set()
    task: TaskAccumulator | None = None
    done = samples = 0
    started = first_done = time.perf_counter()

    def tick(key: str, t0: float) -> None:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0

    if cache is not None:
        cache.reset(inputs_only=True)
    progress(ProgressEvent(Stage.COMPARE, 0, total_batches, "starting GPU sessions"))
    with backend.device_runner(reference, observe=names) as ref_r, \
            backend.device_runner(candidate, observe=names) as cand_r, backend.runner(candidate) as plain_r:
        for inputs in batches:
            t0 = time.perf_counter()
            ref = ref_r.infer_on_device(inputs)
            tick("reference", t0)
            t0 = time.perf_counter()
            cand = cand_r.infer_on_device(inputs)
            tick("candidate", t0)
            t0 = time.perf_counter()
            used = []
            for n in names:
                if n in mismatched:
                    continue
                if ref[n].shape() != cand[n].shape():
                    mismatched.add(n)
                    continue
                used.append(n)
            if kernels is not None and all(ref[n].data_type() == cand[n].data_type() == "tensor(float)" for n in used):
                scalars, hists = kernels.reduce([(ref[n].data_ptr(), cand[n].data_ptr(), int(np.prod(ref[n].shape()))) for n in used])
            else:
                scalars, hists = dm.reduce([(dm.from_dlpack(ref[n]), dm.from_dlpack(cand[n])) for n in used])
            for i, n in enumerate(used):
                rr, cc, rc, dd, sabs, mx = scalars[i]
                acc[n].add_scalars(rr, cc, rc, dd, sabs, mx, int(np.prod(ref[n].shape())))
                acc[n].hist.add_counts(hists[i])
            ref_out = {o: dm.to_host(dm.from_dlpack(ref[o])) for o in view.outputs if o in ref}
            del ref, cand
            tick("metrics", t0)
            t0 = time.perf_counter()
            task = update_final_outputs(final, task, view, ref_out, plain_r.infer(inputs), labels)
            tick("final_outputs", t0)
            if cache is not None:
                cache.append(inputs, {})
            done += 1
            if done == 1:
                first_done = time.perf_counter()  # the first batch carries each session's cuDNN warm-up
            samples += len(next(iter(inputs.values())))
            eta = (time.perf_counter() - started) / done * (total_batches - done)
            progress(ProgressEvent(Stage.COMPARE, done, total_batches, f"batch {done}/{total_batches} on the GPU, about {eta:.0f} s left"))
    if done > 1:
        timings["steady_batches"] = done - 1
        timings["steady_loop"] = time.perf_counter() - first_done
    if cache is not None:
        cache.finish(samples)
    stats = {t: a.result() for t, a in acc.items() if t not in mismatched}
    return LayerwiseRun(layers=_frame(view, stats), outputs={o: a.result() for o, a in final.items() if a.batches},
                        marked_outputs={o: stats[o] for o in view.outputs if o in stats},
                        task=(task or TaskAccumulator(None, None)).result(), batches=done, samples=samples,
                        timings=timings, shape_mismatches=tuple(sorted(mismatched)), unmodified_batches=done)
