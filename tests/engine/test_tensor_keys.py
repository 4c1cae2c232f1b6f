"""A rebuild reads back the metrics of every tensor it computes as the results in its folder did (everything before the
nodes whose fallback changed) instead of reducing it again, and gets exactly what a full rebuild gets."""

from __future__ import annotations

import importlib

import numpy as np
import onnx
import pandas as pd

from engine import compare, rebuild
from engine.backends.onnxrt import OnnxRuntimeBackend
from engine.compare.metrics import METRIC_COLUMNS
from engine.compare.tensor_keys import KEY_COLUMN, tensor_keys
from engine.quantize.config import QuantConfig
from engine.quantize.emit import emit_candidate
from engine.runs import RunFolder
from tests.engine.conftest import SAMPLES

pipeline = importlib.import_module("engine.pipeline")


def _downstream(model: onnx.ModelProto, node: str) -> set[str]:
    """Every tensor computed from `node`'s inputs onwards (its Q/DQ included)."""
    out: set[str] = set()
    byname = {n.name: n for n in model.graph.node}
    changed = set(byname[node].input) | set(byname[node].output)
    for n in model.graph.node:
        if n.name == node or any(i in changed or i in out for i in n.input):
            out.update(o for o in n.output if o)
    return out


def test_keys_change_exactly_downstream_of_a_fallback(tmp_path):
    run = tmp_path / "run"
    compare(SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", out_dir=run, batch_size=50,
            provider="cpu", screen_samples=0)
    folder = RunFolder(run)
    reference = onnx.load(folder.reference)
    emit = lambda fallback: emit_candidate(reference, folder.reference, folder.calibration_cache,  # noqa: E731
                                           QuantConfig(fallback=frozenset(fallback)), base_cache=folder.int8_base).model
    before, after = emit([]), emit(["block3_2_conv"])
    a, b = tensor_keys(before, "cpu|x"), tensor_keys(after, "cpu|x")
    assert tensor_keys(emit([]), "cpu|x") == a  # the same build: the same keys
    observed = [n.output[0] for n in reference.graph.node]
    same = {t for t in observed if a.get(t) == b.get(t)}
    assert "stem_conv_out" in same or any(t.startswith("stem") for t in same)  # the stem is before the fallback
    assert same.isdisjoint(_downstream(after, "block3_2_conv"))  # nothing after it keeps its key
    assert len(same) > len(observed) // 3
    assert not set(tensor_keys(before, "cpu|y").values()) & set(a.values()) - {a[i.name] for i in before.graph.initializer}


def rebuilt_both_ways(tmp_path, monkeypatch, provider: str, marked: dict | None = None):
    """The sample compared twice, then rebuilt with block3_2_conv in fallback: reading rows back, and measuring all.
    marked: where given, gets under "incremental" and "full" how many tensors each rebuild's marked runs observed."""
    kw = {"data": SAMPLES / "digits_eval.npz", "batch_size": 50, "provider": provider, "screen_samples": 0}
    for name in ("incremental", "full"):
        compare(SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", out_dir=tmp_path / name, **kw)

    def counting(m, name: str) -> None:
        if marked is not None:
            runner, seen = OnnxRuntimeBackend.runner, marked.setdefault(name, [])
            m.setattr(OnnxRuntimeBackend, "runner", lambda self, model, observe=(), **k: (
                seen.append(len(observe)) if observe else None, runner(self, model, observe, **k))[1])

    with monkeypatch.context() as m:
        counting(m, "incremental")
        fast = rebuild(tmp_path / "incremental", fallback=["block3_2_conv"])
    with monkeypatch.context() as m:
        counting(m, "full")
        m.setattr(pipeline, "reusable_stats", lambda *a, **k: {})
        full = rebuild(tmp_path / "full", fallback=["block3_2_conv"])
    return fast, full


def test_a_rebuild_reads_back_what_it_did_not_change_and_equals_a_full_rebuild(tmp_path, monkeypatch):
    marked: dict[str, list[int]] = {}
    fast, full = rebuilt_both_ways(tmp_path, monkeypatch, "cpu", marked)
    reused = fast.summary.timings["tensors_reused"]
    assert 0 < reused < len(fast.layers) and full.summary.timings["tensors_reused"] == 0
    # the rows read back are not marked either: the reference and the candidate observe only what is measured again
    everything = marked["full"][0]
    assert marked == {"full": [everything, everything], "incremental": [everything - reused, everything - reused]}
    cols = ["tensor", *METRIC_COLUMNS, "introduced_db", "input_snr_db"]
    pd.testing.assert_frame_equal(fast.layers[cols].reset_index(drop=True), full.layers[cols].reset_index(drop=True),
                                  check_exact=True)  # bit for bit, the tensors read back and the ones measured again
    assert fast.summary.outputs_together_snr_db() == full.summary.outputs_together_snr_db()
    # and again from the rebuilt folder: unticking reads back what the rebuild measured before the node
    again = rebuild(tmp_path / "incremental", fallback=[])
    first = pd.read_csv(tmp_path / "incremental" / "history" / "1" / "layers.csv")
    np.testing.assert_array_equal(again.layers.set_index("tensor").loc[first["tensor"], "snr_db"].to_numpy(),
                                  first["snr_db"].to_numpy())  # back to the all-INT8 build's numbers
    assert again.summary.timings["tensors_reused"] > 0


def test_new_batches_or_no_keys_mean_nothing_is_read_back(tmp_path):
    kw = {"batch_size": 50, "provider": "cpu", "screen_samples": 0}
    run = tmp_path / "run"
    compare(SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", out_dir=run, **kw)
    # the same folder compared again on other samples: a new cache, whose name the old rows do not carry
    compare(SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", data=SAMPLES / "digits_eval.npz",
            out_dir=run, **kw)
    assert rebuild(run, fallback=["block3_2_conv"]).summary.timings["tensors_reused"] > 0  # measured on the new one
    layers = pd.read_csv(run / "layers.csv")
    layers[KEY_COLUMN] = ""  # results written before keys were kept
    layers.to_csv(run / "layers.csv", index=False)
    assert rebuild(run, fallback=[]).summary.timings["tensors_reused"] == 0
