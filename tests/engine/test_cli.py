"""The CLI contract: files and columns, exit codes, one-sentence errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd

from engine.cli.main import main
from engine.compare.layerwise import LAYER_COLUMNS

EXACT = ["tensor", "node", "op_type", "quantized", "cosine", "cosine_min", "snr_db", "introduced_db", "mse",
         "max_abs_err", "mean_abs_err", "rel_err_median"]


def test_compare_and_rebuild_write_the_contract(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["compare", str(tiny / "tiny.onnx"), "--calib", str(tiny / "data.npz"), "--batch", "4", "--out", str(out),
               "--calib-method", "percentile", "--provider", "cpu", "--quiet"])
    assert rc == 0
    assert list(LAYER_COLUMNS[:12]) == EXACT  # a new metric appends its column; these keep their places
    assert list(pd.read_csv(out / "layers.csv").columns[:12]) == EXACT
    s = json.loads((out / "summary.json").read_text())
    for key in ("model", "backend", "samples", "batches", "outputs", "task", "culprits", "fallback", "timings"):
        assert key in s
    assert s["backend"] == "onnxruntime-cpu" and s["samples"] == 10 and s["batches"] == 3
    assert set(s["outputs"]) == {"y"} and "snr_db" in s["outputs"]["y"]
    assert s["config"]["calibration"] == "percentile"
    assert (out / "candidate.onnx").is_file() and (out / "reference.onnx").is_file()
    top = s["culprits"][0]
    rc = main(["rebuild", str(out), "--fallback", top, "--quiet"])
    assert rc == 0
    s2 = json.loads((out / "summary.json").read_text())
    assert s2["fallback"] == [top] and s2["recalibrated"] is False
    assert json.loads((out / "history" / "1" / "summary.json").read_text())["fallback"] == []
    printed = capsys.readouterr().out
    assert "backend: onnxruntime-cpu" in printed and "results in" in printed
    reused = int(s2["timings"]["tensors_reused"])  # the rebuild says how many rows it read back, where it read any
    assert (f"{reused} of {len(pd.read_csv(out / 'layers.csv'))} tensors are computed as in the last build" in printed) \
        == (reused > 0)
    assert main(["rebuild", str(out), "--fallback", top, "--quiet"]) == 0  # the same build again: every row but the outputs
    assert "tensors are computed as in the last build" in capsys.readouterr().out


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "engine.cli.main", *args], capture_output=True, text=True, timeout=120)


def test_missing_model_is_one_sentence(tmp_path):
    p = _cli("compare", str(tmp_path / "nope.onnx"), "--calib", "x.npz", "--out", str(tmp_path / "o"))
    assert p.returncode == 2
    assert p.stderr == f"error: The model file {tmp_path / 'nope.onnx'} does not exist; check the path.\n"


def test_garbage_model_is_one_sentence(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    p = _cli("compare", str(bad), "--calib", "x.npz", "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert "'bad.onnx' is not a valid ONNX model" in p.stderr or "'bad.onnx' contains no ONNX graph" in p.stderr


def test_bad_range_and_method_are_one_sentence(tiny, tmp_path):
    p = _cli("compare", str(tiny / "tiny.onnx"), "--calib", str(tiny / "data.npz"), "--out", str(tmp_path / "o"), "--range", "c1=4,-4")
    assert p.returncode == 2
    assert p.stderr == "error: The range 'c1=4,-4' is not of the form TENSOR=MIN,MAX with finite MIN < MAX, e.g. conv1_out=-4,4.\n"
    p = _cli("compare", str(tiny / "tiny.onnx"), "--calib", str(tiny / "data.npz"), "--out", str(tmp_path / "o"), "--calib-method", "magic")
    assert p.stderr == "error: Unknown calibration method 'magic'; use one of: minmax, entropy, percentile.\n"


def test_rebuild_of_a_non_run_folder(tmp_path):
    p = _cli("rebuild", str(tmp_path), "--fallback", "x")
    assert p.returncode == 2 and "is not a complete QuantScope run folder" in p.stderr


def test_fixed_batch_model_with_a_ragged_sample_count(tmp_path):
    import numpy as np
    import onnx

    from tests.engine.conftest import tiny_model

    m = tiny_model()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4  # batch fixed at 4
    onnx.save(m, tmp_path / "fixed.onnx")
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 2, 8, 8), np.float32))
    p = _cli("compare", str(tmp_path / "fixed.onnx"), "--calib", str(tmp_path / "d.npz"), "--out", str(tmp_path / "o"))
    assert p.returncode == 2
    assert p.stderr == ("error: The model's batch dimension is fixed at 4 but the calibration data has 10 samples; "
                        "provide a multiple of 4 samples.\n")


def test_tensorrt_provider_without_tensorrt_is_one_sentence(tiny, tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        import pytest

        pytest.skip("TensorRT is installed here")
    p = _cli("compare", str(tiny / "tiny.onnx"), "--calib", str(tiny / "data.npz"), "--out", str(tmp_path / "o"), "--provider", "tensorrt")
    assert p.returncode == 2
    assert p.stderr == ("error: TensorRT is not installed here (import tensorrt fails); install it with pip install .[trt] on a "
                        "machine with NVIDIA's index, or use --provider cuda or cpu.\n")
