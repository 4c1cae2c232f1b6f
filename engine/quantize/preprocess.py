"""Pre-processing before calibration: shape inference, BN folding, constant folding, stable node names."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from engine.cache_files import write_atomic
from engine.errors import ModelError
from engine.model.provenance import Origin, provenance

__all__ = ["preprocess", "Prepared", "model_digest", "onnx_inference_complete", "PREPROCESS_VERSION", "name_nodes", "initializers_are_not_inputs", "upgrade_opset", "pin_ir_version", "MAX_IR_VERSION"]

# onnx 1.23 writes IR 14, onnxruntime-gpu 1.31 reads at most 13: never write a newer IR than the input had.
MAX_IR_VERSION = 10
# per-channel QuantizeLinear/DequantizeLinear (the `axis` attribute) needs opset 13
MIN_OPSET = 13
PREPROCESS_VERSION = "pp4"  # part of the cache key: bump when what preprocess() produces changes


@dataclass(frozen=True)
class Prepared:
    model: onnx.ModelProto
    cached: bool  # taken from the pre-processing cache (same model bytes, same QuantScope pre-processing)
    shape_inference: str  # "onnx" (ONNX's own inference was complete), "symbolic" (ORT's), or "none"
    provenance: dict[str, tuple[Origin, ...]]  # prepared node -> the node(s) of the user's file it came from
    digest: str = ""  # sha256 of the user's model (deterministic serialization): the cache key
    file: Path | None = None  # where `model` is stored as written (the cache entry), to link or copy instead of saving again


def model_digest(model: onnx.ModelProto) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def preprocess(model: onnx.ModelProto, cache_dir: Path | None = None, files: str = "") -> Prepared:
    """ORT's quantization pre-processing (shape inference + basic graph optimizations, which fold BatchNormalization
    into Conv and fold constants), then readable names for every node. With `cache_dir`, the result is kept under
    the model's content hash, so a second comparison of the same model skips it. files: the identity of the files
    `model` was read from (read_model); the cache then remembers their digest, so a second comparison of an unchanged
    file does not serialize and hash the model again."""
    digest = _remembered_digest(model, cache_dir, files)
    cached_path = cache_dir / f"{PREPROCESS_VERSION}-{digest}.onnx" if cache_dir is not None else None
    if cached_path is not None and cached_path.is_file():
        try:
            meta = json.loads(cached_path.with_suffix(".json").read_text())
            prov = {k: tuple(Origin.from_dict(o) for o in v) for k, v in meta["provenance"].items()}
            return Prepared(onnx.load(cached_path), True, meta["shape_inference"], prov, digest, cached_path)
        except (OSError, ValueError, KeyError, TypeError, DecodeError):
            pass  # a damaged entry is rebuilt below
    prepared = dataclasses.replace(_preprocess(model), digest=digest)
    if cached_path is not None and _store(cached_path, prepared):
        prepared = dataclasses.replace(prepared, file=cached_path)
    return prepared


def _remembered_digest(model: onnx.ModelProto, cache_dir: Path | None, files: str) -> str:
    """model_digest, kept in the cache under the identity of the files the model was read from."""
    if cache_dir is None or not files:
        return model_digest(model)
    memo = cache_dir / "by-file" / f"{PREPROCESS_VERSION}-{hashlib.sha256(files.encode()).hexdigest()[:40]}.txt"
    try:
        known = memo.read_text().strip()
        if len(known) == 64 and all(ch in "0123456789abcdef" for ch in known):
            return known
    except OSError:
        pass
    digest = model_digest(model)
    write_atomic(memo, lambda tmp: tmp.write_text(digest), "pre-processing cache")
    return digest


def _store(path: Path, prepared: Prepared) -> bool:
    """Atomically, and never fatal: a cache that cannot be written only costs the next comparison time. Whether it was."""
    meta = json.dumps({"shape_inference": prepared.shape_inference,
                       "provenance": {k: [o.to_dict() for o in v] for k, v in prepared.provenance.items()}})
    return write_atomic(path, lambda tmp: onnx.save(prepared.model, tmp), "pre-processing cache") and \
        write_atomic(path.with_suffix(".json"), lambda tmp: tmp.write_text(meta), "pre-processing cache")


def onnx_inference_complete(model: onnx.ModelProto) -> bool:
    """Whether ONNX's own shape inference gives every node output a type and a rank. Then ORT's symbolic inference
    (seconds on a real detector, and it writes scratch files into the working directory when it gives up) adds
    nothing the quantizer needs."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - onnx raises many kinds here
        return False
    g = inferred.graph
    known = {v.name: v.type for v in list(g.value_info) + list(g.output) + list(g.input)}
    known.update({i.name: None for i in g.initializer})
    for node in g.node:
        for out in node.output:
            if not out:
                continue
            t = known.get(out, False)
            if t is False or (t is not None and (not t.HasField("tensor_type") or t.tensor_type.elem_type == 0
                                                  or not t.tensor_type.HasField("shape"))):
                return False
    return True


def _preprocess(model: onnx.ModelProto) -> Prepared:
    source_ir = max(model.ir_version, 4)
    named = onnx.ModelProto()
    named.CopyFrom(model)
    initializers_are_not_inputs(named)
    name_nodes(named)
    labelled = named  # the user's node order with every node named: what provenance matches against
    named = upgrade_opset(named)
    name_nodes(named)  # before optimization too, so fused nodes keep user-visible names
    attempts = ("onnx", "none") if onnx_inference_complete(named) else ("symbolic", "none")
    with tempfile.TemporaryDirectory(prefix="quantscope-pre-") as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(named, src)
        last_err = ""
        for how in attempts:  # symbolic shape inference fails on some exotic graphs
            try:
                _run_pre_process(src, dst, symbolic=how == "symbolic", workdir=Path(tmp))
                break
            except _PreprocessFailed as err:
                logging.getLogger(__name__).info("pre-processing (%s) failed: %s", how, err)
                last_err = str(err)
        else:
            raise ModelError(
                f"ONNX Runtime could not pre-process the model ({last_err[:200] or 'no reason given'}); check that it runs in "
                "ONNX Runtime, e.g. with `polygraphy run model.onnx --onnxrt`."
            ) from None
        out = onnx.load(dst)
    name_nodes(out)
    pin_ir_version(out, source_ir)
    return Prepared(out, False, how, provenance(model, labelled, out))


class _PreprocessFailed(Exception):
    pass


def _run_pre_process(src: Path, dst: Path, *, symbolic: bool, workdir: Path) -> None:
    """quant_pre_process, in-process when it writes only its own temporary files; ORT's symbolic shape inference
    writes sym_shape_infer_temp.onnx and <uuid>.data into the working directory when it gives up, so it runs in a
    child process whose working directory is `workdir` (the process-wide cwd cannot be changed under other threads)."""
    if not symbolic:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        except Exception as err:  # noqa: BLE001 - ORT raises bare Exceptions of many kinds here
            raise _PreprocessFailed(_first_line(err)) from None
        return
    code = ("import sys\nfrom onnxruntime.quantization.shape_inference import quant_pre_process\n"
            "quant_pre_process(sys.argv[1], sys.argv[2], skip_symbolic_shape=False)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(src), str(dst)], cwd=workdir, capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"})
    if proc.returncode != 0 or not dst.is_file():
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise _PreprocessFailed(lines[-1] if lines else f"exit status {proc.returncode}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def upgrade_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """Models below opset 13 are converted with onnx's version converter (per-channel Q/DQ needs 13)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), MIN_OPSET)
    if opset >= MIN_OPSET:
        return model
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(model, MIN_OPSET)
    except Exception as err:  # noqa: BLE001 - the converter raises bare RuntimeErrors
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ModelError(
            f"The model uses opset {opset}, and converting it to opset {MIN_OPSET} (needed for per-channel INT8) failed "
            f"({first}); export it again with opset {MIN_OPSET} or newer."
        ) from None
    upgraded.ir_version = max(upgraded.ir_version, model.ir_version)
    # names go back by the (unchanged) output tensors, to the node of the original's op type: the converter expands
    # an opset-12 Softmax into Shape, Flatten, Softmax and Reshape, and the Reshape writing the Softmax's tensor took the
    # user's name (PP-OCRv4's p2o.Softmax.0 became a Reshape in the downloaded model, its Softmax 'Softmax_0')
    by_output = {n.output[0]: n for n in model.graph.node if n.output and n.name}
    original_tensors = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
    producer = {o: n for n in upgraded.graph.node for o in n.output if o}
    named: dict[int, str] = {}
    used: set[str] = set()
    for node in upgraded.graph.node:
        source = by_output.get(node.output[0]) if node.output else None
        if source is not None and source.name not in used:
            named[id(_same_op_in_expansion(node, source.op_type, producer, original_tensors))] = source.name
            used.add(source.name)
    for node in upgraded.graph.node:
        node.name = named.get(id(node), "")  # "": a node the converter added, named by name_nodes afterwards
    return upgraded


def _same_op_in_expansion(writer: onnx.NodeProto, op_type: str, producer: dict[str, onnx.NodeProto],
                          original_tensors: set[str]) -> onnx.NodeProto:
    """`writer` where it has `op_type`, else the node of that op type among the new nodes feeding it (the converter's
    expansion of one node: none of them writes a tensor of the original graph), else `writer`."""
    if writer.op_type == op_type:
        return writer
    stack, seen = list(writer.input), set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in seen or any(o in original_tensors for o in node.output):
            continue
        seen.add(id(node))
        if node.op_type == op_type:
            return node
        stack.extend(node.input)
    return writer


def initializers_are_not_inputs(model: onnx.ModelProto) -> None:
    """IR < 4 lists weights as graph inputs too. ORT's optimizer may merge or fold such initializers and leave
    the inputs behind as *required* inputs, so weights stop being inputs here (which needs IR >= 4)."""
    inits = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    if len(keep) != len(model.graph.input):
        del model.graph.input[:]
        model.graph.input.extend(keep)
        model.ir_version = max(model.ir_version, 4)


def name_nodes(model: onnx.ModelProto) -> None:
    """Gives every unnamed node `<OpType>_<k>` (k counts per op type in graph order), unique and stable."""
    taken = Counter(n.name for n in model.graph.node if n.name)
    counters: Counter[str] = Counter()
    for node in model.graph.node:
        if node.name:
            continue
        while True:
            candidate = f"{node.op_type}_{counters[node.op_type]}"
            counters[node.op_type] += 1
            if candidate not in taken:
                break
        node.name = candidate
        taken[candidate] += 1


def pin_ir_version(model: onnx.ModelProto, source_ir: int) -> None:
    model.ir_version = min(model.ir_version, max(source_ir, MAX_IR_VERSION))
