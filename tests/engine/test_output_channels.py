"""A final output whose channels differ in scale by orders of magnitude (YOLOv8's N x (4 + classes) x anchors) has its
SNR set by the large channels: on YOLOv8n the whole output read 26.5 dB while its class scores sat at 10.4 dB. The
summary says what the figure hides, with the small channels' own SNR."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.compare.output_channels import ChannelAccumulator


def _signs(rng, shape):
    return rng.choice(np.array([-1.0, 1.0], np.float32), size=shape)


def test_the_small_scale_channels_and_their_snr_are_found_exactly():
    rng = np.random.default_rng(0)
    acc = ChannelAccumulator()
    for n in (3, 5):  # two batches add up
        s, t = _signs(rng, (n, 3, 50)), _signs(rng, (n, 3, 50))
        ref = s * np.array([100.0, 0.1, 0.1], np.float32)[None, :, None]  # RMS 100, 0.1, 0.1
        cand = ref + t * np.array([1.0, 0.01, 0.01], np.float32)[None, :, None]  # 40 dB on 0, 20 dB on 1 and 2
        acc.update(ref, cand)
    split = acc.result("output0")
    assert split is not None and (split.axis, split.channels, split.small) == (1, 3, (1, 2)) and split.hides
    assert split.large_snr_db == pytest.approx(40.0, abs=1e-4) and split.small_snr_db == pytest.approx(20.0, abs=1e-4)
    assert split.small_rms == pytest.approx(0.1, rel=1e-5) and split.large_rms == pytest.approx(100.0, rel=1e-5)
    assert split.sentence().startswith(
        "Output 'output0' mixes channels of very different scales along axis 1: its SNR is set by the large ones (1 of 3, "
        "RMS up to 100, at 40.0 dB), while its 2 small-scale channels (channels 1-2, RMS 0.1) are at 20.0 dB.")


def test_no_sentence_where_the_small_channels_are_as_clean_or_there_are_no_channels():
    rng = np.random.default_rng(1)
    s, t = _signs(rng, (4, 3, 50)), _signs(rng, (4, 3, 50))
    ref = s * np.array([100.0, 0.1, 0.1], np.float32)[None, :, None]
    acc = ChannelAccumulator()
    acc.update(ref, ref + t * np.array([1.0, 0.0015, 0.0015], np.float32)[None, :, None])  # 40 and 36.5 dB: within 6 dB
    kept = acc.result("o")  # kept (a rebuild's before/after reads it), but nothing to say
    assert kept.small == (1, 2) and kept.small_snr_db == pytest.approx(36.478, abs=1e-3) and not kept.hides
    # a probability map N x 1 x H x W: its rows differ in scale by where the text is, and they are not channels
    rows = np.zeros((2, 1, 16, 16), np.float32)
    rows[:, :, :4] = 1.0
    acc = ChannelAccumulator()
    acc.update(rows + 1e-4, rows + 1e-4 + 1e-3 * _signs(rng, rows.shape))
    assert acc.result("map") is None
    acc = ChannelAccumulator()
    acc.update(np.arange(4, dtype=np.int64).reshape(2, 2), np.arange(4, dtype=np.int64).reshape(2, 2))  # labels, not floats
    assert acc.result("label") is None


def _detector(path):
    """x (N x 3 x 8 x 8) -> one Conv of 8 channels -> four 'boxes' (x 100) and four sharp 'scores' (sigmoid(10 c - 20)),
    concatenated to N x 8 x 64 as a YOLOv8 head writes them."""
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    consts = {"w": w, "k100": np.array(100.0, np.float32), "k10": np.array(10.0, np.float32),
              "k20": np.array(20.0, np.float32), "shape": np.array([0, 8, 64], np.int64), "split": np.array([4, 4], np.int64)}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Split", ["c", "split"], ["cb", "cs"], name="split", axis=1),
        helper.make_node("Mul", ["cb", "k100"], ["boxes"], name="scale_boxes"),
        helper.make_node("Mul", ["cs", "k10"], ["s10"], name="sharpen"),
        helper.make_node("Sub", ["s10", "k20"], ["s20"], name="shift"),
        helper.make_node("Sigmoid", ["s20"], ["scores"], name="sigmoid"),
        helper.make_node("Concat", ["boxes", "scores"], ["cat"], name="concat", axis=1),
        helper.make_node("Reshape", ["cat", "shape"], ["y"], name="reshape"),
    ]
    g = helper.make_graph(nodes, "det", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, 64])],
                          [numpy_helper.from_array(a, n) for n, a in consts.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    x = rng.standard_normal((24, 3, 8, 8)).astype(np.float32)
    np.savez(path.with_suffix(".npz"), x=x)
    return x


def test_a_detector_head_gets_the_sentence_with_the_scores_snr_onnx_runtime_gives(tmp_path):
    import onnxruntime as ort

    from engine import compare

    x = _detector(tmp_path / "det.onnx")
    r = compare(tmp_path / "det.onnx", tmp_path / "det.npz", out_dir=tmp_path / "run", batch_size=8, provider="cpu",
                screen_samples=0)

    def run(path):
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0].astype(np.float64)

    ref, cand = run(r.run_dir / "reference.onnx"), run(r.run_dir / "candidate.onnx")
    scores, boxes = ref[:, 4:], ref[:, :4]
    expected = 10 * math.log10((scores**2).sum() / ((scores - cand[:, 4:]) ** 2).sum())
    whole = 10 * math.log10((ref**2).sum() / ((ref - cand) ** 2).sum())
    assert np.sqrt((scores**2).mean()) < 0.01 * np.sqrt((boxes**2).mean(axis=(0, 2))).max()  # scores are small-scale
    assert r.final_output().snr_db == pytest.approx(whole, abs=0.01) and expected < whole - 6
    said = [w for w in r.summary.warnings if w.startswith("Output 'y' mixes channels")]
    assert len(said) == 1 and "(channels 4-7, RMS " in said[0]
    assert f"are at {expected:.1f} dB. Where those are scores (a detector's classes), judge the build by {expected:.1f} dB." in said[0]
    kept = r.summary.small_channels("y")
    assert kept.small == (4, 5, 6, 7) and kept.small_snr_db == pytest.approx(expected, abs=0.01)
    from engine import load_result

    assert load_result(r.run_dir).summary.small_channels("y") == kept  # summary.json keeps it
