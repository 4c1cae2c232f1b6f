"""Generates the hostile-input corpus: bad models, data, labels and archives, each with the one sentence a
user must see. `python tests/hostile/build_corpus.py OUT` writes the files and OUT/manifest.json.

A case says which argument carries the bad file (model, calib or labels); the others are good."""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

SAMPLES = Path(__file__).resolve().parents[2] / "sample_models"
GOOD_MODEL = SAMPLES / "resnet_digits.onnx"


def _tiny(nodes, inputs=None, outputs=None, inits=(), opset=17, ir=10, domains=()):
    g = helper.make_graph(nodes, "g", inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                          outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset), *[helper.make_opsetid(d, 1) for d in domains]])
    m.ir_version = ir
    return m


def _save_raw(model: onnx.ModelProto, path: Path) -> None:
    path.write_bytes(model.SerializeToString())


def _external(path: Path, location: str) -> None:
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "64")):
        w.external_data.add(key=k, value=v)
    _save_raw(_tiny([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], inits=[w]), path)


def _png_with_size(path: Path, width: int, height: int) -> None:
    """A tiny real PNG whose header claims width x height (a decompression bomb's calling card)."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature + length + type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[12 : ihdr + 13])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


def _images_zip(path: Path, images: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in images.items():
            zf.writestr(name, data)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _poly(arr_or_payload) -> dict:
    if isinstance(arr_or_payload, np.ndarray):
        buf = io.BytesIO()
        np.save(buf, arr_or_payload, allow_pickle=False)
        arr_or_payload = base64.b64encode(buf.getvalue()).decode()
    return {"array": arr_or_payload, "polygraphy_class": "ndarray"}


def build(out: Path) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    good = np.load(SAMPLES / "digits_calib.npz")["input"][:8]
    np.savez(out / "good_calib.npz", input=good)
    cases: list[dict] = []

    def case(name, arg, file, expect, **extra):
        if arg == "calib" and expect is not None and Path(file).suffix != ".zip":  # the engine names the file and its role
            expect = expect.replace(f"'{Path(file).name}'", f"'{Path(file).name}' (calibration data)", 1)
        cases.append({"name": name, "arg": arg, "file": str(Path(file).relative_to(out)), "expect": expect, **extra})

    # ------------------------------------------------------------------ models
    raw = GOOD_MODEL.read_bytes()
    p = out / "truncated.onnx"
    p.write_bytes(raw[: len(raw) // 3])
    case("truncated protobuf", "model", p, "'truncated.onnx' is not a valid ONNX model (the file could not be parsed: DecodeError); "
         "check that it is a complete .onnx file, exported again if needed.")
    p = out / "text.onnx"
    p.write_text("this is a README, not a model\n" * 20)
    case("text file named .onnx", "model", p, "'text.onnx' is not a valid ONNX model (the file could not be parsed: DecodeError); "
         "check that it is a complete .onnx file, exported again if needed.")
    p = out / "empty.onnx"
    p.write_bytes(b"")
    case("empty file", "model", p, "'empty.onnx' is empty (0 bytes); upload or point to the .onnx file again (a failed copy or "
         "download leaves an empty file).")
    p = out / "png.onnx"
    p.write_bytes(_png(Image.new("RGB", (4, 4))))
    case("image named .onnx", "model", p, None, expect_prefix="'png.onnx' ")
    (out / "ext").mkdir(exist_ok=True)
    _external(out / "ext" / "dotdot.onnx", "../secret.bin")
    case("external data with ../", "model", out / "ext" / "dotdot.onnx", "'dotdot.onnx' points the weights of 'w' to '../secret.bin', "
         "outside the model's folder; external data must be a plain file name next to the model.")
    _external(out / "ext" / "absolute.onnx", "/etc/passwd")
    case("external data absolute", "model", out / "ext" / "absolute.onnx", "'absolute.onnx' points the weights of 'w' to '/etc/passwd', "
         "outside the model's folder; external data must be a plain file name next to the model.")
    link = out / "ext" / "link.bin"
    if not link.exists():
        os.symlink("/etc/hostname", link)
    _external(out / "ext" / "symlink.onnx", "link.bin")
    case("external data symlink escaping", "model", out / "ext" / "symlink.onnx", "'symlink.onnx' points the weights of 'w' to 'link.bin', "
         "a link that leaves the model's folder; copy the data file next to the model instead of linking it.")
    _external(out / "ext" / "missing.onnx", "weights.bin")
    case("external data missing", "model", out / "ext" / "missing.onnx", "'missing.onnx' needs the external data file 'weights.bin' for "
         "'w', which is missing; put it next to the model.")
    p = out / "big.onnx"
    p.write_bytes(raw)
    case("over the size limit", "model", p, f"'big.onnx' is {len(raw) / 1024**2:.1f} MiB, over the 0.1 MiB limit; raise the limit "
         "or use a smaller model.", cli_extra=["--max-model-mb", "0.1"], api_extra={"max_model_bytes": int(0.1 * 1024**2)})
    _save_raw(_tiny([helper.make_node("Foo", ["x"], ["y"], name="mystery", domain="com.example")], domains=["com.example"]), out / "custom_op.onnx")
    case("custom op ORT cannot run", "model", out / "custom_op.onnx", "'custom_op.onnx' uses op 'com.example::Foo' at node 'mystery', a custom "
         "op ONNX Runtime cannot run here; replace it with standard ONNX ops before quantizing.")
    # ddddocr's common_old.onnx ships dynamically quantized (DynamicQuantizeLinear + ConvInteger); a Q/DQ export is the same case
    qdq = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
           helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq"), helper.make_node("Relu", ["dq"], ["y"], name="r")]
    _save_raw(_tiny(qdq, inits=[numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(0), "z")]),
              out / "quantized.onnx")
    case("already quantized", "model", out / "quantized.onnx", "'quantized.onnx' is already quantized (it has 1 QuantizeLinear and 1 "
         "DequantizeLinear nodes); load the FP32 model it was quantized from, which QuantScope quantizes and compares itself.")
    # silero-vad 6.2.3: state [2, batch, 128] and a scalar sample rate; its plain export nests every Conv in an If
    conv_in = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])]
    state = helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 4])
    eye = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    _save_raw(_tiny([helper.make_node("MatMul", ["x", "w"], ["xm"], name="mm"), helper.make_node("Add", ["xm", "state"], ["y"], name="a")],
                    inputs=[*conv_in, state], outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, "batch", 4])],
                    inits=[eye]), out / "batch_second.onnx")
    case("batch axis not first", "model", out / "batch_second.onnx", "Model input 'state' has its batch axis 'batch' at position 1 "
         "[2, batch, 4], but QuantScope batches every input on axis 0; export the model with the batch axis first.")
    rate = helper.make_tensor_value_info("sr", TensorProto.INT64, [])
    _save_raw(_tiny([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"), helper.make_node("Identity", ["sr"], ["sr_out"], name="i")],
                    inputs=[*conv_in, rate], outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]),
                                                      helper.make_tensor_value_info("sr_out", TensorProto.INT64, [])], inits=[eye]),
              out / "scalar_input.onnx")
    case("scalar input", "model", out / "scalar_input.onnx", "Model input 'sr' is a scalar, so it cannot take one value per sample: "
         "QuantScope batches every input on axis 0; export the model with 'sr' as a constant or with a batch axis first.")
    branch = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["b"], name="mm")], "branch", [],
                               [helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 4])])
    nested = [helper.make_node("ReduceMax", ["x"], ["m"], name="max", keepdims=0),
              helper.make_node("Greater", ["m", "zero"], ["cond"], name="gt"),
              helper.make_node("If", ["cond"], ["y"], name="branch_if", then_branch=branch, else_branch=branch)]
    _save_raw(_tiny(nested, inits=[numpy_helper.from_array(np.eye(4, dtype=np.float32), "w"),
                                   numpy_helper.from_array(np.float32(0), "zero")]), out / "nested.onnx")
    case("quantizable nodes only in an If", "model", out / "nested.onnx", "The model's 2 MatMul nodes all sit inside control-flow "
         "subgraphs (If, Loop, Scan), which QuantScope does not quantize; export the model without control flow around them.")
    _save_raw(_tiny([helper.make_node("FooBar", ["x"], ["y"], name="odd")]), out / "unknown_op.onnx")
    case("unknown standard op", "model", out / "unknown_op.onnx", "'unknown_op.onnx' uses op 'FooBar' at node 'odd', which ONNX (opset 17) "
         "does not define; fix the export or replace the op.")
    _save_raw(_tiny([helper.make_node("Relu", ["x"], ["y"], name="r")], opset=99), out / "opset99.onnx")
    case("opset too new", "model", out / "opset99.onnx", f"'opset99.onnx' uses opset 99, newer than the installed onnx supports (at most "
         f"{onnx.defs.onnx_opset_version()}); export it with opset {onnx.defs.onnx_opset_version()} or older, or upgrade onnx and onnxruntime.")
    _save_raw(_tiny([helper.make_node("Relu", ["x"], ["y"], name="r")], ir=99), out / "ir99.onnx")
    case("IR version too new", "model", out / "ir99.onnx", f"'ir99.onnx' has IR version 99, newer than the installed onnx reads (at most "
         f"{onnx.IR_VERSION}); save it with an older IR version or upgrade onnx and onnxruntime.")
    _save_raw(_tiny([helper.make_node("Relu", ["x"], ["h"], name="same"), helper.make_node("Relu", ["h"], ["y"], name="same")]), out / "dup_nodes.onnx")
    case("duplicate node names", "model", out / "dup_nodes.onnx", "'dup_nodes.onnx' has 1 duplicate node name(s), e.g. 'same'; give every node a unique name.")
    _save_raw(_tiny([helper.make_node("Relu", ["x"], ["y"], name="a"), helper.make_node("Sigmoid", ["x"], ["y"], name="b")]), out / "dup_tensors.onnx")
    case("duplicate tensor names", "model", out / "dup_tensors.onnx", "'dup_tensors.onnx' produces the tensor 'y' more than once; every tensor must have exactly one producer.")
    _save_raw(_tiny([helper.make_node("Add", ["x", "y"], ["h"], name="loop_a"), helper.make_node("Relu", ["h"], ["y"], name="loop_b")]), out / "cycle.onnx")
    case("graph with a cycle", "model", out / "cycle.onnx", "'cycle.onnx' has a cycle or a missing tensor: node 'loop_a' waits for inputs that "
         "no node produces; fix the graph so it is a DAG in which every input is defined.")
    _save_raw(_tiny([helper.make_node("Relu", ["x"], ["y"], name="r")], inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 1, 32, 32])],
                    outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, 32, 32])]), out / "nothing_to_quantize.onnx")
    _fix_io(out / "nothing_to_quantize.onnx")
    case("no node to quantize", "model", out / "nothing_to_quantize.onnx", "The model has no Conv, ConvTranspose, Gemm, MatMul node to quantize; "
         "choose op types it has (it has Relu) with --op-types.")
    w3 = numpy_helper.from_array(np.ones((3, 3, 1, 1), np.float32), "w3")
    _save_raw(_tiny([helper.make_node("Conv", ["x", "w3"], ["y"], name="c")], inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 32, 32])],
                    outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 32, 32])], inits=[w3]), out / "three_channels.onnx")
    _fix_io(out / "three_channels.onnx")
    case("data does not fit the model's shape", "model", out / "three_channels.onnx", "Input 'input' in 'good_calib.npz' (calibration data) has size 1 on axis 1 "
         "but the model expects 3 (model shape [n, 3, 32, 32], data sample shape [1, 32, 32]).")

    # ------------------------------------------------------------------ arrays
    p = out / "pickled.npy"
    np.save(p, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    case("pickled .npy", "calib", p, "'pickled.npy' contains pickled Python objects, which QuantScope never loads because unpickling can run code; "
         "save plain numeric arrays (np.save / np.savez with numeric dtypes).")
    p = out / "pickled.npz"
    np.savez(p, input=np.array([object()], dtype=object))
    case("pickled array in .npz", "calib", p, "Array 'input' in 'pickled.npz' is pickled, which QuantScope never loads because unpickling can run code; "
         "save plain numeric arrays with np.savez.")
    p = out / "raw_pickle.npz"
    p.write_bytes(pickle.dumps({"input": good}))
    case("a pickle named .npz", "calib", p, "'raw_pickle.npz' contains pickled Python objects, which QuantScope never loads because unpickling can "
         "run code; save plain numeric arrays (np.save / np.savez with numeric dtypes).")
    np.savez(out / "missing_input.npz", data=good)
    case("npz missing the input", "calib", out / "missing_input.npz", "'missing_input.npz' has no array for model input 'input' (it has 'data'); "
         "name each array after a model input: 'input'.")
    np.savez(out / "extra_key.npz", input=good, labels=np.zeros(8))
    case("npz with extra keys", "calib", out / "extra_key.npz", "'extra_key.npz' has array(s) 'labels' that are not model inputs; the model's "
         "inputs are 'input'; remove or rename the extra arrays.")
    np.savez(out / "float64.npz", input=good.astype(np.float64))
    case("wrong dtype", "calib", out / "float64.npz", "Input 'input' in 'float64.npz' has dtype float64 but the model expects float32; convert it "
         "(e.g. array.astype(np.float32)).")
    np.savez(out / "rank3.npz", input=good[:, 0])
    case("wrong rank", "calib", out / "rank3.npz", "Input 'input' in 'rank3.npz' has samples of shape [32, 32] (rank 3 with the sample axis) but the "
         "model expects rank 4 [batch, 1, 32, 32]; axis 0 must be the sample axis.")
    np.savez(out / "shape.npz", input=np.zeros((8, 1, 28, 28), np.float32))
    case("wrong shape", "calib", out / "shape.npz", "Input 'input' in 'shape.npz' has size 28 on axis 2 but the model expects 32 (model shape "
         "[batch, 1, 32, 32], data sample shape [1, 28, 28]).")
    for bad, label in ((np.nan, "nan"), (np.inf, "inf")):
        arr = good.copy()
        arr[3, 0, 1, 1] = bad
        np.savez(out / f"{label}.npz", input=arr)
        case(f"{label} in data", "calib", out / f"{label}.npz", f"Input 'input' in '{label}.npz' contains 1 NaN or Inf value(s); clean the data "
             "before calibrating.")
    np.savez(out / "empty.npz", input=np.zeros((0, 1, 32, 32), np.float32))
    case("zero samples", "calib", out / "empty.npz", "'empty.npz' contains zero samples; provide at least one sample per input.")
    np.savez(out / "no_arrays.npz")
    case("npz with no arrays", "calib", out / "no_arrays.npz", "'no_arrays.npz' contains no arrays; it needs one array per model input.")
    np.savez(out / "strings.npz", input=np.array(["a", "b"]))
    case("non-numeric array", "calib", out / "strings.npz", "Array 'input' in 'strings.npz' has dtype <U1, which is not numeric; save numeric arrays only.")
    (out / "data.csv").write_text("1,2,3\n")
    case("unsupported format", "calib", out / "data.csv", "'data.csv' has an unsupported format; use one of: .npz, .npy, .json, .zip, folder of images.")
    (out / "truncated.npz").write_bytes((out / "good_calib.npz").read_bytes()[:500])
    case("truncated npz", "calib", out / "truncated.npz", "'truncated.npz' is not a readable NumPy file (BadZipFile); save it again with np.save or np.savez.")

    # ------------------------------------------------------------------ labels
    np.save(out / "labels_long.npy", np.zeros(9, np.int64))
    case("labels of the wrong length", "labels", out / "labels_long.npy", "'labels_long.npy' has 9 labels but the data has 8 samples; give exactly one label per sample.")
    np.save(out / "labels_float.npy", np.zeros(8, np.float32))
    case("labels of the wrong dtype", "labels", out / "labels_float.npy", "'labels_float.npy' has dtype float32; labels must be integer class indices (save them as int64).")
    np.save(out / "labels_2d.npy", np.zeros((8, 3), np.int64))
    case("labels of the wrong shape", "labels", out / "labels_2d.npy", "'labels_2d.npy' has shape [8, 3]; labels must be a 1-D array with one class index per sample.")
    np.save(out / "labels_pickled.npy", np.array([object()] * 8, dtype=object), allow_pickle=True)
    case("pickled labels", "labels", out / "labels_pickled.npy", "'labels_pickled.npy' contains pickled Python objects, which QuantScope never loads because "
         "unpickling can run code; save plain numeric arrays (np.save / np.savez with numeric dtypes).")

    # ------------------------------------------------------------------ archives and images
    gray = _png(Image.new("L", (32, 32), 128))
    _images_zip(out / "zipslip.zip", {"../../evil.png": gray})
    case("zip member with ../", "calib", out / "zipslip.zip", "'zipslip.zip' contains the member '../../evil.png', whose path leaves the archive; "
         "QuantScope refuses such archives, zip the folder again with relative names.")
    _images_zip(out / "absolute.zip", {"/tmp/evil.png": gray})
    case("zip member with an absolute name", "calib", out / "absolute.zip", "'absolute.zip' contains the member '/tmp/evil.png', whose path leaves "
         "the archive; QuantScope refuses such archives, zip the folder again with relative names.")
    _images_zip(out / "bomb.zip", {"a.png": gray, "zeros.png": b"\0" * (8 * 1024**2)})
    case("zip bomb (ratio)", "calib", out / "bomb.zip", None, expect_prefix="Member 'zeros.png' of 'bomb.zip' expands ")  # zip messages name the archive itself
    _images_zip(out / "many.zip", {f"{i:05d}.png": b"" for i in range(20_001)})
    case("zip with too many members", "calib", out / "many.zip", "'many.zip' has 20001 members, over the limit of 20000; use fewer images.")
    _images_zip(out / "no_images.zip", {"notes.txt": b"hello"})
    case("zip without images", "calib", out / "no_images.zip", "'no_images.zip' contains no images (.png, .jpg, .jpeg, .bmp); add images or pick another folder.")
    (out / "not_a_zip.zip").write_bytes(b"PK\x03\x04 but not really")
    case("corrupt zip", "calib", out / "not_a_zip.zip", "'not_a_zip.zip' is not a readable zip archive; zip the image folder again.")
    _images_zip(out / "corrupt_image.zip", {"a.png": b"\x89PNG\r\n\x1a\n garbage"})
    case("corrupt image", "calib", out / "corrupt_image.zip", "Image 'a.png' cannot be decoded (OSError); check that it is a valid PNG or JPEG file.")
    _images_zip(out / "sixteen_bit.zip", {"a.png": _png(Image.new("I;16", (32, 32), 1000))})
    case("16-bit image", "calib", out / "sixteen_bit.zip", "Image 'a.png' has I;16 pixels (16-bit or float); convert it to 8-bit RGB or grayscale first.")
    bomb = out / "huge.png"
    _png_with_size(bomb, 60_000, 60_000)
    _images_zip(out / "huge_image.zip", {"huge.png": bomb.read_bytes()})
    case("gigantic image (decompression bomb)", "calib", out / "huge_image.zip", "Image 'huge.png' declares an enormous size (a decompression bomb); QuantScope refuses it.")
    _images_zip(out / "big_image.zip", {"big.png": _png_with_size_bytes(9000, 9000)})
    case("image over the pixel limit", "calib", out / "big_image.zip", "Image 'big.png' is 9000x9000 pixels, over the 40000000-pixel limit; resize it first.")

    # ------------------------------------------------------------------ Polygraphy JSON
    (out / "malformed.json").write_text("[{not json")
    case("malformed Polygraphy JSON", "calib", out / "malformed.json", "'malformed.json' is not valid JSON (JSONDecodeError); pass the file written by "
         "`polygraphy run --save-inputs`.")
    (out / "wrong_names.json").write_text(json.dumps([{"data": _poly(good)}]))
    case("Polygraphy JSON with wrong names", "calib", out / "wrong_names.json", "'wrong_names.json' has no array for model input 'input' (it has 'data'); "
         "name each array after a model input: 'input'.")
    (out / "number.json").write_text("42")
    case("JSON that is not a feed list", "calib", out / "number.json", "'number.json' is not a Polygraphy inputs file (expected a list of feed dicts); "
         "pass the file written by `polygraphy run --save-inputs`.")
    (out / "bad_base64.json").write_text(json.dumps([{"input": _poly("!!!not base64!!!")}]))
    case("corrupt base64 payload", "calib", out / "bad_base64.json", "Input 'input' in iteration 0 of 'bad_base64.json' has a corrupt base64 payload; save the inputs again.")
    buf = io.BytesIO()
    np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
    (out / "pickled_payload.json").write_text(json.dumps([{"input": _poly(base64.b64encode(buf.getvalue()).decode())}]))
    case("pickled payload in Polygraphy JSON", "calib", out / "pickled_payload.json", "Input 'input' in iteration 0 of 'pickled_payload.json' contains pickled "
         "Python objects, which QuantScope never loads because unpickling can run code; save plain numeric arrays (np.save / np.savez with numeric dtypes).")
    (out / "not_arrays.json").write_text(json.dumps([{"input": [1, 2, 3]}]))
    case("Polygraphy JSON without arrays", "calib", out / "not_arrays.json", "Input 'input' in iteration 0 of 'not_arrays.json' is not an encoded array; "
         "pass the file written by `polygraphy run --save-inputs`.")

    (out / "manifest.json").write_text(json.dumps(cases, indent=1))
    return cases


def _fix_io(path: Path) -> None:
    """Input named like the sample data's ('input')."""
    m = onnx.load(path)
    m.graph.node[0].input[0] = "input"
    onnx.save(m, path)


def _png_with_size_bytes(width: int, height: int) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "x.png"
        _png_with_size(p, width, height)
        return p.read_bytes()


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "hostile_corpus")
    print(f"{len(build(target))} cases in {target}")
