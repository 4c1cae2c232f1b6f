"""Builds the bundled sample models, their data and sample_models/catalog.json.

Dev-only: needs torch and scikit-learn (`pip install -e .[build]`). The outputs are committed, so users
and CI never run this. Deterministic: fixed seeds, single-threaded training.

    python sample_models/build.py

Models:
  resnet_digits          small residual CNN on scikit-learn's digits upsampled to 32x32
  resnet_digits_outlier  the same weights with one planted quantization-hostile channel: channel c of
                         block3_1_relu_out is scaled by s (~80x the other channels' range) and
                         block3_2_conv's weights for input channel c by 1/s. ReLU(s*x) = s*ReLU(x) for s>0,
                         so FP32 outputs are unchanged while per-tensor INT8 of that activation is ruined.

The ONNX graphs are written by hand (not by torch.onnx) so node and tensor names are readable and stable,
BatchNormalization stays a separate node (as in real exported models), and the IR version is pinned.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
SEED = 0
IR_VERSION = 10
OPSET = 17
OUTLIER_RANGE_RATIO = 80.0
# The last block: the planted error then reaches the output through few layers that could amplify it,
# so "where error is introduced" has one clear answer.
OUTLIER_BLOCK = "block3"


def load_digits_32() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0  # (N, 8, 8) in [0, 1]
    # Bilinear upsampling 8x8 -> 32x32 with a fixed grid so the data is reproducible without torch.
    src = np.linspace(0, 7, 32)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, 7)
    frac = (src - lo).astype(np.float32)
    rows = images[:, lo, :] * (1 - frac)[None, :, None] + images[:, hi, :] * frac[None, :, None]
    up = rows[:, :, lo] * (1 - frac)[None, None, :] + rows[:, :, hi] * frac[None, None, :]
    return up[:, None, :, :].astype(np.float32), digits.target.astype(np.int64)


def split(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(x))
    test, train = order[:500], order[500:]
    calib = train[:128]
    return {
        "x_train": x[train], "y_train": y[train],
        "x_test": x[test], "y_test": y[test],
        "x_calib": x[calib],
    }


# ---------------------------------------------------------------- training (torch, dev-only)
BLOCKS = [("block1", 16, 16, 1), ("block2", 16, 32, 2), ("block3", 32, 64, 2)]


def train(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    def cbr(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1, self.bn1 = cbr(cin, cout, stride)
            self.conv2, self.bn2 = cbr(cout, cout, 1)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            h = torch.relu(self.bn1(self.conv1(x)))
            h = self.bn2(self.conv2(h))
            return torch.relu(h + (x if self.down is None else self.down(x)))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem_conv, self.stem_bn = cbr(1, 16, 1)
            self.blocks = nn.ModuleList([Block(ci, co, s) for _, ci, co, s in BLOCKS])
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = torch.relu(self.stem_bn(self.stem_conv(x)))
            for b in self.blocks:
                x = b(x)
            return self.fc(x.mean(dim=(2, 3)))

    net = Net()
    xt, yt = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(SEED)
    for _epoch in range(25):
        net.train()
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            # light augmentation: random 2-pixel shifts keep the net from memorising
            dx, dy = torch.randint(-2, 3, (2,), generator=gen).tolist()
            xb = torch.roll(xt[idx], shifts=(dy, dx), dims=(2, 3))
            loss = nn.functional.cross_entropy(net(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()

    w: dict[str, np.ndarray] = {}

    def put_cb(prefix: str, conv, bn) -> None:
        w[f"{prefix}_conv.weight"] = conv.weight.detach().numpy().copy()
        for k in ("weight", "bias", "running_mean", "running_var"):
            w[f"{prefix}_bn.{k}"] = getattr(bn, k).detach().numpy().copy()

    put_cb("stem", net.stem_conv, net.stem_bn)
    for (name, *_), b in zip(BLOCKS, net.blocks):
        put_cb(f"{name}_1", b.conv1, b.bn1)
        put_cb(f"{name}_2", b.conv2, b.bn2)
        if b.down is not None:
            put_cb(f"{name}_down", b.down[0], b.down[1])
    w["fc.weight"] = net.fc.weight.detach().numpy().copy()
    w["fc.bias"] = net.fc.bias.detach().numpy().copy()
    with torch.no_grad():
        w["_torch_logits_test"] = net(torch.from_numpy(data["x_test"])).numpy()
    return w


# ---------------------------------------------------------------- ONNX graph, by hand
def to_onnx(w: dict[str, np.ndarray], name: str) -> onnx.ModelProto:
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def init(tname: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(arr.astype(np.float32), tname))
        return tname

    def conv_bn(prefix: str, node_prefix: str, x: str, stride: int, relu: bool) -> str:
        wt = w[f"{prefix}_conv.weight"]
        k = wt.shape[-1]
        cv = f"{node_prefix}_conv_out"
        nodes.append(helper.make_node(
            "Conv", [x, init(f"{node_prefix}_conv.weight", wt)], [cv], name=f"{node_prefix}_conv",
            kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4,
        ))
        bn = f"{node_prefix}_bn_out"
        nodes.append(helper.make_node(
            "BatchNormalization",
            [cv] + [init(f"{node_prefix}_bn.{p}", w[f"{prefix}_bn.{p}"])
                    for p in ("weight", "bias", "running_mean", "running_var")],
            [bn], name=f"{node_prefix}_bn", epsilon=1e-5,
        ))
        if not relu:
            return bn
        out = f"{node_prefix}_relu_out"
        nodes.append(helper.make_node("Relu", [bn], [out], name=f"{node_prefix}_relu"))
        return out

    x = conv_bn("stem", "stem", "input", 1, relu=True)
    for bname, _cin, _cout, stride in BLOCKS:
        h = conv_bn(f"{bname}_1", f"{bname}_1", x, stride, relu=True)
        h = conv_bn(f"{bname}_2", f"{bname}_2", h, 1, relu=False)
        short = x
        if f"{bname}_down_conv.weight" in w:
            short = conv_bn(f"{bname}_down", f"{bname}_down", x, stride, relu=False)
        add = f"{bname}_add_out"
        nodes.append(helper.make_node("Add", [h, short], [add], name=f"{bname}_add"))
        x = f"{bname}_out"
        nodes.append(helper.make_node("Relu", [add], [x], name=f"{bname}_relu"))
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool_out"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pool_out"], ["flat_out"], name="flatten", axis=1))
    nodes.append(helper.make_node(
        "Gemm", ["flat_out", init("fc.weight", w["fc.weight"]), init("fc.bias", w["fc.bias"])],
        ["logits"], name="fc", transB=1,
    ))
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="quantscope-sample-build")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def run_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def relu_activations(model: onnx.ModelProto, tensor: str, x: np.ndarray) -> np.ndarray:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
    import onnxruntime as ort

    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run([tensor], {"input": x})[0]


def plant_outlier(w: dict[str, np.ndarray], clean: onnx.ModelProto, x_calib: np.ndarray) -> tuple[dict, dict]:
    """Scales one channel of <block>_1_relu_out up and <block>_2_conv's matching weights down."""
    acts = relu_activations(clean, f"{OUTLIER_BLOCK}_1_relu_out", x_calib)  # (N, C, H, W)
    per_ch_max = acts.max(axis=(0, 2, 3))
    c = int(np.argmax(per_ch_max))
    others = float(np.delete(per_ch_max, c).max())
    s = OUTLIER_RANGE_RATIO * others / float(per_ch_max[c])
    w2 = {k: v.copy() for k, v in w.items()}
    # BN output for channel c = gamma*(x-mean)/sqrt(var+eps)+beta: scaling gamma and beta scales it by s.
    w2[f"{OUTLIER_BLOCK}_1_bn.weight"][c] *= s
    w2[f"{OUTLIER_BLOCK}_1_bn.bias"][c] *= s
    w2[f"{OUTLIER_BLOCK}_2_conv.weight"][:, c] /= s
    info = {"channel": c, "scale": round(s, 4), "range_ratio": OUTLIER_RANGE_RATIO}
    return w2, info


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean())


def main() -> None:
    x, y = load_digits_32()
    data = split(x, y)
    w = train(data)
    clean = to_onnx(w, "resnet_digits")
    logits = run_ort(clean, data["x_test"])
    assert np.allclose(logits, w["_torch_logits_test"], atol=1e-3), "ONNX graph differs from the torch net"
    acc = accuracy(logits, data["y_test"])
    assert acc >= 0.95, f"FP32 accuracy {acc:.3f} is below 0.95"

    w_out, outlier = plant_outlier(w, clean, data["x_calib"])
    planted = to_onnx(w_out, "resnet_digits_outlier")
    logits_out = run_ort(planted, data["x_test"])
    max_diff = float(np.abs(logits_out - logits).max())
    assert max_diff < 1e-4, f"outlier model changed FP32 outputs by {max_diff}"

    np.savez(HERE / "digits_calib.npz", input=data["x_calib"])
    np.savez(HERE / "digits_eval.npz", input=data["x_test"])
    np.save(HERE / "digits_eval_labels.npy", data["y_test"])
    onnx.save(clean, HERE / "resnet_digits.onnx")
    onnx.save(planted, HERE / "resnet_digits_outlier.onnx")

    common = {
        "inputs": {"input": {"shape": ["batch", 1, 32, 32], "dtype": "float32"}},
        "outputs": {"logits": {"shape": ["batch", 10], "dtype": "float32"}},
        "calibration": "digits_calib.npz",
        "evaluation": "digits_eval.npz",
        "labels": "digits_eval_labels.npy",
        "fp32_accuracy": round(acc, 4),
        "ir_version": IR_VERSION,
        "opset": OPSET,
    }
    catalog = {
        "models": {
            "resnet_digits": {
                **common, "file": "resnet_digits.onnx",
                "description": "Residual CNN (3 blocks, Conv+BN+ReLU, Add shortcuts, GAP, Gemm) on digits 32x32.",
            },
            "resnet_digits_outlier": {
                **common, "file": "resnet_digits_outlier.onnx",
                "description": f"resnet_digits with one channel of {OUTLIER_BLOCK}_1_relu_out scaled ~80x and compensated "
                               f"in {OUTLIER_BLOCK}_2_conv: identical FP32 outputs, hostile to per-tensor INT8.",
                "fp32_max_abs_diff_vs_clean": max_diff,
                "outlier": {
                    "tensor": f"{OUTLIER_BLOCK}_1_relu_out",
                    **outlier,
                    # the nodes whose output carries the outlier, and its consumer
                    "producer_nodes": [f"{OUTLIER_BLOCK}_1_conv", f"{OUTLIER_BLOCK}_1_bn", f"{OUTLIER_BLOCK}_1_relu"],
                    "consumer_nodes": [f"{OUTLIER_BLOCK}_2_conv"],
                    # BN folds into the consumer conv during pre-processing; its output keeps this name
                    "consumer_output_tensor": f"{OUTLIER_BLOCK}_2_bn_out",
                },
            },
        },
        "default": "resnet_digits_outlier",
    }
    (HERE / "catalog.json").write_text(json.dumps(catalog, indent=2) + "\n")
    print(f"fp32 accuracy {acc:.4f}; outlier channel {outlier['channel']} scale {outlier['scale']}; "
          f"max |diff| {max_diff:.2e}")


if __name__ == "__main__":
    main()
