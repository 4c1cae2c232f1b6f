"""One run state and side effects at the edges: the five bugs of issue #12, each with a test that failed before."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import engine.backends.select as select
from engine import measure_latency, rebuild
from engine.cli.main import main
from tests.engine.conftest import SAMPLES

ROOT = SAMPLES.parent


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.Popen([sys.executable, "-m", "engine.cli.main", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_range_override_on_a_quantized_activation(tmp_path):
    """Bug 1: ONNX Runtime wants numpy scalars in TensorQuantOverrides; plain floats failed for any quantized activation."""
    out = tmp_path / "r"
    assert main(["compare", str(SAMPLES / "resnet_digits_outlier.onnx"), "--calib", str(SAMPLES / "digits_calib.npz"),
                 "--range", "block3_1_relu_out=0,4", "--out", str(out), "--quiet", "--no-index", "--provider", "cpu"]) == 0
    scales = {i.name: numpy_helper.to_array(i) for i in onnx.load(out / "candidate.onnx").graph.initializer}
    assert scales["block3_1_relu_out_scale"] == np.float32(4 / 127)  # symmetric INT8 over [0, 4]


def _scratch_model(path):
    """>10 MB of weights, and a graph ONNX Runtime's symbolic shape inference gives up on (two batch dims it may not
    merge, an op ONNX does not know): quant_pre_process then wrote sym_shape_infer_temp.onnx and <uuid>.data into
    the working directory."""
    w = (np.random.default_rng(0).standard_normal((512, 512, 3, 3)) * 0.01).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "y"], ["s"], name="add"),
             helper.make_node("Gelu", ["s"], ["out"], name="gelu", domain="com.microsoft")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 512, 4, 4]),
                                       helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", 512, 4, 4])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 512, 4, 4])], [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 10
    onnx.save(m, path / "big.onnx")
    rng = np.random.default_rng(1)
    np.savez(path / "d.npz", x=rng.standard_normal((4, 512, 4, 4)).astype(np.float32),
             y=rng.standard_normal((4, 512, 4, 4)).astype(np.float32))
    assert (path / "big.onnx").stat().st_size > 9 * 2**20


@pytest.fixture()
def scratch_model(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    _scratch_model(d)
    return d


def test_an_empty_working_directory_stays_empty(scratch_model, tmp_path):
    """Bug 2: pre-processing wrote 10+ MB scratch files into the caller's working directory."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    p = _cli("compare", str(scratch_model / "big.onnx"), "--calib", str(scratch_model / "d.npz"), "--out", str(tmp_path / "r"),
             "--batch", "2", "--provider", "cpu", "--quiet", "--no-index", cwd=cwd)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert os.listdir(cwd) == []


def test_two_compares_at_once_from_one_working_directory(scratch_model, tmp_path):
    """Bug 2, the shared fixed file name: two runs side by side in one directory."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    procs = [_cli("compare", str(scratch_model / "big.onnx"), "--calib", str(scratch_model / "d.npz"), "--out",
                  str(tmp_path / f"r{i}"), "--batch", "2", "--provider", "cpu", "--quiet", "--no-index", cwd=cwd) for i in (1, 2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert os.listdir(cwd) == []
    a, b = (json.loads((tmp_path / f"r{i}" / "summary.json").read_text())["outputs"]["out"]["snr_db"] for i in (1, 2))
    assert a == b  # the same model and data: the same answer, whichever finished first


def test_options_survive_two_rebuilds(outlier_run, tmp_path):
    """Bug 3: rebuild read the compare's options from config.json and silently dropped the previous rebuild's."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(outlier_run.run_dir, run, ignore=shutil.ignore_patterns("history"))
    assert main(["rebuild", str(run), "--fallback", "block3_2_conv", "--fallback-precision", "fp32",
                 "--range", "block2_out=0,6", "--quiet", "--no-index"]) == 0
    second = rebuild(run, fallback=["stem_conv"])  # no other option given: the run's current values stay
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["quant"]["fallback_precision"] == "fp32" and cfg["quant"]["ranges"] == ["block2_out=0,6"]
    assert cfg["quant"]["fallback"] == ["stem_conv"]
    assert second.summary.fallback_precision.value == "fp32" and second.summary.fp16_nodes == ()
    scales = {i.name: numpy_helper.to_array(i) for i in onnx.load(run / "candidate.onnx").graph.initializer}
    assert scales["block2_out_scale"] == np.float32(6 / 127)
    # and the CLI's rebuild without --fallback-precision keeps fp32 too (it used to default to fp16)
    assert main(["rebuild", str(run), "--fallback", "block3_2_conv", "--quiet", "--no-index"]) == 0
    assert json.loads((run / "summary.json").read_text())["fallback_precision"] == "fp32"


def test_latency_times_the_exact_candidate(outlier_run, tmp_path):
    """Bug 4: the 'mixed' build took the fallback set from summary.json but precision and ranges from config.json."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(outlier_run.run_dir, run, ignore=shutil.ignore_patterns("history"))
    rebuilt = rebuild(run, fallback=["block3_2_conv"], fallback_precision="fp32", ranges=())
    rebuilt = rebuild(run, fallback=["block3_2_conv", "stem_conv"])
    mixed = next(r for r in measure_latency(run, runs=2, warmup=0) if r.build.startswith("mixed"))
    assert mixed.build == "mixed (2 in fp32)"
    assert mixed.snr_db == pytest.approx(rebuilt.final_output().snr_db, abs=1e-4)  # the same model, the same data


def test_the_resolved_backend_is_stored_and_reused(outlier_run, tmp_path, monkeypatch):
    """Bug 5: `auto` was resolved again by every later step, so a before/after could straddle two backends."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(outlier_run.run_dir, run, ignore=shutil.ignore_patterns("history"))
    cfg = json.loads((run / "config.json").read_text())
    resolved = cfg["provider"]  # cpu here, cuda on a GPU host
    assert cfg["requested_provider"] == "auto" and resolved in ("cpu", "cuda") and cfg["backend"] == f"onnxruntime-{resolved}"
    # TensorRT now claims to be there: `auto` would switch to it, the run's resolved backend must not
    monkeypatch.setattr(select, "available_providers", lambda: {"cpu": True, "cuda": resolved == "cuda", "tensorrt": True})
    result = rebuild(run, fallback=["block3_2_conv"])
    assert result.summary.backend == f"onnxruntime-{resolved}"
    assert all("while the results before it came from" not in w for w in result.summary.warnings)


def test_compare_fixture_was_auto(outlier_run):
    """The outlier fixture compares with provider 'auto' (the default), which the test above relies on."""
    assert json.loads((outlier_run.run_dir / "config.json").read_text())["requested_provider"] == "auto"
