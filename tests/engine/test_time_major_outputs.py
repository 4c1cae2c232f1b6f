"""An output whose axis 0 is not the batch: a CTC recogniser writes T x N x classes (ddddocr's captcha recogniser, batch
fixed at 1, declares [1, seqlen] and returns 32 x 1 x 8210). Its probes must score the whole output, not its first
time step: they once cut the cached reference to axis 0's first `batch` rows, paired nothing and ranked every node NaN."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import engine
from engine import compare


def _time_major_model() -> onnx.ModelProto:
    """x: 1 x 2 x 4 x W -> Conv -> ReduceMean(H) -> Transpose -> W x 1 x 4 -> MatMul -> W x 1 x 5 (time-major)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32) * 0.5
    fc = rng.standard_normal((4, 5)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("ReduceMean", ["r"], ["m"], name="mean_h", axes=[2], keepdims=0),
        helper.make_node("Transpose", ["m"], ["t"], name="time_major", perm=[2, 0, 1]),
        helper.make_node("MatMul", ["t", "fc"], ["y"], name="classes"),
    ]
    g = helper.make_graph(nodes, "ctc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, "w"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["t", 1, 5])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    return m


def test_a_time_major_output_is_ranked_on_all_its_time_steps(tmp_path):
    onnx.save(_time_major_model(), tmp_path / "ctc.onnx")
    x = np.random.default_rng(4).standard_normal((8, 2, 4, 16)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    result = compare(tmp_path / "ctc.onnx", tmp_path / "d.npz", out_dir=tmp_path / "run", batch_size=1, provider="cpu")
    s = result.summary
    assert s.ranking.method == "measured harm" and s.ranking.samples == 8  # two units: every unit on all 8 samples
    assert {c.node for c in s.culprits} == {"conv", "classes"}
    assert all(math.isfinite(c.alone_snr_db) and math.isfinite(c.gain_db) for c in s.culprits)
    # with every unit in INT8 the probe computes the candidate: the same final-output SNR the compare measured
    assert s.ranking.all_int8_snr_db == pytest.approx(result.final_output().snr_db, abs=0.01)


def _ctc_files(tmp_path) -> np.ndarray:
    """ctc.onnx (scores over 40 classes, blank = class 0 mostly best, time-major as ddddocr writes them) and d.npz of 16
    samples in tmp_path; returns the samples."""
    m = _time_major_model()
    rng = np.random.default_rng(5)
    fc = rng.standard_normal((4, 40)).astype(np.float32)
    blank = np.zeros(40, np.float32)
    blank[0] = 1.0
    m.graph.initializer[1].CopyFrom(numpy_helper.from_array(fc, "fc"))
    m.graph.initializer.append(numpy_helper.from_array(blank, "blank"))
    m.graph.node[-1].output[0] = "logits"
    m.graph.node.append(helper.make_node("Add", ["logits", "blank"], ["y"], name="blank_bias"))
    m.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["t", 1, 40]))
    onnx.save(m, tmp_path / "ctc.onnx")
    x = rng.standard_normal((16, 2, 4, 64)).astype(np.float32)  # 64 time steps: INT8 noise changes some texts
    np.savez(tmp_path / "d.npz", x=x)
    return x


def test_a_ctc_recognisers_decoded_text_is_compared_with_fp32s(tmp_path, capsys):
    """The summary, the CLI and the report say how many samples read the same text as FP32 (the captcha trial: 29 of
    32, counted by hand)."""
    from engine.backends import resolve_backend
    from engine.cli.main import main
    from engine.compare.task_metrics import ctc_greedy

    x = _ctc_files(tmp_path)
    result = compare(tmp_path / "ctc.onnx", tmp_path / "d.npz", out_dir=tmp_path / "run", batch_size=1, provider="cpu",
                     screen_samples=0)
    backend = resolve_backend("cpu").backend
    with backend.runner(onnx.load(tmp_path / "run" / "reference.onnx")) as r, \
            backend.runner(onnx.load(tmp_path / "run" / "candidate.onnx")) as c:
        same = sum(ctc_greedy(r.infer({"x": x[i:i + 1]})["y"].argmax(2)[:, 0]) == ctc_greedy(c.infer({"x": x[i:i + 1]})["y"].argmax(2)[:, 0])
                   for i in range(16))
    t = result.summary.task
    assert (t.output, t.samples, t.top1_agreement) == ("y", 16, None) and t.text_agreement == same / 16
    assert 0 < same < 16, same  # the noise changes some texts and not others: a count, not all or nothing
    assert main(["rebuild", str(tmp_path / "run"), "--fallback", "classes", "--no-index"]) == 0
    out = capsys.readouterr().out
    assert "text read the same as FP32 (greedy CTC decoding of y): " in out and " of 16 samples" in out
    from app.report import build_report  # the report's task table, before and after

    after = engine.load_result(tmp_path / "run")
    html = build_report(after.layers, after.summary, result.layers, result.summary)
    assert (f"<td>text read the same as FP32 (greedy CTC decoding)</td><td>{same / 16:.2%}</td>"
            f"<td>{after.summary.task.text_agreement:.2%}</td>") in html


def test_an_rnn_state_input_with_a_fixed_1_first_is_compared(tmp_path):
    """h0 [1, batch, H] as PyTorch exports an RNN's state: the fixed 1 fixes the batch at 1 and the compare runs."""
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xm"], name="proj"),
             helper.make_node("Squeeze", ["h0", "axis0"], ["h"], name="state"),
             helper.make_node("Add", ["xm", "h"], ["y"], name="mix")]
    g = helper.make_graph(nodes, "rnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8]),
                                         helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "batch", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
                          [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w"),
                           numpy_helper.from_array(np.array([0], np.int64), "axis0")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    onnx.save(m, tmp_path / "rnn.onnx")
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((6, 8)).astype(np.float32), h0=rng.standard_normal((6, 1, 8)).astype(np.float32))
    result = compare(tmp_path / "rnn.onnx", tmp_path / "d.npz", out_dir=tmp_path / "run", batch_size=4, provider="cpu")
    assert result.summary.batch_size == 1 and result.summary.samples == 6 and 20 < result.final_output().snr_db < 80


def test_a_fallback_search_can_target_the_text_reading_the_same(tmp_path):
    """--target text_agreement=1: every sample must read FP32's text. The probes decode as the compare does, and the
    build they choose reads what they promised."""
    from engine import autofallback

    _ctc_files(tmp_path)
    before = compare(tmp_path / "ctc.onnx", tmp_path / "d.npz", out_dir=tmp_path / "run", batch_size=1, provider="cpu",
                     screen_samples=0)
    assert before.summary.task.text_agreement < 1
    found = autofallback(tmp_path / "run", "text_agreement=1")
    assert found.met and found.achieved == 1.0 and found.fallback
    assert found.steps[0].value == before.summary.task.text_agreement  # the all-INT8 probe decodes as the compare did
    assert engine.load_result(tmp_path / "run").summary.task.text_agreement == 1.0


def test_a_sweep_picks_the_configuration_whose_text_reads_the_same(tmp_path, capsys):
    """The sweep's rows carry the text read the same, and --select text_agreement marks the best by it."""
    from engine.cli.main import main
    from engine.sweep import load_sweep

    _ctc_files(tmp_path)
    assert main(["sweep", str(tmp_path / "ctc.onnx"), "--calib", str(tmp_path / "d.npz"), "--methods", "minmax", "percentile",
                 "--batch", "1", "--out", str(tmp_path / "sw"), "--select", "text_agreement", "--quiet", "--provider", "cpu"]) == 0
    rows = load_sweep(tmp_path / "sw").rows
    assert len(rows) == 2 and all(0 < r.text_agreement <= 1 for r in rows)
    best = max(rows, key=lambda r: r.text_agreement)  # the first of equals, as the sweep picks
    assert [r.best for r in rows] == [r is best for r in rows]
    out = capsys.readouterr().out
    assert "  text " in out.splitlines()[0] and f"{rows[0].text_agreement:.3f}" in out.splitlines()[1]
