"""Probes scored where the outputs are (probe data copied to the GPU once, four sums an output back) against the same
probes copied in and scored on the host. Needs ONNX Runtime's CUDA provider and cupy or torch: runs on the GPU host."""

from __future__ import annotations

import dataclasses

import pytest

from engine import compare
from engine.backends.onnxrt import OnnxRuntimeBackend, cuda_available
from engine.compare.reducers import device_library
from engine.diagnose.probes import OutputProbe
from engine.diagnose.run_probe import open_probe
from tests.engine.conftest import SAMPLES

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not cuda_available() or device_library() is None,
                                                  reason="needs ONNX Runtime's CUDA provider and cupy or torch")]


def test_resident_probes_match_host_probes(tmp_path):
    out = tmp_path / "run"
    compare(SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", out_dir=out, data=SAMPLES / "digits_eval.npz",
            labels=SAMPLES / "digits_eval_labels.npy", batch_size=20, provider="cuda", screen_samples=0)
    _, _, probe = open_probe(out, "cuda", samples=None)
    host_backend = OnnxRuntimeBackend("cuda")
    host_backend.capabilities = dataclasses.replace(host_backend.capabilities, device_outputs=False)
    host = OutputProbe(host_backend, probe.reference, probe.candidate, probe.units, probe.data, probe.emit, probe.fp16)
    first, second = probe.units[0], probe.units[1]
    with probe, host:
        assert probe._resident is not None and host._resident is None  # the two paths under test
        copies = []
        for data in (None, probe.data.head(8), None):  # a head() and the whole data again: copies are reused
            pairs = [(probe.measure((), data), host.measure((), data)),
                     (probe.measure_only(first, data), host.measure_only(first, data)),
                     (probe.measure(second, data), host.measure(second, data))]
            for dev, cpu in pairs:
                assert dev.outputs_snr_db == pytest.approx(cpu.outputs_snr_db, abs=1e-3)
                assert dev.cosine == pytest.approx(cpu.cosine, abs=1e-6)
                assert (dev.top1_agreement, dev.accuracy, dev.unpaired) == (cpu.top1_agreement, cpu.accuracy, cpu.unpaired)
            copies.append(len(probe._resident._copies))
        assert copies[0] < copies[1] == copies[2]  # the head was copied once; the whole data again reuses its copies
