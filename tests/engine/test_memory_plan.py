"""Peak memory is bounded by a budget, not the batch size: batches split into micro-batches (dynamic batch) or tensors
observed in groups over several passes (fixed batch), with the same results."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest

from engine import Cancelled, Stage, compare, rebuild
from engine.backends import resolve_backend
from engine.compare.memory_plan import PEAK_FACTOR, plan_memory
from engine.diagnose.run_probe import cached_probe_data
from engine.progress import TimeLeft
from engine.runs import RunFolder
from engine.settings import Settings
from tests.engine.conftest import SAMPLES, tiny_model

EXACT = ["cosine", "cosine_min", "snr_db", "mse", "max_abs_err", "mean_abs_err", "introduced_db"]


def _settings(memory_bytes: int) -> Settings:
    return dataclasses.replace(Settings.from_env(), memory_bytes=memory_bytes)


def test_the_plan_has_known_answers():
    sizes = {"a": 100, "b": 300, "c": 100}  # bytes per sample
    assert plan_memory(sizes, list(sizes), 10, True, 10 * 500 * PEAK_FACTOR).micro is None  # fits
    assert plan_memory(sizes, list(sizes), 10, True, 4 * 500 * PEAK_FACTOR).micro == 4
    fixed = plan_memory(sizes, list(sizes), 10, False, 10 * 400 * PEAK_FACTOR)
    assert fixed.micro is None and fixed.groups == (("a", "b"), ("c",))
    tiny = plan_memory(sizes, list(sizes), 10, True, 200 * PEAK_FACTOR)  # not one sample fits: one at a time, in groups
    assert tiny.micro == 1 and tiny.groups == (("a",), ("b",), ("c",))


def test_host_passes_of_a_dynamic_batch_stay_under_pass_bytes_whatever_the_budget():
    sizes = {"a": 100, "b": 300, "c": 100}  # 500 bytes a sample
    big = 10**12
    assert plan_memory(sizes, list(sizes), 32, True, big, pass_bytes=1000).micro == 2
    assert plan_memory(sizes, list(sizes), 32, True, big, pass_bytes=100).micro == 1  # one sample at least
    assert plan_memory(sizes, list(sizes), 2, True, big, pass_bytes=1000).micro is None  # the batch fits a pass
    assert plan_memory(sizes, list(sizes), 32, True, 4 * 500 * PEAK_FACTOR, pass_bytes=10**6).micro == 4  # budget smaller
    fixed = plan_memory(sizes, list(sizes), 32, False, big, pass_bytes=1000)  # a fixed batch cannot be split
    assert fixed.micro is None and fixed.passes == 1


def _numbers(result):
    return result.layers.set_index("tensor")[EXACT]


def test_micro_batches_give_the_same_metrics(tmp_path):
    kw = {"data": SAMPLES / "digits_eval.npz", "batch_size": 50, "provider": "cpu", "screen_samples": 0}
    whole = compare(SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", out_dir=tmp_path / "a",
                    settings=_settings(4096 * 2**20), **kw)
    small = compare(SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", out_dir=tmp_path / "b",
                    settings=_settings(8 * 2**20), **kw)  # ~300 KB a sample observed: a few samples a pass
    assert whole.summary.batches == small.summary.batches == 10  # still ten batches of 50 for the metrics
    np.testing.assert_allclose(_numbers(small).to_numpy(), _numbers(whole).to_numpy(), rtol=1e-5, atol=1e-7)  # float32 sums over other chunks
    assert small.final_output().snr_db == pytest.approx(whole.final_output().snr_db, rel=1e-6)
    ratio = small.layers["rel_err_median"] / whole.layers["rel_err_median"]
    assert ratio.dropna().between(0.9, 1.1).all()  # a histogram of sampled elements: sampled per part now
    # a rebuild reads the parts the cache kept and gets what a rebuild of the unsplit run gets
    said = []
    a = rebuild(tmp_path / "a", fallback=["block3_2_conv"])
    b = rebuild(tmp_path / "b", fallback=["block3_2_conv"], progress=lambda ev: said.append(ev))
    # its progress counts the batches the user chose, and the parts as parts: 3 batches of 25 read "batch 3/64"
    steps = [ev for ev in said if ev.stage == Stage.COMPARE]
    parts = steps[0].total
    assert parts > 10 and steps[0].message == "starting sessions (0/10 batches)"
    assert steps[-1].done == parts and steps[-1].message.startswith(f"batch 10/10, part {parts}/{parts}, about ")
    np.testing.assert_allclose(_numbers(b).to_numpy(), _numbers(a).to_numpy(), rtol=1e-5, atol=1e-7)  # float32 sums over other chunks
    # latency is timed on whole batches: the parts of one batch are joined again, equal to the unsplit run's batches
    backend = resolve_backend("cpu").backend
    reference = onnx.load(RunFolder(tmp_path / "a").reference)
    joined = cached_probe_data(RunFolder(tmp_path / "b"), reference, backend, whole_batches=True)
    plain = cached_probe_data(RunFolder(tmp_path / "a"), reference, backend, whole_batches=True)
    assert [len(b["input"]) for b in joined.batches] == [50] * 10
    for (jb, jr), (pb, pr) in zip(zip(joined.batches, joined.reference_outputs), zip(plain.batches, plain.reference_outputs)):
        np.testing.assert_array_equal(jb["input"], pb["input"])
        assert jr.keys() == pr.keys()
        for k in jr:
            np.testing.assert_allclose(jr[k], pr[k], rtol=1e-5, atol=1e-6)  # the FP32 model ran on parts in one run


def test_a_fixed_batch_is_observed_in_groups(tmp_path, monkeypatch):
    m = tiny_model()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4  # batch fixed at 4
    onnx.save(m, tmp_path / "fixed.onnx")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).standard_normal((8, 2, 8, 8)).astype(np.float32))
    kw = {"batch_size": 4, "provider": "cpu", "screen_samples": 0}
    whole = compare(tmp_path / "fixed.onnx", tmp_path / "d.npz", out_dir=tmp_path / "a", settings=_settings(2**30), **kw)
    said = []
    monkeypatch.setattr(TimeLeft, "SETTLE_S", 0.0)  # an estimate from the second run on, however fast the runs
    grouped = compare(tmp_path / "fixed.onnx", tmp_path / "d.npz", out_dir=tmp_path / "b", settings=_settings(4000),
                      progress=said.append, **kw)
    assert whole.summary.passes == 1 and grouped.summary.passes > 1
    # a batch of several passes reports each pass, so a cancel need not wait for the whole batch (a layout detector's
    # batches of 5 passes took 3-4 s each)
    p = grouped.summary.passes
    within = [ev for ev in said if ev.stage == Stage.COMPARE and ", pass " in ev.message]
    assert [ev.message.split(", about")[0] for ev in within] == [f"batch {b}/2, pass {k}/{p}" for b in (1, 2) for k in range(1, p)]
    # counted in runs, so the bar fills inside a batch too (PP-OCRv4's detector, one batch in 64 runs: it stayed empty)
    assert [(ev.done, ev.total) for ev in within] == [((b - 1) * p + k, 2 * p) for b in (1, 2) for k in range(1, p)]
    # the time left from the runs' pace after the first (the sessions' start is before it), the first batch's too
    assert ["about" in ev.message for ev in within] == [False] + [True] * (2 * p - 3)
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["passes"] == grouped.summary.passes
    cache_notes = [w for w in grouped.summary.warnings if "batch cache" in w]
    assert cache_notes == [f"The comparison observed the tensors in {grouped.summary.passes} passes to stay within its memory "
                           "budget (0 MB, QUANTSCOPE_MEMORY_MB), so the batch cache kept only the inputs and each rebuild runs "
                           "the FP32 model again."]  # not "outgrew its budget": the cache's own budget was never reached
    np.testing.assert_allclose(_numbers(grouped).to_numpy(), _numbers(whole).to_numpy(), rtol=1e-5, atol=1e-7)  # float32 sums over other chunks


def test_the_batch_cache_copies_count_against_the_budget():
    from engine.compare.memory_plan import CACHE_COPIES, PEAK_FACTOR, loop_budget

    # a pass takes PEAK_FACTOR (3) times its observed tensors; the cache's writer holds two more copies of the reference's
    assert loop_budget(1000, caches_reference=True) == int(1000 * PEAK_FACTOR / (PEAK_FACTOR + CACHE_COPIES)) == 600
    assert loop_budget(1000, caches_reference=False) == 1000


def test_a_cancel_between_passes_stops_the_batch_and_keeps_no_results(tmp_path):
    m = tiny_model()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    onnx.save(m, tmp_path / "fixed.onnx")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).standard_normal((8, 2, 8, 8)).astype(np.float32))
    seen = []

    def cancel_at_first_pass(ev):
        seen.append(ev.message)
        if ", pass 1/" in ev.message:
            raise Cancelled()

    with pytest.raises(Cancelled):
        compare(tmp_path / "fixed.onnx", tmp_path / "d.npz", out_dir=tmp_path / "c", settings=_settings(4000),
                batch_size=4, provider="cpu", screen_samples=0, progress=cancel_at_first_pass)
    assert seen[-1].startswith("batch 1/2, pass 1/")  # stopped inside the first batch
    assert not RunFolder(tmp_path / "c").has_results()



def test_host_probes_join_no_more_samples_than_the_budget_fits():
    """PP-OCRv4's detector: 16 single-page parts were joined into one probe batch and its search took the server to
    2.8 GB; the budget now decides how many join, on the host (device memory is the runtime's business)."""
    import onnx

    from engine.compare.memory_plan import activation_bytes_per_sample, live_bytes_per_sample
    from engine.diagnose.run_probe import MERGED_BATCH, merge_limit

    reference = onnx.load(SAMPLES / "resnet_digits_outlier.onnx")
    batches = [{"input": np.zeros((1, 1, 32, 32), np.float32)}] * 16
    live = live_bytes_per_sample(reference, {"input": (1, 32, 32)})
    assert 0 < live < activation_bytes_per_sample(reference, {"input": (1, 32, 32)})  # outputs are freed after their last reader
    per_sample = int(PEAK_FACTOR * live)
    cpu = resolve_backend("cpu").backend
    assert merge_limit(reference, batches, cpu, 3 * per_sample + 1) == 3
    assert merge_limit(reference, batches, cpu, per_sample // 2) == 1  # one sample at least
    assert merge_limit(reference, batches, cpu, 2**40) == MERGED_BATCH  # never more than before
    assert merge_limit(reference, batches, cpu, None) == MERGED_BATCH

    class Device:
        capabilities = dataclasses.replace(cpu.capabilities, device_outputs=True)

    assert merge_limit(reference, batches, Device(), 3 * per_sample) == MERGED_BATCH


def test_live_bytes_free_each_output_after_its_last_reader():
    from onnx import TensorProto, helper

    from engine.compare.memory_plan import activation_bytes_per_sample, live_bytes_per_sample

    # a = relu(x), b = relu(a), c = a + b, d = relu(c): 40 bytes each a sample; a and b die at the Add, c at the last Relu
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["c"]), helper.make_node("Relu", ["c"], ["d"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
                          [helper.make_tensor_value_info("d", TensorProto.FLOAT, ["N", 10])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert activation_bytes_per_sample(m, {"x": (10,)}) == 160
    assert live_bytes_per_sample(m, {"x": (10,)}) == 120  # a, b and c at the Add


def test_probe_samples_are_spread_over_the_data_and_every_prefix_is_too(outlier_run):
    """A ShuffleNet trial's .npz kept each photo's 5 crops together: the ranking's first 16 samples held 3 of 9 photos
    and put n201 first, where n4 helps most on all 45 (spread, the ranking names n4)."""
    import numpy as np
    import onnx

    from engine.backends import resolve_backend
    from engine.diagnose.run_probe import cached_probe_data
    from engine.diagnose.spread import spread_order
    from engine.runs import RunFolder

    order = spread_order(45, 16)
    assert sorted(order) == [int((j + 0.5) * 45 / 16) for j in range(16)]  # evenly spaced
    assert sorted(order[:4]) == [1, 12, 23, 35] and sorted(order[:2]) == [1, 23]  # and so is every prefix
    assert spread_order(5, 9) == [0, 2, 1, 3, 4] and spread_order(3, 0) == []
    run = RunFolder(outlier_run.run_dir)
    reference = onnx.load(run.reference)
    data = cached_probe_data(run, reference, resolve_backend("cpu").backend, samples=8)
    picked = spread_order(outlier_run.summary.samples, 8)
    x = np.load(__import__("tests.engine.conftest", fromlist=["SAMPLES"]).SAMPLES / "digits_eval.npz")["input"]
    got = np.concatenate([b["input"] for b in data.batches])
    np.testing.assert_array_equal(got, x[picked])
    labels = np.load(run.labels)
    np.testing.assert_array_equal(data.labels, labels[picked])
    assert data.head(2).samples == 2 and np.array_equal(data.head(2).batches[0]["input"], x[picked[:2]])
