"""Builds sample_models/mobile_digits.onnx: a small MobileNet-style digits classifier whose pre-processing renames and
fuses nodes, the way real exported models are (the dashboard's provenance view and its browser test use it).

Dev-only: numpy, onnx, onnxruntime and scikit-learn's bundled digits (`pip install -e .[build]`; torch is not needed).
The output is committed, so users and CI never run this. Deterministic: fixed seeds, closed-form training.

    python sample_models/build_mobile.py

The network (input [batch, 1, 32, 32], the same data files as resnet_digits):
  Conv 1->8 3x3, BatchNormalization, HardSwish, MaxPool     (all four unnamed, as older exporters leave them)
  features_conv 8->16 3x3, features_relu                    (named)
  mix_conv 16->16 1x1, mix_bn, mix_act (HardSwish)          (named)
  MaxPool, Flatten                                          (unnamed)
  classifier (Gemm 1024->10)                                (named)
The convolutions are fixed random features (He initialisation; BatchNormalization statistics measured on the training
split) and the classifier is fitted by ridge regression on them: a real classifier (99.0% test accuracy) without
gradient training. ONNX Runtime's pre-processing folds both BatchNormalizations into their Convs, expands both
HardSwish nodes into HardSigmoid + Mul and names the unnamed nodes Conv_0, MaxPool_0, ...: 5 of its 12 nodes keep
no name of the file.

Planted quantization problem (as in resnet_digits_outlier): channel OUTLIER_CHANNEL of features_relu's output is scaled
so its range is OUTLIER_RANGE_RATIO times the other channels' largest, and mix_conv's weights for that input channel
are divided back. Relu(s*x) = s*Relu(x) for s > 0, so FP32 outputs are unchanged, while per-tensor INT8 of that
activation rounds the 15 other channels away: mix_conv is the culprit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from build import IR_VERSION, OPSET, load_digits_32, split  # noqa: E402  (the same digits, split and pinned IR version)

NAME = "mobile_digits"
SEED = 1
OUTLIER_CHANNEL = 5
OUTLIER_RANGE_RATIO = 80.0
RIDGE = 1e-1


def _conv_weight(rng: np.random.Generator, cout: int, cin: int, k: int) -> np.ndarray:
    return (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)


def graph(p: dict[str, np.ndarray], extra_outputs: tuple[str, ...] = ()) -> onnx.ModelProto:
    """The network for parameters `p`; `extra_outputs` are intermediate tensors to expose (only while building)."""
    n = helper.make_node
    nodes = [
        n("Conv", ["input", "stem.weight", "stem.bias"], ["1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        n("BatchNormalization", ["1", "bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"], ["2"], epsilon=1e-5),
        n("HardSwish", ["2"], ["3"]),
        n("MaxPool", ["3"], ["4"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["4", "features.weight", "features.bias"], ["features_out"], name="features_conv", pads=[1, 1, 1, 1],
          kernel_shape=[3, 3]),
        n("Relu", ["features_out"], ["features_relu_out"], name="features_relu"),
        n("Conv", ["features_relu_out", "mix.weight", "mix.bias"], ["mix_out"], name="mix_conv", kernel_shape=[1, 1]),
        n("BatchNormalization", ["mix_out", "bn2.scale", "bn2.bias", "bn2.mean", "bn2.var"], ["mix_bn_out"], name="mix_bn",
          epsilon=1e-5),
        n("HardSwish", ["mix_bn_out"], ["mix_act_out"], name="mix_act"),
        n("MaxPool", ["mix_act_out"], ["9"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Flatten", ["9"], ["10"], axis=1),
        n("Gemm", ["10", "classifier.weight", "classifier.bias"], ["logits"], name="classifier", transB=1),
    ]
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in p.items()]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])]
    outputs += [helper.make_tensor_value_info(t, TensorProto.FLOAT, [None] * (2 if t == "10" else 4)) for t in extra_outputs]
    g = helper.make_graph(nodes, "mobile_digits", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 32, 32])],
                          outputs, inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="quantscope-sample-build")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def run(p: dict[str, np.ndarray], x: np.ndarray, tensors: tuple[str, ...]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(graph(p, tuple(t for t in tensors if t != "logits")).SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    outs = [sess.run(list(tensors), {"input": x[i : i + 256]}) for i in range(0, len(x), 256)]
    return {t: np.concatenate([o[k] for o in outs]) for k, t in enumerate(tensors)}


def batchnorm(rng: np.random.Generator, acts: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
    """Normalises with the measured statistics, then a scale and shift that keep HardSwish in its curved part."""
    c = acts.shape[1]
    return {f"{prefix}.scale": rng.uniform(0.8, 1.6, c), f"{prefix}.bias": rng.uniform(-0.5, 0.8, c),
            f"{prefix}.mean": acts.mean(axis=(0, 2, 3)), f"{prefix}.var": acts.var(axis=(0, 2, 3))}


def build() -> dict:
    data = split(*load_digits_32())
    x_train, y_train, x_test, y_test = data["x_train"], data["y_train"], data["x_test"], data["y_test"]
    rng = np.random.default_rng(SEED)
    p: dict[str, np.ndarray] = {
        "stem.weight": _conv_weight(rng, 8, 1, 3), "stem.bias": np.zeros(8),
        "bn1.scale": np.ones(8), "bn1.bias": np.zeros(8), "bn1.mean": np.zeros(8), "bn1.var": np.ones(8),
        "features.weight": _conv_weight(rng, 16, 8, 3), "features.bias": rng.uniform(-0.1, 0.1, 16),
        "mix.weight": _conv_weight(rng, 16, 16, 1), "mix.bias": np.zeros(16),
        "bn2.scale": np.ones(16), "bn2.bias": np.zeros(16), "bn2.mean": np.zeros(16), "bn2.var": np.ones(16),
        "classifier.weight": np.zeros((10, 1024)), "classifier.bias": np.zeros(10),
    }
    p.update(batchnorm(rng, run(p, x_train, ("1",))["1"], "bn1"))
    p.update(batchnorm(rng, run(p, x_train, ("mix_out",))["mix_out"], "bn2"))
    feats = run(p, x_train, ("10",))["10"].astype(np.float64)
    # ridge regression onto one-hot targets, with the bias as an unpenalised column
    mu, sd = feats.mean(axis=0), feats.std(axis=0) + 1e-6
    z = (feats - mu) / sd
    onehot = np.eye(10)[y_train]
    w = np.linalg.solve(z.T @ z + RIDGE * len(z) * np.eye(z.shape[1]), z.T @ (onehot - onehot.mean(axis=0)))
    p["classifier.weight"] = (w / sd[:, None]).T
    p["classifier.bias"] = onehot.mean(axis=0) - (mu / sd) @ w
    clean = run(p, x_test, ("logits",))["logits"]

    # the planted outlier channel: its range becomes OUTLIER_RANGE_RATIO x the other channels' largest
    relu = run(p, x_train, ("features_relu_out",))["features_relu_out"]
    per_channel = relu.max(axis=(0, 2, 3))
    others = np.delete(per_channel, OUTLIER_CHANNEL).max()
    s = float(OUTLIER_RANGE_RATIO * others / per_channel[OUTLIER_CHANNEL])
    p["features.weight"][OUTLIER_CHANNEL] *= s
    p["features.bias"][OUTLIER_CHANNEL] *= s
    p["mix.weight"][:, OUTLIER_CHANNEL] /= s
    logits = run(p, x_test, ("logits",))["logits"]
    model = graph(p)
    assert model.ir_version == IR_VERSION
    onnx.save(model, HERE / f"{NAME}.onnx")
    return {
        "accuracy": float((logits.argmax(axis=1) == y_test).mean()),
        "max_abs_diff": float(np.abs(logits - clean).max()),
        "scale": s,
        "range_ratio": float(run(p, x_train, ("features_relu_out",))["features_relu_out"].max(axis=(0, 2, 3))[OUTLIER_CHANNEL] / others),
    }


def update_catalog(found: dict) -> None:
    path = HERE / "catalog.json"
    catalog = json.loads(path.read_text())
    catalog["models"][NAME] = {
        "inputs": {"input": {"shape": ["batch", 1, 32, 32], "dtype": "float32"}},
        "outputs": {"logits": {"shape": ["batch", 10], "dtype": "float32"}},
        "calibration": "digits_calib.npz", "evaluation": "digits_eval.npz", "labels": "digits_eval_labels.npy",
        "fp32_accuracy": round(found["accuracy"], 3), "ir_version": IR_VERSION, "opset": OPSET, "file": f"{NAME}.onnx",
        "description": ("MobileNet-style digits classifier written as older exporters write graphs: unnamed nodes, "
                        "BatchNormalization and HardSwish. Pre-processing folds the BatchNormalizations, expands HardSwish "
                        "into HardSigmoid + Mul and names the unnamed nodes, so the Layers page shows where each node came "
                        "from. One planted outlier channel makes mix_conv the culprit."),
        "fp32_max_abs_diff_vs_clean": found["max_abs_diff"],
        "outlier": {"tensor": "features_relu_out", "channel": OUTLIER_CHANNEL, "scale": round(found["scale"], 4),
                    "range_ratio": round(found["range_ratio"], 2), "producer_nodes": ["features_conv", "features_relu"],
                    "consumer_nodes": ["mix_conv"]},
        "renamed": {"#0 Conv": "Conv_0 (with #1 BatchNormalization folded in)", "#2 HardSwish": "HardSigmoid + Mul",
                    "mix_act": "HardSigmoid + Mul"},
    }
    path.write_text(json.dumps(catalog, indent=2) + "\n")


if __name__ == "__main__":
    found = build()
    update_catalog(found)
    print(f"{NAME}: test accuracy {found['accuracy']:.3f}, outlier scale {found['scale']:.2f} "
          f"(range ratio {found['range_ratio']:.1f}), FP32 max |diff| vs clean {found['max_abs_diff']:.2e}")
