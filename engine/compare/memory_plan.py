"""How the layerwise comparison keeps its peak memory under a budget, whatever batch size the user picks.

With every observed tensor marked, one pass holds the reference's tensors while the candidate's are produced, and
ONNX Runtime hands back a copy of each: about PEAK_FACTOR times the bytes of one pass's observed tensors. Where
the model's batch dimension is dynamic, a batch is split into micro-batches of `micro` samples; where it is fixed, the
observed tensors are split into groups, one pass each (the reference and candidate run once per group). The metrics
stay per batch (an accumulator closes a batch after its last part), so the plan changes memory and time, not results
(only the relative-error histogram samples its elements per part)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

__all__ = ["MemoryPlan", "plan_memory", "static_bytes_per_sample", "parts", "PEAK_FACTOR", "CACHE_COPIES", "loop_budget",
           "PASS_BYTES", "sample_types", "static_shape", "activation_bytes_per_sample",
           "live_bytes_per_sample"]

PEAK_FACTOR = 3.0
# On the host, a marked pass of a dynamic batch observes at most this many bytes (one model's tensors) whatever memory
# allows: ONNX Runtime allocates every marked output afresh each run, and outputs past the C library's 32 MB mmap
# threshold come back as new pages every time. Measured on MobileNetV3 (30 MB of tensors a sample), 2-core CPU: batch
# 32 in one pass took 1.44x batch 4's time; in passes of 4-5 samples, batch 4's.
PASS_BYTES = 160 * 2**20
CACHE_COPIES = 2.0  # the batch cache's writer holds one batch of reference tensors queued and one being written


def loop_budget(budget: int, caches_reference: bool) -> int:
    """What the loop's own passes may take of `budget`: less where the batch cache keeps copies of the reference
    tensors until they are on disk (measured on MobileNetV3 at batch 32 before this was counted: 2.9 GB peak RSS with
    a 1.5 GB budget)."""
    return int(budget * PEAK_FACTOR / (PEAK_FACTOR + CACHE_COPIES)) if caches_reference else budget


@dataclass(frozen=True)
class MemoryPlan:
    micro: int | None  # samples per marked pass; None: the whole batch
    groups: tuple[tuple[str, ...], ...]  # observed tensors per pass (one group: every tensor in one pass)
    bytes_per_sample: int = 0  # of every observed tensor together (0: not known, e.g. on a device)

    @property
    def passes(self) -> int:
        return len(self.groups)


def sample_types(model: onnx.ModelProto, batch_inputs: dict[str, tuple]) -> dict[str, onnx.TypeProto.Tensor] | None:
    """Every tensor's type with a batch of one (ONNX shape inference with the inputs' shapes, batch 1; initializers as
    they are), or None where inference fails."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for inp in m.graph.input:
        if inp.name in batch_inputs:
            shape = (1, *batch_inputs[inp.name][1:])
            inp.type.tensor_type.ClearField("shape")
            for d in shape:
                inp.type.tensor_type.shape.dim.add().dim_value = int(d)
    try:
        inferred = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - onnx raises many kinds here
        return None
    g = inferred.graph
    known = {v.name: v.type.tensor_type for v in (*g.input, *g.value_info, *g.output)}
    for init in g.initializer:
        known[init.name] = helper.make_tensor_type_proto(init.data_type, list(init.dims)).tensor_type
    return known


def static_shape(t: onnx.TypeProto.Tensor | None) -> tuple[int, ...] | None:
    """The shape when every dimension is known and positive, else None."""
    if t is None or not t.HasField("shape") or any(not d.HasField("dim_value") or d.dim_value <= 0 for d in t.shape.dim):
        return None
    return tuple(d.dim_value for d in t.shape.dim)


def static_bytes_per_sample(names: Sequence[str], types: dict[str, onnx.TypeProto.Tensor] | None) -> dict[str, int] | None:
    """Bytes of each observed tensor for one sample, from sample_types' result, or None when some shape stays unknown
    (then the first pass is measured instead)."""
    if types is None:
        return None
    out = {}
    for n in names:
        t = types.get(n)
        shape = static_shape(t)
        if shape is None:
            return None
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type or TensorProto.FLOAT)).itemsize
        out[n] = int(np.prod(shape)) * itemsize
    return out


KNOWN_SHARE = 0.9  # the per-sample sizes below are used only where shape inference sizes this share of node outputs


def _output_sizes(model: onnx.ModelProto, sample_shapes: dict[str, tuple[int, ...]]) -> dict[str, int] | None:
    """Bytes of each node output of the main graph for one sample, where shape inference gives it; None where it fails or
    leaves more than 1 - KNOWN_SHARE of the outputs unsized (a partial count would let a plan exceed its budget)."""
    types = sample_types(model, {k: (1, *s) for k, s in sample_shapes.items()})
    if types is None:
        return None
    outputs = [o for n in model.graph.node for o in n.output if o]
    sizes = {o: b[o] for o in outputs if (b := static_bytes_per_sample([o], types))}
    return sizes if outputs and len(sizes) >= KNOWN_SHARE * len(outputs) else None


def activation_bytes_per_sample(model: onnx.ModelProto, sample_shapes: dict[str, tuple[int, ...]]) -> int | None:
    """The bytes every node output of `model` takes for one sample (`sample_shapes`: each input's shape without the
    sample axis); None where _output_sizes gives none. What calibration holds at most a sample: ORT's augmented session
    computes them all, and its histogram collectors keep the calibrated ones."""
    sizes = _output_sizes(model, sample_shapes)
    return None if sizes is None else sum(sizes.values())


def live_bytes_per_sample(model: onnx.ModelProto, sample_shapes: dict[str, tuple[int, ...]]) -> int | None:
    """The most bytes of node outputs alive at once for one sample, running the nodes in graph order and freeing each
    output after its last reader (graph outputs stay; a tensor read inside a subgraph is kept to the end): what a
    runtime's memory plan needs at least, where activation_bytes_per_sample counts them all (PP-OCRv4's detector: 45 MB
    against 650 MB a 640 x 640 page). None where _output_sizes gives none."""
    size = _output_sizes(model, sample_shapes)
    if size is None:
        return None
    nodes = model.graph.node
    last = {t: i for i, n in enumerate(nodes) for t in n.input}
    kept = {o.name for o in model.graph.output} | {t for n in nodes for a in n.attribute if a.g.node or a.graphs
                                                   for g in ([a.g] if a.g.node else list(a.graphs)) for m in g.node
                                                   for t in m.input}
    live = peak = 0
    for i, n in enumerate(nodes):
        live += sum(size.get(o, 0) for o in n.output if o)
        peak = max(peak, live)
        live -= sum(size.get(o, 0) for o in n.output if o and o not in kept and last.get(o, -1) <= i)  # never read
        live -= sum(size.get(t, 0) for t in set(n.input) if t in size and last[t] == i and t not in kept)
    return peak


def plan_memory(bytes_per_sample: dict[str, int], names: Sequence[str], batch: int, dynamic_batch: bool, budget: int,
                pass_bytes: int | None = None) -> MemoryPlan:
    """The fewest passes that keep PEAK_FACTOR x (one pass's observed tensors) under `budget`; with `pass_bytes`, a
    dynamic batch is also split into micro-batches whose observed tensors stay under it (one sample at least)."""
    per_sample = sum(bytes_per_sample.get(n, 0) for n in names)
    if dynamic_batch and pass_bytes is not None and per_sample:
        budget = min(budget, int(max(pass_bytes, per_sample) * PEAK_FACTOR))
    if per_sample == 0 or per_sample * batch * PEAK_FACTOR <= budget:
        return MemoryPlan(None, (tuple(names),), per_sample)
    if dynamic_batch:
        micro = int(budget // (PEAK_FACTOR * per_sample))
        if micro >= 1:
            return MemoryPlan(micro, (tuple(names),), per_sample)
        return MemoryPlan(1, _groups(bytes_per_sample, names, 1, budget), per_sample)  # not even one sample fits: groups too
    return MemoryPlan(None, _groups(bytes_per_sample, names, batch, budget), per_sample)


def _groups(bytes_per_sample: dict[str, int], names: Sequence[str], samples: int, budget: int) -> tuple[tuple[str, ...], ...]:
    """Observed tensors in topological order, cut into consecutive groups that each fit the budget."""
    cap = max(1.0, budget / (PEAK_FACTOR * samples))
    groups: list[list[str]] = [[]]
    size = 0
    for n in names:
        b = bytes_per_sample.get(n, 0)
        if groups[-1] and size + b > cap:
            groups.append([])
            size = 0
        groups[-1].append(n)
        size += b
    return tuple(tuple(g) for g in groups if g) or ((),)


def parts(n: int, micro: int | None) -> list[slice]:
    """Slices of a batch of `n` samples, `micro` at a time."""
    if micro is None or micro >= n:
        return [slice(0, n)]
    return [slice(i, min(n, i + micro)) for i in range(0, n, micro)]
