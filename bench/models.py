"""Benchmark models, generated (random weights, no downloads): ResNet-18 and ResNet-50 shapes at 224x224."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["resnet18_224", "resnet50_224"]


class _Builder:
    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []

    def conv_bn(self, x: str, cin: int, cout: int, k: int, s: int, name: str, relu: bool = True) -> str:
        from onnx import helper, numpy_helper

        rng = self.rng
        w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        self.inits.append(numpy_helper.from_array(w, f"{name}.w"))
        self.nodes.append(helper.make_node("Conv", [x, f"{name}.w"], [f"{name}.c"], name=f"{name}_conv", kernel_shape=[k, k],
                                           strides=[s, s], pads=[k // 2] * 4))
        for p, v in (("g", 1 + 0.1 * rng.standard_normal(cout)), ("b", 0.1 * rng.standard_normal(cout)),
                     ("m", 0.1 * rng.standard_normal(cout)), ("v", 1 + 0.1 * rng.random(cout))):
            self.inits.append(numpy_helper.from_array(v.astype(np.float32), f"{name}.{p}"))
        self.nodes.append(helper.make_node("BatchNormalization", [f"{name}.c", f"{name}.g", f"{name}.b", f"{name}.m", f"{name}.v"],
                                           [f"{name}.bn"], name=f"{name}_bn"))
        if not relu:
            return f"{name}.bn"
        self.nodes.append(helper.make_node("Relu", [f"{name}.bn"], [f"{name}.r"], name=f"{name}_relu"))
        return f"{name}.r"

    def add_relu(self, a: str, b: str, name: str) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node("Add", [a, b], [f"{name}.add"], name=f"{name}_add"))
        self.nodes.append(helper.make_node("Relu", [f"{name}.add"], [f"{name}.out"], name=f"{name}_relu"))
        return f"{name}.out"

    def save(self, x: str, cin: int, name: str, path: Path) -> None:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        self.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
        self.nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"))
        self.inits.append(numpy_helper.from_array((self.rng.standard_normal((1000, cin)) * 0.05).astype(np.float32), "fc.w"))
        self.nodes.append(helper.make_node("Gemm", ["flat", "fc.w"], ["logits"], name="fc", transB=1))
        g = helper.make_graph(self.nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 224, 224])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 1000])], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 10
        onnx.save(m, path)

    def stem(self) -> str:
        from onnx import helper

        x = self.conv_bn("input", 3, 64, 7, 2, "stem")
        self.nodes.append(helper.make_node("MaxPool", [x], ["pool0"], name="maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
        return "pool0"


def resnet18_224(path: Path) -> None:
    b = _Builder()
    x, cin = b.stem(), 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for blk in range(2):
            s = 2 if stage > 0 and blk == 0 else 1
            name = f"s{stage}b{blk}"
            h = b.conv_bn(x, cin, cout, 3, s, f"{name}_1")
            h = b.conv_bn(h, cout, cout, 3, 1, f"{name}_2", relu=False)
            short = b.conv_bn(x, cin, cout, 1, s, f"{name}_d", relu=False) if (s != 1 or cin != cout) else x
            x, cin = b.add_relu(h, short, name), cout
    b.save(x, cin, "resnet18_224", path)


def resnet50_224(path: Path) -> None:
    b = _Builder()
    x, cin = b.stem(), 64
    for stage, (width, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
        cout = width * 4
        for blk in range(blocks):
            s = 2 if stage > 0 and blk == 0 else 1
            name = f"s{stage}b{blk}"
            h = b.conv_bn(x, cin, width, 1, 1, f"{name}_1")
            h = b.conv_bn(h, width, width, 3, s, f"{name}_2")
            h = b.conv_bn(h, width, cout, 1, 1, f"{name}_3", relu=False)
            short = b.conv_bn(x, cin, cout, 1, s, f"{name}_d", relu=False) if (s != 1 or cin != cout) else x
            x, cin = b.add_relu(h, short, name), cout
    b.save(x, cin, "resnet50_224", path)
