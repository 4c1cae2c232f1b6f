"""Final outputs come from the unmodified candidate. It runs on the first batch of each input shape; later batches
reuse the marked run's outputs only when those were bit-identical to the unmodified ones."""

from __future__ import annotations

import numpy as np
import pytest

from engine.compare.graph import observe
from engine.compare.layerwise import run_layerwise
from engine.quantize import TRT_INT8_OP_TYPES
from tests.engine.fakes import FakeBackend
from tests.engine.test_matching import _model


class CountingBackend(FakeBackend):
    """Marked runs return `out` shifted by `marked_shift` (as if marking outputs changed fusion); counts unmodified runs."""

    def __init__(self, marked_shift: float) -> None:
        super().__init__(self._outputs, "counting")
        self.marked_shift, self.unmodified_runs = marked_shift, 0

    def _outputs(self, feed, observing, model):
        x = np.maximum(feed["x"], 0) * 0.9
        if observing:
            return {"a": x, "b": x, "out": x + self.marked_shift}
        self.unmodified_runs += 1
        return {"out": x}


def _pairs(rng, sizes):
    for n in sizes:
        x = rng.standard_normal((n, 4)).astype(np.float32)
        r = np.maximum(x, 0)
        yield {"x": x}, {"a": r, "b": r, "out": r}


def _snr_db(ref, cand):
    ref, cand = np.concatenate(ref).astype(np.float64), np.concatenate(cand).astype(np.float64)
    return 10 * np.log10(np.sum(ref**2) / np.sum((ref - cand) ** 2))


@pytest.mark.parametrize("shift, expected_runs", [(0.0, 2), (1e-3, 6)])
def test_unmodified_candidate_runs_until_proven_identical(shift, expected_runs):
    ref_model = _model(["a", "b", "out"])
    view = observe(ref_model, ref_model, TRT_INT8_OP_TYPES)
    backend = CountingBackend(shift)
    sizes = [8, 8, 8, 8, 8, 3]  # five full batches and a smaller last one (a new shape: checked again)
    lw = run_layerwise(view, ref_model, ref_model, backend, _pairs(np.random.default_rng(0), sizes), len(sizes))
    assert backend.unmodified_runs == expected_runs == lw.unmodified_batches
    refs = [r["out"] for _, r in _pairs(np.random.default_rng(0), sizes)]
    unmodified = [0.9 * r for r in refs]  # what the unmodified candidate returns on every batch
    assert lw.outputs["out"].snr_db == pytest.approx(_snr_db(refs, unmodified), rel=1e-7)
    marked = [0.9 * r + shift for r in refs]
    assert lw.marked_outputs["out"].snr_db == pytest.approx(_snr_db(refs, marked), rel=1e-7)


def _labelled_classifier():
    """Gemm -> logits, and ArgMax -> an int64 label output listed first (as some exporters write it)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2"], ["logits"], name="fc2", transB=1),
             helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0)]
    g = helper.make_graph(nodes, "labelled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
                          [helper.make_tensor_value_info("label", TensorProto.INT64, ["n"]),
                           helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 5])],
                          [numpy_helper.from_array(rng.standard_normal((32, 16)).astype(np.float32), "w"),
                           numpy_helper.from_array(rng.standard_normal((5, 32)).astype(np.float32), "w2")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    return m


def test_an_integer_output_is_reported_by_compare_and_rebuild_but_never_scored_by_probes(tmp_path):
    import math

    import onnx

    from engine import compare, rebuild
    from engine.diagnose.run_probe import open_probe

    onnx.save(_labelled_classifier(), tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(1).standard_normal((24, 16)).astype(np.float32))
    first = compare(tmp_path / "m.onnx", tmp_path / "d.npz", out_dir=tmp_path / "run", batch_size=8, provider="cpu")
    assert set(first.summary.outputs) == {"label", "logits"}
    again = rebuild(tmp_path / "run", fallback=["fc2"])  # from the cached reference: the label must still be there
    assert set(again.summary.outputs) == {"label", "logits"}
    _, _, probe = open_probe(tmp_path / "run", "cpu", samples=None)
    with probe:
        m = probe.measure(())
        exact = probe.measure(probe.nodes)
    # the scores are the logits' (the label is not noise you can take a power of): all-INT8 finite, all-fallback exact
    assert math.isfinite(m.snr_db) and math.isfinite(m.outputs_snr_db) and m.snr_db == m.outputs_snr_db
    assert first.summary.culprits and {c.node for c in first.summary.culprits} <= {"fc1", "fc2"}
    assert exact.snr_db > m.snr_db


def test_a_probe_output_whose_shape_changed_is_counted_unpaired_not_compared():
    import math

    from engine.diagnose.probe_scoring import Score

    score = Score(["boxes", "scores"], None, None)
    ref = {"boxes": np.ones((3, 7), np.float32), "scores": np.ones((4,), np.float32)}
    score.add(ref, {"boxes": np.ones((2, 7), np.float32), "scores": np.full((4,), 1.1, np.float32)})  # NMS kept 2 boxes
    score.add({"boxes": np.zeros((0, 7), np.float32), "scores": ref["scores"]},
              {"boxes": np.ones((2, 7), np.float32), "scores": ref["scores"]})  # none in the reference: not "identical"
    m = score.result(0.0)
    assert m.unpaired == 2 and math.isnan(m.snr_db) and math.isnan(m.cosine)  # boxes: never paired
    assert m.outputs_snr_db == pytest.approx(10 * math.log10(8 / (4 * 0.1**2)), rel=1e-5)  # the scores alone
