"""Every data format loads into identical batches for the same content."""

from __future__ import annotations

import base64
import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from engine.data import ImagePreprocess, load_data
from engine.model import model_info
from engine.model.info import ModelInfo, TensorSpec

INFO = ModelInfo(
    inputs=(TensorSpec("input", ("batch", 1, 32, 32), "float32"),),
    outputs=(TensorSpec("logits", ("batch", 10), "float32"),),
    node_count=1, op_histogram={}, opset=17, ir_version=10, producer="",
)


@pytest.fixture(scope="module")
def content() -> np.ndarray:
    # 8-bit representable values so PNGs carry the same content exactly
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, size=(10, 1, 32, 32)).astype(np.float32) / 255.0).astype(np.float32)


def _encode(arr: np.ndarray) -> dict:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return {"array": base64.b64encode(buf.getvalue()).decode(), "polygraphy_class": "ndarray"}


def _write_all(tmp_path, content):
    paths = {}
    paths["npz"] = tmp_path / "d.npz"
    np.savez(paths["npz"], input=content)
    paths["npy"] = tmp_path / "d.npy"
    np.save(paths["npy"], content)
    paths["json"] = tmp_path / "d.json"
    # two "iterations" of 4 and 6 samples, as `polygraphy run --save-inputs` writes one feed dict per iteration
    paths["json"].write_text(json.dumps([{"input": _encode(content[:4])}, {"input": _encode(content[4:])}]))
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, sample in enumerate(content):
        Image.fromarray(np.round(sample[0] * 255).astype(np.uint8), mode="L").save(folder / f"{i:03d}.png")
    paths["folder"] = folder
    paths["zip"] = tmp_path / "imgs.zip"
    with zipfile.ZipFile(paths["zip"], "w") as zf:
        for f in sorted(folder.iterdir()):
            zf.write(f, f"images/{f.name}")
    return paths


@pytest.mark.parametrize("batch", [1, 3, 4, 10])
def test_all_formats_give_identical_batches(tmp_path, content, batch):
    paths = _write_all(tmp_path, content)
    loaded = {k: load_data(p, INFO) for k, p in paths.items()}
    reference = list(loaded["npz"].batches(batch))
    assert sum(b["input"].shape[0] for b in reference) == 10
    for kind, source in loaded.items():
        assert source.num_samples == 10, kind
        got = list(source.batches(batch))
        assert len(got) == len(reference), kind
        for a, b in zip(reference, got):
            assert b["input"].dtype == np.float32
            np.testing.assert_allclose(a["input"], b["input"], atol=1e-6, err_msg=kind)


def test_sources_are_reiterable(tmp_path, content):
    paths = _write_all(tmp_path, content)
    for p in paths.values():
        s = load_data(p, INFO)
        first = np.concatenate([b["input"] for b in s.batches(4)])
        second = np.concatenate([b["input"] for b in s.batches(4)])
        np.testing.assert_array_equal(first, second)


def test_image_preprocessing_resize_crop_mean_std_nhwc(tmp_path):
    # 40x20 RGB image -> NHWC 10x10: shorter side (20) scales to 10, width to 20, center crop 10
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :, 0] = 255
    img[:, 18:22, 1] = 200
    Image.fromarray(img).save(tmp_path / "a.png")
    info = ModelInfo((TensorSpec("x", (1, 10, 10, 3), "float32"),), (), 0, {}, 17, 10, "")
    pre = ImagePreprocess(color="BGR", scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    batch = next(load_data(tmp_path, info, images=pre).batches(1))["x"]
    assert batch.shape == (1, 10, 10, 3)
    # BGR: channel 2 is red = 255 -> (1 - 0.5) / 0.5 = 1
    np.testing.assert_allclose(batch[0, :, :, 2], 1.0, atol=1e-6)
    assert batch[0, 5, 4:6, 1].min() > 0  # the green stripe is in the centre crop


def test_model_input_metadata_reads_dynamic_dims(samples):
    import onnx

    info = model_info(onnx.load(samples / "resnet_digits.onnx"))
    assert info.inputs[0] == TensorSpec("input", ("batch", 1, 32, 32), "float32")
    assert info.op_histogram["Conv"] == 9
