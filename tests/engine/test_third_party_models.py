"""Models nobody on the team wrote: the model-zoo architectures the onnx package ships for its backend tests
(Caffe2 exports, opset 9, IR 3, weights listed as graph inputs and built by ConstantOfShape)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest

from engine import compare, model_info, rebuild
from engine.compare.layerwise import LAYER_COLUMNS

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS = ["light_squeezenet", "light_inception_v1", "light_shufflenet", "light_bvlc_alexnet"]


@pytest.mark.parametrize("name", MODELS)
def test_compare_and_rebuild_contract_on_a_model_zoo_graph(name, tmp_path):
    path = LIGHT / f"{name}.onnx"
    if not path.is_file():
        pytest.skip(f"{path} is not shipped by this onnx version")
    original = onnx.load(path)
    info = model_info(original)
    x = np.random.default_rng(0).standard_normal((3, *info.inputs[0].shape[1:])).astype(np.float32)
    np.savez(tmp_path / "d.npz", **{info.inputs[0].name: x})
    out = tmp_path / "run"
    result = compare(path, tmp_path / "d.npz", out_dir=out, batch_size=1, provider="cpu")

    layers = pd.read_csv(out / "layers.csv")
    assert tuple(layers.columns[: len(LAYER_COLUMNS)]) == LAYER_COLUMNS and len(layers) > 10
    reference = onnx.load(out / "reference.onnx")
    names = [n.name for n in reference.graph.node]
    assert all(names) and len(names) == len(set(names))
    assert set(layers["node"]) <= set(names)
    assert next(o.version for o in reference.opset_import if o.domain in ("", "ai.onnx")) >= 13
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["outputs"]) == {o.name for o in original.graph.output}
    assert summary["samples"] == 3 and summary["culprits"]
    # every one is a classifier: SqueezeNet's N x 1000 x 1 x 1 scores too (it got no top-1 agreement)
    assert summary["task"]["output"] == original.graph.output[0].name and 0 <= summary["task"]["top1_agreement"] <= 1

    sess = ort.InferenceSession(str(out / "candidate.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == [o.name for o in original.graph.output]
    sess.run(None, {info.inputs[0].name: x[:1]})

    quantized_culprit = result.summary.culprits[0].node  # every culprit is a fallback candidate now
    assert result.layers.loc[result.layers["node"] == quantized_culprit, "quantized"].all()
    fixed = rebuild(out, fallback=[quantized_culprit])
    assert fixed.summary.recalibrated is False and fixed.summary.fp16_nodes == (quantized_culprit,)


def test_whether_accuracy_can_be_measured_is_read_from_the_declared_outputs():
    """A classifier zoo graph declares N x 1000 scores; a sequence recogniser (PP-OCRv4: N x T x classes) or a detector
    declares none, and its labels cannot give an accuracy."""
    from engine.model.info import ModelInfo, TensorSpec

    for name, scores in (("light_bvlc_alexnet", True), ("light_squeezenet", True)):  # N x 1000; N x 1000 x 1 x 1
        if (LIGHT / f"{name}.onnx").is_file():
            assert model_info(onnx.load(LIGHT / f"{name}.onnx")).class_scores() is scores, name

    def declared(*shapes):
        return ModelInfo((), tuple(TensorSpec(f"o{i}", s, "float32") for i, s in enumerate(shapes)), 0, {}, 17, 8, "")

    assert declared(("N", 6625)).class_scores() is True
    assert declared(("N", 40, 6625)).class_scores() is False
    assert declared(("N", 1)).class_scores() is False  # one score: nothing to take the arg-max of
    assert declared(("N", 1000, 1, 1)).class_scores() is True and declared(("N", 80, 20, 20)).class_scores() is False
    assert declared(("N", 40, 6625), None).class_scores() is None  # a rank not declared: cannot tell
