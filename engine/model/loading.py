"""Loading an ONNX model safely: size limit, external data confined to the model's folder, validation."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import load_external_data_for_model, uses_external_data

from engine.errors import ModelError

__all__ = ["DEFAULT_MAX_MODEL_BYTES", "load_model", "read_model", "load_model_bytes", "check_graph"]

DEFAULT_MAX_MODEL_BYTES = 2 * 1024**3


def _mib(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB"


def load_model_bytes(data: bytes, *, name: str = "the model", max_bytes: int = DEFAULT_MAX_MODEL_BYTES) -> onnx.ModelProto:
    """Parses an in-memory model (an upload). External data is refused: there is no folder to read it from."""
    if len(data) > max_bytes:
        raise ModelError(f"{name} is {_mib(len(data))}, over the {_mib(max_bytes)} limit; raise the limit or use a smaller model.")
    model = _parse(data, name)
    if any(uses_external_data(t) for t in _all_tensors(model)):
        raise ModelError(
            f"{name} stores weights in external data files, which an upload cannot carry; "
            "save it as a single file (onnx.save(model, path, save_as_external_data=False))."
        )
    check_graph(model, name)
    return model


def load_model(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_MODEL_BYTES) -> onnx.ModelProto:
    return read_model(path, max_bytes=max_bytes)[0]


def read_model(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_MODEL_BYTES) -> tuple[onnx.ModelProto, str]:
    """The model, and the identity of the files it was read from (path, size, times and inode of the model file and of
    its external data files, taken before each is read): equal identities mean the same bytes were read, unless a file
    was rewritten keeping its size and every time stamp. "" (no identity) where a file changed in the last
    RACY_SECONDS."""
    p = Path(path)
    name = f"'{p.name}'"
    if not p.is_file():
        raise ModelError(f"The model file {p} does not exist; check the path.")
    stats = [_identity(p)]
    size = p.stat().st_size
    if size > max_bytes:
        raise ModelError(f"{name} is {_mib(size)}, over the {_mib(max_bytes)} limit; raise the limit or use a smaller model.")
    model = _parse(p.read_bytes(), name)
    tensors = [t for t in _all_tensors(model) if uses_external_data(t)]
    if tensors:
        base = p.resolve().parent
        total = size
        for t in tensors:
            location = next((e.value for e in t.external_data if e.key == "location"), "")
            target = _confined(base, location, t.name, name)
            stats.append(_identity(target))
            total += target.stat().st_size
            if total > max_bytes:
                raise ModelError(f"{name} with its external data is over the {_mib(max_bytes)} limit; raise the limit or use a smaller model.")
        load_external_data_for_model(model, str(base))
    check_graph(model, name)
    return model, "" if None in stats else "\n".join(dict.fromkeys(stats))  # type: ignore[arg-type]


RACY_SECONDS = 2.0  # file times tick coarsely (2 s on FAT, some network file systems): a file this fresh has no identity


def _identity(path: Path) -> str | None:
    """None where the file changed so recently that a rewrite in the same tick of its clock would keep its times (git's
    "racily clean" rule): such a file is digested every time until it is older."""
    st = path.stat()
    if time.time() - st.st_mtime < RACY_SECONDS or time.time() - st.st_ctime < RACY_SECONDS:
        return None
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}|{st.st_dev}"


def _confined(base: Path, location: str, tensor: str, name: str) -> Path:
    """Refuses external data that would read outside the model's own folder, before reading anything."""
    if not location or os.path.isabs(location) or ".." in Path(location).parts:
        raise ModelError(
            f"{name} points the weights of '{tensor}' to '{location}', outside the model's folder; "
            "external data must be a plain file name next to the model."
        )
    candidate = base / location
    if candidate.is_symlink() or not candidate.resolve().is_relative_to(base):
        raise ModelError(
            f"{name} points the weights of '{tensor}' to '{location}', a link that leaves the model's folder; "
            "copy the data file next to the model instead of linking it."
        )
    if not candidate.is_file():
        raise ModelError(f"{name} needs the external data file '{location}' for '{tensor}', which is missing; put it next to the model.")
    return candidate


def _parse(data: bytes, name: str) -> onnx.ModelProto:
    if not data:
        raise ModelError(f"{name} is empty (0 bytes); upload or point to the .onnx file again (a failed copy or download leaves an empty file).")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as err:
        raise ModelError(
            f"{name} is not a valid ONNX model (the file could not be parsed: {type(err).__name__}); "
            "check that it is a complete .onnx file, exported again if needed."
        ) from None
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise ModelError(f"{name} contains no ONNX graph; check that it is an .onnx model file and not another format.")
    return model


def _all_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    tensors = list(model.graph.initializer)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
    return tensors


RUNTIME_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")


def check_versions(model: onnx.ModelProto, name: str) -> None:
    if model.ir_version > onnx.IR_VERSION:
        raise ModelError(f"{name} has IR version {model.ir_version}, newer than the installed onnx reads (at most "
                         f"{onnx.IR_VERSION}); save it with an older IR version or upgrade onnx and onnxruntime.")
    newest = onnx.defs.onnx_opset_version()
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset > newest:
        raise ModelError(f"{name} uses opset {opset}, newer than the installed onnx supports (at most {newest}); "
                         f"export it with opset {newest} or older, or upgrade onnx and onnxruntime.")


def check_ops(model: onnx.ModelProto, name: str) -> None:
    """Names the op and the node ONNX Runtime would refuse, instead of a runtime error later."""
    versions = {o.domain: o.version for o in model.opset_import}
    for node in model.graph.node:
        label = node.name or f"{node.op_type} node #{list(model.graph.node).index(node)}"
        if node.domain not in RUNTIME_DOMAINS:
            raise ModelError(f"{name} uses op '{node.domain}::{node.op_type}' at node '{label}', a custom op ONNX Runtime "
                             "cannot run here; replace it with standard ONNX ops before quantizing.")
        if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type, versions.get(node.domain, versions.get("", 0)), ""):
            raise ModelError(f"{name} uses op '{node.op_type}' at node '{label}', which ONNX (opset "
                             f"{versions.get(node.domain, versions.get('', 0))}) does not define; fix the export or replace the op.")


# ops that only a quantized graph holds: ONNX Runtime's static Q/DQ and QOperator formats and its dynamic quantization
QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "QLinearConv",
                 "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul", "QAttention", "DynamicQuantizeMatMul",
                 "DynamicQuantizeLSTM", "MatMulIntegerToFloat", "MatMulNBits")


def check_not_quantized(model: onnx.ModelProto, name: str) -> None:
    """QuantScope quantizes an FP32 model itself: quantizing an already quantized one again compares nothing useful."""
    found = Counter(n.op_type for n in model.graph.node if n.op_type in QUANTIZED_OPS)
    if found:
        ops = " and ".join(f"{c} {op}" for op, c in found.most_common(2))
        raise ModelError(f"{name} is already quantized (it has {ops} nodes); load the FP32 model it was quantized from, "
                         "which QuantScope quantizes and compares itself.")


def check_graph(model: onnx.ModelProto, name: str = "the model") -> None:
    """Structural checks the runtime would fail on later with a less readable message. A file corrupt enough
    to break the checks themselves (invalid UTF-8 in an op name, say) is reported as corrupt."""
    try:
        _check_graph(model, name)
    except ModelError:
        raise
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"{name} is corrupt ({type(err).__name__} while checking its graph); export the model again.") from None


def _check_graph(model: onnx.ModelProto, name: str) -> None:
    check_versions(model, name)
    g = model.graph
    names = [n.name for n in g.node if n.name]
    dup = [k for k, c in Counter(names).items() if c > 1]
    if dup:
        raise ModelError(f"{name} has {len(dup)} duplicate node name(s), e.g. '{dup[0]}'; give every node a unique name.")
    produced = [o for n in g.node for o in n.output if o]
    dup_t = [k for k, c in Counter(produced).items() if c > 1]
    if dup_t:
        raise ModelError(f"{name} produces the tensor '{dup_t[0]}' more than once; every tensor must have exactly one producer.")
    _check_acyclic(g, name)
    check_ops(model, name)
    check_not_quantized(model, name)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"{name} fails ONNX validation ({first}); fix the export or run onnx.checker on it.") from None


def _check_acyclic(g: onnx.GraphProto, name: str) -> None:
    """Kahn's algorithm over tensors: linear in the graph size."""
    available = {i.name for i in g.input} | {i.name for i in g.initializer} | {""}
    waiting: dict[str, list[int]] = {}
    missing = []
    for idx, node in enumerate(g.node):
        need = {i for i in node.input if i not in available}
        missing.append(len(need))
        for t in need:
            waiting.setdefault(t, []).append(idx)
    ready = [i for i, m in enumerate(missing) if m == 0]
    done = 0
    while ready:
        idx = ready.pop()
        done += 1
        for out in g.node[idx].output:
            for consumer in waiting.pop(out, []):
                missing[consumer] -= 1
                if missing[consumer] == 0:
                    ready.append(consumer)
    if done < len(g.node):
        stuck = g.node[next(i for i, m in enumerate(missing) if m > 0)]
        raise ModelError(
            f"{name} has a cycle or a missing tensor: node '{stuck.name or stuck.op_type}' waits for inputs "
            "that no node produces; fix the graph so it is a DAG in which every input is defined."
        )
