"""Emits the explicit Q/DQ candidate from the calibration cache (never recalibrates).

Two steps: ONNX Runtime's quantize_static writes the all-INT8 graph once for a quantization (calibration, op types,
ranges); a fallback set is then applied by graph surgery (apply_fallback), which is what quantize_static with
nodes_to_exclude writes (a test holds the two bit for bit) at a fraction of the cost, so a rebuild that changes only
the fallback set does not run the quantizer. With a `base_cache` path the all-INT8 graph is kept in the run folder."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx

from engine.errors import ConfigError, RunFolderError
from engine.model.graph_reads import drop_unread_qdq, names_read, subgraphs
from engine.quantize.calibration import ORT_METHODS
from engine.quantize.config import FallbackPrecision, Precision, QuantConfig
from engine.quantize.fallback_fp16 import convert_nodes_to_fp16
from engine.quantize.fp8 import to_fp8
from engine.quantize.preprocess import pin_ir_version

__all__ = ["emit_candidate", "EmitResult", "quantize_all", "apply_fallback", "read_float_inputs", "base_key"]


class EmitResult:
    def __init__(self, model: onnx.ModelProto, fp16_nodes: tuple[str, ...], fp32_nodes: tuple[str, ...]) -> None:
        self.model, self.fp16_nodes, self.fp32_nodes = model, fp16_nodes, fp32_nodes


def _check(reference: onnx.ModelProto, cache_path: Path, config: QuantConfig) -> None:
    node_names = {n.name for n in reference.graph.node}
    unknown = sorted(set(config.fallback) - node_names)
    if unknown:
        raise ConfigError(f"The fallback node '{unknown[0]}' is not in the compared graph; use a node name from layers.csv.",
                          option="fallback")
    tensors = {o for n in reference.graph.node for o in n.output} | {i.name for i in reference.graph.input}
    for r in config.ranges:
        if r.tensor not in tensors:
            raise ConfigError(f"The range override names the tensor '{r.tensor}', which is not in the compared graph; use a tensor "
                              "name from layers.csv.", option="ranges")
    if not cache_path.is_file():
        raise RunFolderError(f"The calibration cache {cache_path} is missing; run `quantscope compare` again to recalibrate.")


def quantize_all(reference: onnx.ModelProto, reference_path: Path, cache_path: Path, config: QuantConfig,
                 exclude: frozenset[str] = frozenset()) -> onnx.ModelProto:
    """quantize_static from the calibration cache: symmetric per-tensor INT8 activations, symmetric per-channel INT8
    weights, float bias (what TensorRT consumes), Q/DQ only on the inputs of the quantized op types."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    extra = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,  # TensorRT takes float bias; int32 bias DQ is not an explicit-quantization input
        "QDQKeepRemovableActivations": True,  # keep every reference node so names line up one to one
        # TensorRT's placement: Q/DQ on the inputs of weighted ops only, never on their outputs
        "OpTypesToExcludeOutputQuantization": list(config.op_types),
        # numpy scalars: ORT's compute_scale_zp reads .dtype from them (plain floats failed for any quantized activation)
        "TensorQuantOverrides": {r.tensor: [{"rmin": np.float32(r.min), "rmax": np.float32(r.max)}] for r in config.ranges},
    }
    with tempfile.TemporaryDirectory(prefix="quantscope-emit-") as tmp:
        out = Path(tmp) / "candidate.onnx"
        # ONNX Runtime writes '<model>-inferred.onnx' beside the model it quantizes and deletes it after: given a link in
        # this private folder, concurrent emissions from one reference (a sweep on Ray) never share that scratch file
        source = Path(tmp) / "reference.onnx"
        try:
            os.symlink(Path(reference_path).resolve(), source)
        except OSError:
            shutil.copyfile(reference_path, source)
        quantize_static(
            str(source), str(out), None,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(config.op_types),
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=sorted(exclude),
            calibrate_method=ORT_METHODS()[config.calibration],
            extra_options=extra,
            calibration_cache_path=str(cache_path),
        )
        model = onnx.load(out)
    pin_ir_version(model, reference.ir_version)
    read_float_inputs(model, exclude)
    return model


def read_float_inputs(model: onnx.ModelProto, fallback: frozenset[str]) -> None:
    """A fallback node reads its activations unquantized. ORT's quantizer leaves a Q/DQ pair on a tensor that another,
    quantized consumer still needs, and rewires every consumer to the DQ output, excluded nodes included; fallback
    means no Q/DQ around the node (what TensorRT then runs in FP16/FP32), so the excluded node reads the Q's input."""
    if not fallback:
        return
    q_input = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    dq_source = {n.output[0]: q_input[n.input[0]] for n in model.graph.node
                 if n.op_type == "DequantizeLinear" and n.input[0] in q_input}
    for node in model.graph.node:
        if node.name in fallback:
            for i, name in enumerate(node.input):
                if name in dq_source:
                    node.input[i] = dq_source[name]


def apply_fallback(all_int8: onnx.ModelProto, reference: onnx.ModelProto, fallback: frozenset[str], op_types) -> onnx.ModelProto:
    """The all-INT8 candidate with `fallback` nodes reading float inputs: their weights float again, an activation
    tensor quantized only while some quantized node still reads it (its other readers then read it float too), and
    the Q/DQ nodes and INT8 weights nobody reads any more removed."""
    model = onnx.ModelProto()
    model.CopyFrom(all_int8)
    if not fallback:
        return model
    g = model.graph
    ops = set(op_types)
    ref_nodes = {n.name: n for n in reference.graph.node}
    ref_inits = {i.name: i for i in reference.graph.initializer}
    inits = {i.name for i in g.initializer}
    q_input = {n.output[0]: n.input[0] for n in g.node if n.op_type == "QuantizeLinear"}
    dq = {n.output[0]: n for n in g.node if n.op_type == "DequantizeLinear"}
    for node in g.node:
        if node.name not in fallback:
            continue
        ref = ref_nodes.get(node.name)
        for pos, name in enumerate(node.input):
            if name not in dq:
                continue
            if dq[name].input[0] in q_input:  # an activation: the Q's input
                node.input[pos] = q_input[dq[name].input[0]]
            elif ref is not None and pos < len(ref.input):  # a weight: the float initializer again
                node.input[pos] = ref.input[pos]
                if ref.input[pos] not in inits and ref.input[pos] in ref_inits:
                    g.initializer.append(ref_inits[ref.input[pos]])
                    inits.add(ref.input[pos])
    # an activation read by no quantized node is not quantized: its other readers read it float
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for i in node.input:
            if i in dq:
                readers.setdefault(i, []).append(node)
    in_subgraphs = set().union(*(names_read(sub) for node in g.node for sub in subgraphs(node)))
    for out, nodes in readers.items():
        if dq[out].input[0] not in q_input or out in in_subgraphs:  # a subgraph reads it quantized: keep its Q/DQ
            continue
        if not any(n.op_type in ops and n.name not in fallback for n in nodes):
            for n in nodes:
                for pos, name in enumerate(n.input):
                    if name == out:
                        n.input[pos] = q_input[dq[out].input[0]]
    drop_unread_qdq(model)
    return model


EMIT_VERSION = "e1"  # part of base_key: bump when what quantize_all emits from the same calibration changes


def base_key(config: QuantConfig) -> dict:
    """What the all-INT8 graph depends on besides the calibration: the quantization without its fallback set (op types
    in any order), this module's emission and the onnx release it serializes with (the graph is kept under the runs
    root, which outlives an upgrade)."""
    d = config.with_fallback(()).to_dict()
    d.pop("fallback_precision")
    d["op_types"] = sorted(d["op_types"])
    d["emit"], d["onnx"] = EMIT_VERSION, onnx.__version__
    return d


def emit_candidate(reference: onnx.ModelProto, reference_path: Path, cache_path: Path, config: QuantConfig,
                   base_cache: Path | None = None) -> EmitResult:
    """The candidate for `config`; fallback nodes get no Q/DQ and, for fp16, FP16 types with casts at their boundaries.
    base_cache: where the all-INT8 graph of this quantization is kept (reused while calibration, op types and ranges
    stay the same)."""
    _check(reference, cache_path, config)
    key = base_key(config)
    base = None
    key_path = base_cache.with_suffix(".json") if base_cache is not None else None
    if base_cache is not None and base_cache.is_file() and key_path.is_file():
        try:
            if json.loads(key_path.read_text()) == key:
                base = onnx.load(base_cache)
        except Exception:  # noqa: BLE001 - unreadable or half-written (protobuf DecodeError): emit it again
            base = None
    if base is None:
        base = quantize_all(reference, reference_path, cache_path, config)
        if config.precision is Precision.FP8:
            base = to_fp8(base, reference)
        if base_cache is not None:  # the key goes first and comes back last: a key never vouches for another base
            key_path.unlink(missing_ok=True)
            tmp = base_cache.with_name(f"{base_cache.name}.{os.getpid()}.tmp")
            onnx.save(base, tmp)
            os.replace(tmp, base_cache)
            tmp_key = key_path.with_name(f"{key_path.name}.{os.getpid()}.tmp")
            tmp_key.write_text(json.dumps(key))
            os.replace(tmp_key, key_path)
    model = apply_fallback(base, reference, frozenset(config.fallback), config.op_types)
    fp16: tuple[str, ...] = ()
    fp32 = tuple(sorted(config.fallback))
    if config.fallback_precision is FallbackPrecision.FP16 and config.fallback:
        fp16, fp32 = convert_nodes_to_fp16(model, config.fallback)
    drop_unused_opsets(model)
    return EmitResult(model, fp16, fp32)


def drop_unused_opsets(model: onnx.ModelProto) -> None:
    """Removes opset imports no node uses: ONNX Runtime's optimizer, run by pre-processing, declares every domain it
    knows (ai.onnx.ml, ai.onnx.training, com.microsoft.nchwc, org.pytorch.aten ...), and the model a user downloads
    carried them all (found trying the app on YOLOv8n). The default domain always stays."""
    used = {""}

    def walk(nodes) -> None:
        for n in nodes:
            used.add(n.domain)
            for a in n.attribute:
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    walk(g.node)

    walk(model.graph.node)
    for f in model.functions:
        used.add(f.domain)
        walk(f.node)
    keep = [o for o in model.opset_import if o.domain in used or o.domain == "ai.onnx"]
    if len(keep) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(keep)
