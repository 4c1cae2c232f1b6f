"""The batch cache keeps reference tensors for rebuilds only within its budget (QUANTSCOPE_CACHE_MB, at most half
the free disk beyond a reserve); a rebuild gives the same numbers either way, and a full disk is one sentence."""

from __future__ import annotations

import errno
from collections import namedtuple

import numpy as np
import pandas as pd
import pytest

from engine import ConfigError, compare, rebuild
from engine.cli.main import main as cli
from engine.compare import reference_cache
from engine.compare.reference_cache import ReferenceCache, disk_budget
from engine.errors import unexpected_error_sentence
from engine.runs import RunFolder
from engine.settings import MB, Settings

Usage = namedtuple("Usage", "total used free")


def _compare(tiny, out, **kw):
    # The CPU path: on a GPU the cache keeps only inputs by design (the device recomputes the reference faster).
    return compare(tiny / "tiny.onnx", tiny / "data.npz", out_dir=out, batch_size=4, provider="cpu", **kw)


def _numbers(result) -> pd.DataFrame:
    return result.layers.select_dtypes("number").reset_index(drop=True)


def test_rebuild_from_cached_reference_equals_rebuild_that_reruns_it(tiny, tmp_path):
    cached, uncached = tmp_path / "cached", tmp_path / "uncached"
    first = _compare(tiny, cached, cache_bytes=64 * MB)
    second = _compare(tiny, uncached, cache_bytes=0)
    assert ReferenceCache(RunFolder(cached).cache_dir).has_reference
    assert not ReferenceCache(RunFolder(uncached).cache_dir).has_reference
    assert not any("batch cache" in w for w in first.summary.warnings)
    assert any("kept only the inputs" in w and "budget of 0 MB" in w for w in second.summary.warnings)
    pd.testing.assert_frame_equal(_numbers(first), _numbers(second))

    a, b = rebuild(cached, fallback=["conv2"]), rebuild(uncached, fallback=["conv2"])
    assert "conv2" in a.summary.fallback
    pd.testing.assert_frame_equal(_numbers(a), _numbers(b))
    assert not a.layers.set_index("node").loc["conv2", "quantized"]


def test_budget_never_takes_more_than_half_the_free_disk_beyond_the_reserve(tmp_path, monkeypatch):
    free = {"bytes": 0}
    monkeypatch.setattr(reference_cache.shutil, "disk_usage", lambda _p: Usage(10**12, 0, free["bytes"]))
    free["bytes"] = 1024 * MB + 2 * 300 * MB
    assert disk_budget(tmp_path, 4096 * MB) == 300 * MB
    assert disk_budget(tmp_path, 100 * MB) == 100 * MB
    free["bytes"] = 512 * MB  # below the reserve: inputs only
    assert disk_budget(tmp_path, 4096 * MB) == 0


def test_a_nearly_full_disk_keeps_only_inputs_and_says_so(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(reference_cache.shutil, "disk_usage", lambda _p: Usage(10**12, 0, 900 * MB))
    result = _compare(tiny, tmp_path / "run", cache_bytes=4096 * MB)
    assert not ReferenceCache(RunFolder(tmp_path / "run").cache_dir).has_reference
    assert any("budget of 0 MB" in w for w in result.summary.warnings)


@pytest.mark.parametrize("raw, expected", [(None, 4096 * MB), ("0", 0), (" 128 ", 128 * MB)])
def test_cache_size_comes_from_the_environment(monkeypatch, raw, expected):
    if raw is None:
        monkeypatch.delenv("QUANTSCOPE_CACHE_MB", raising=False)
    else:
        monkeypatch.setenv("QUANTSCOPE_CACHE_MB", raw)
    assert Settings.from_env().cache_bytes == expected


def test_a_bad_cache_size_is_one_sentence(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QUANTSCOPE_CACHE_MB", "lots")
    with pytest.raises(ConfigError, match=r"^QUANTSCOPE_CACHE_MB is 'lots', not a whole number of megabytes"):
        Settings.from_env()
    assert cli(["compare", str(tiny / "tiny.onnx"), "--calib", str(tiny / "data.npz"), "--out", str(tmp_path / "r"), "--no-index"]) == 2
    err = capsys.readouterr().err
    assert "QUANTSCOPE_CACHE_MB is 'lots'" in err and "Traceback" not in err


def test_a_full_disk_mid_comparison_is_one_sentence_and_keeps_the_earlier_results(tiny, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    first = _compare(tiny, out, cache_bytes=64 * MB)
    before = (out / "layers.csv").read_bytes()

    def full(self, k, arrays):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.folder / f"batch_{k:05d}.bin.tmp"))

    monkeypatch.setattr(ReferenceCache, "_write", full)
    code = cli(["compare", str(tiny / "tiny.onnx"), "--calib", str(tiny / "data.npz"), "--out", str(out), "--batch", "4", "--quiet",
                "--provider", "cpu"])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err
    assert err.strip() == "error: " + unexpected_error_sentence(OSError(errno.ENOSPC, "No space left on device"))
    assert "disk holding the run folders is full" in err
    archived = sorted((out / "history").iterdir())
    assert (archived[-1] / "layers.csv").read_bytes() == before  # the earlier comparison moved to history/, intact
    assert np.isfinite(first.summary.outputs["y"].snr_db)


def test_a_cancelled_comparison_leaves_no_cache_writer_thread(tmp_path):
    import threading

    from engine import Cancelled, Stage
    from tests.engine.conftest import SAMPLES

    def cancel_at_batch_3(ev):
        if ev.stage == Stage.COMPARE and ev.done == 3:
            raise Cancelled()

    with pytest.raises(Cancelled):
        compare(SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", out_dir=tmp_path / "run", batch_size=16,
                provider="cpu", screen_samples=0, progress=cancel_at_batch_3)
    assert not [t for t in threading.enumerate() if t.name == "quantscope-cache-writer"]


def test_final_outputs_are_kept_even_where_the_cache_keeps_only_inputs(tmp_path):
    """Probes read the reference's final outputs from the cache; a GPU's cache (inputs only) and one that outgrew its
    budget keep them, so a ranking never opens the reference's session only to compute them again."""
    x = [np.full((2, 3), k, np.float32) for k in range(3)]
    y = [np.full((2, 4), 10 + k, np.float32) for k in range(3)]
    inputs_only = ReferenceCache(tmp_path / "a")
    inputs_only.reset(inputs_only=True)
    for k in range(3):
        inputs_only.append({"x": x[k]}, {"t": x[k] * 2}, finals={"y": y[k]})
    inputs_only.finish(6)
    outgrown = ReferenceCache(tmp_path / "b", budget=2 * x[0].nbytes + 2 * y[0].nbytes)  # the third batch goes over
    outgrown.reset()
    for k in range(3):
        outgrown.append({"x": x[k]}, {"t": x[k] * 2, "y": y[k]}, finals={"y": y[k]})
    outgrown.finish(6)
    for cache in (inputs_only, outgrown):
        assert not cache.has_reference
        parts = list(cache.parts())
        assert [sorted(ref) for _, ref, _ in parts] == [["y"]] * 3  # the final output, not the intermediate tensor
        for k, (inputs, ref, _) in enumerate(parts):
            np.testing.assert_array_equal(inputs["x"], x[k])
            np.testing.assert_array_equal(ref["y"], y[k])


def test_multiply_accumulates_per_sample_have_known_answers():
    from onnx import TensorProto, helper

    from engine.compare.cache_policy import macs_per_sample
    from engine.compare.memory_plan import sample_types

    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 3, 3], [0.0] * 216)
    m2 = helper.make_tensor("m2", TensorProto.FLOAT, [8 * 16 * 16, 5], [0.0] * 8 * 16 * 16 * 5)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["y"], ["f"]), helper.make_node("MatMul", ["f", "m2"], ["z"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [w, m2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    types = sample_types(model, {"x": (4, 3, 16, 16)})
    assert macs_per_sample(model, types) == 8 * 16 * 16 * 27 + 5 * 8 * 16 * 16  # conv: outputs x 27; matmul: 5 x 2048


def test_unset_cache_size_keeps_the_reference_only_where_recomputing_costs_more(tiny, tmp_path, monkeypatch):
    from engine.compare import cache_policy

    auto = Settings.from_env({"QUANTSCOPE_RUNS_ROOT": str(tmp_path / "root")})  # QUANTSCOPE_CACHE_MB unset
    assert auto.cache_auto and not Settings.from_env({"QUANTSCOPE_CACHE_MB": "4096"}).cache_auto
    cheap = _compare(tiny, tmp_path / "cheap", settings=auto)  # a few conv MACs a byte: recomputed in a rebuild
    assert not ReferenceCache(RunFolder(tmp_path / "cheap").cache_dir).has_reference
    assert ReferenceCache(RunFolder(tmp_path / "cheap").cache_dir).meta["inputs_only_because"] == "cheaper"
    assert not any("batch cache" in w for w in cheap.summary.warnings)  # the faster choice, nothing to act on
    monkeypatch.setattr(cache_policy, "REFERENCE_MACS_PER_BYTE", 0)  # as if every byte took long to compute: kept
    dear = _compare(tiny, tmp_path / "dear", settings=auto)
    assert ReferenceCache(RunFolder(tmp_path / "dear").cache_dir).has_reference
    assert not any("batch cache" in w for w in dear.summary.warnings)
    pd.testing.assert_frame_equal(_numbers(cheap), _numbers(dear))
    a, b = rebuild(tmp_path / "cheap", fallback=["conv2"]), rebuild(tmp_path / "dear", fallback=["conv2"])
    pd.testing.assert_frame_equal(_numbers(a), _numbers(b))  # the rebuild runs the reference again: the same numbers
