"""The host runner runs the session Polygraphy's OnnxrtRunner opened, without OnnxrtRunner.infer's torch check (which
imports torch where it is installed: 3.9 s of a compare on the GPU host)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import polygraphy.util.array as pg_array

from engine.backends import resolve_backend
from tests.engine.conftest import SAMPLES


def test_a_host_run_asks_nothing_of_torch_and_equals_onnx_runtime(monkeypatch):
    def no_torch(obj):
        raise AssertionError("asked whether an input is a torch tensor (imports torch)")

    monkeypatch.setattr(pg_array, "is_torch", no_torch)
    path = SAMPLES / "resnet_digits_outlier.onnx"
    x = np.load(SAMPLES / "digits_eval.npz")["input"][:8]
    backend = resolve_backend("cpu").backend
    with backend.runner(onnx.load(path), observe=["stem_relu_out"]) as runner:
        out = runner.infer({"input": x})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (want,) = sess.run(None, {"input": x})
    assert set(out) == {o.name for o in sess.get_outputs()} | {"stem_relu_out"}
    np.testing.assert_allclose(out[sess.get_outputs()[0].name], want, rtol=1e-5, atol=1e-6)
    assert out["stem_relu_out"].min() >= 0  # a ReLU's output, marked and returned
