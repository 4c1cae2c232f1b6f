"""The device comparison path (IOBinding + reductions in cupy/torch) against the host path.

test_device_loop_matches_host_loop runs wherever torch or cupy is importable, binding outputs to CPU
memory when there is no GPU, so the device code path is checked without a GPU. The `gpu` tests need
ONNX Runtime's CUDA provider and run on the GPU host."""

from __future__ import annotations

import dataclasses
import math
import os

import pytest

import engine.pipeline as pipeline
from engine import compare
from engine.backends.onnxrt import cuda_available
from engine.backends.select import resolve_backend
from engine.compare.reducers import device_library
from tests.engine.conftest import SAMPLES

pytestmark = pytest.mark.skipif(device_library() is None, reason="neither cupy nor torch is importable")


def _agree(a, b, cos_tol=1e-4, snr_tol=0.05):
    assert list(a.layers["tensor"]) == list(b.layers["tensor"])
    for (_, x), (_, y) in zip(a.layers.iterrows(), b.layers.iterrows()):
        assert abs(x["cosine"] - y["cosine"]) <= cos_tol, x["tensor"]
        if math.isinf(x["snr_db"]) or math.isinf(y["snr_db"]):
            assert x["snr_db"] == y["snr_db"] or min(x["snr_db"], y["snr_db"]) > 100, x["tensor"]
        else:
            assert abs(x["snr_db"] - y["snr_db"]) <= snr_tol, x["tensor"]
        assert x["rel_err_median"] == pytest.approx(y["rel_err_median"], rel=0.05, abs=1e-6), x["tensor"]
    fa, fb = a.final_output(), b.final_output()
    assert abs(fa.snr_db - fb.snr_db) <= snr_tol and abs(fa.cosine - fb.cosine) <= cos_tol


def test_device_loop_matches_host_loop(tmp_path, monkeypatch):
    """Forces the device loop on the CPU backend (outputs bound to CPU memory, reduced by torch/cupy)."""
    host = compare(SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", out_dir=tmp_path / "h",
                   batch_size=32, provider="cpu")
    pytest.importorskip("torch", reason="the CPU-bound device loop is reduced with torch (cupy refuses CPU memory)")
    monkeypatch.setenv("QUANTSCOPE_DEVICE_LIBRARY", "torch")

    def cpu_with_device_outputs(provider):
        choice = resolve_backend(provider)
        choice.backend.capabilities = dataclasses.replace(choice.backend.capabilities, device_outputs=True)
        return choice

    monkeypatch.setattr(pipeline, "resolve_backend", cpu_with_device_outputs)
    dev = compare(SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", out_dir=tmp_path / "d",
                  batch_size=32, provider="cpu")
    _agree(host, dev, cos_tol=1e-5, snr_tol=1e-3)
    assert dev.summary.culprits[0].node == host.summary.culprits[0].node


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="ONNX Runtime's CUDAExecutionProvider is not available")
@pytest.mark.parametrize("name", ["resnet_digits", "resnet_digits_outlier"])
def test_cuda_metrics_agree_with_cpu(tmp_path, name):
    kw = {"data": SAMPLES / "digits_eval.npz", "labels": SAMPLES / "digits_eval_labels.npy", "batch_size": 50}
    cpu = compare(SAMPLES / f"{name}.onnx", SAMPLES / "digits_calib.npz", out_dir=tmp_path / "cpu", provider="cpu", **kw)
    gpu = compare(SAMPLES / f"{name}.onnx", SAMPLES / "digits_calib.npz", out_dir=tmp_path / "gpu", provider="cuda", **kw)
    assert gpu.summary.backend == "onnxruntime-cuda"
    _agree(cpu, gpu)
    assert gpu.summary.culprits[0].node == cpu.summary.culprits[0].node
    os.environ.get("QUANTSCOPE_GPU_REPORT") and print(f"{name}: cpu final SNR {cpu.final_output().snr_db:.4f} dB, "
                                                      f"gpu {gpu.final_output().snr_db:.4f} dB")
