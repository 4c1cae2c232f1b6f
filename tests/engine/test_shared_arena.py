"""CPU accuracy sessions share one ONNX Runtime arena, shrunk a moment after the last of them closes (shared_arena.py)."""

from __future__ import annotations

import threading
import time

import numpy as np
import onnx
import pytest

from engine.backends import resolve_backend
from engine.backends import shared_arena as module
from engine.backends.shared_arena import SharedCpuArena
from engine.errors import ModelError
from tests.engine.conftest import SAMPLES


@pytest.fixture
def arena(monkeypatch):
    """The process's arena counter with a short delay, shrinks counted."""
    fresh = SharedCpuArena()
    fresh.SHRINK_AFTER_S = 0.05
    monkeypatch.setattr(module, "SHARED_CPU_ARENA", fresh)
    monkeypatch.setattr("engine.backends.onnxrt.SHARED_CPU_ARENA", fresh)
    return fresh


def _wait_for(cond, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_sessions_count_while_open_and_the_arena_shrinks_only_once_all_closed(arena):
    model = onnx.load(SAMPLES / "resnet_digits_outlier.onnx")
    x = np.load(SAMPLES / "digits_eval.npz")["input"][:8]
    backend = resolve_backend("cpu").backend
    with backend.runner(model, observe=["stem_relu_out"]) as a:
        first = a.infer({"input": x})
        with backend.runner(model) as b:
            second = b.infer({"input": x})
            assert arena._open == 2
        time.sleep(0.2)  # one still open: nothing shrinks
        assert arena.shrinks == 0 and arena._open == 1
        kept = {k: v.copy() for k, v in first.items()}
    assert arena._open == 0
    assert _wait_for(lambda: arena.shrinks == 1)
    # outputs are numpy arrays over arena memory: those still held survive the shrink, unchanged
    for k, v in kept.items():
        np.testing.assert_array_equal(first[k], v)
    name = next(iter(second))
    np.testing.assert_array_equal(first[name], second[name])  # the same model, the same bits from either session


def test_a_session_opening_before_the_delay_cancels_the_shrink(arena):
    model = onnx.load(SAMPLES / "resnet_digits_outlier.onnx")
    backend = resolve_backend("cpu").backend
    arena.SHRINK_AFTER_S = 0.5
    with backend.runner(model):
        pass
    with backend.runner(model):  # within the delay
        time.sleep(0.7)  # past the first delay: still open, so nothing shrank
        assert arena.shrinks == 0
    assert _wait_for(lambda: arena.shrinks == 1)
    time.sleep(0.7)
    assert arena.shrinks == 1  # once, not once per closed session


def test_latency_sessions_keep_their_own_arena(arena):
    model = onnx.load(SAMPLES / "resnet_digits_outlier.onnx")
    with resolve_backend("cpu").backend.runner(model, optimized=True):
        assert arena._open == 0


def test_a_refused_session_is_not_counted(arena):
    model = onnx.load(SAMPLES / "resnet_digits_outlier.onnx")
    model.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(ModelError):
        with resolve_backend("cpu").backend.runner(model):
            pass
    assert arena._open == 0


def test_concurrent_sessions_are_counted_exactly(arena):
    model = onnx.load(SAMPLES / "resnet_digits_outlier.onnx")
    x = np.load(SAMPLES / "digits_eval.npz")["input"][:4]
    backend = resolve_backend("cpu").backend
    results, errors = [], []

    def work():
        try:
            with backend.runner(model) as r:
                results.append(next(iter(r.infer({"input": x}).values())).copy())
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4
    assert all(np.array_equal(results[0], r) for r in results[1:])
    assert arena._open == 0
    assert _wait_for(lambda: arena.shrinks >= 1)


def test_nothing_shrinks_once_the_interpreter_is_exiting(arena):
    """A shrink running during interpreter shutdown aborted the process; the exit handler waits for one in flight and
    starts none after."""
    model = onnx.load(SAMPLES / "resnet_digits_outlier.onnx")
    with resolve_backend("cpu").backend.runner(model):
        pass
    assert arena._timer is not None
    arena._close()  # what atexit calls
    assert arena._timer is None and arena._shrinker is None
    with resolve_backend("cpu").backend.runner(model):
        pass
    time.sleep(0.2)
    assert arena.shrinks == 0 and arena._timer is None


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_the_memory_of_closed_sessions_goes_back_to_the_system(arena):
    """A run whose intermediate tensor takes 100 MB: the arena keeps it after the session closes, until the shrink."""
    from onnx import TensorProto, helper

    big = helper.make_graph(
        [helper.make_node("Expand", ["x", "shape"], ["wide"]), helper.make_node("Relu", ["wide"], ["r"]),
         helper.make_node("ReduceSum", ["r"], ["y"], keepdims=0)], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        [helper.make_tensor("shape", TensorProto.INT64, [1], [25_000_000])])
    model = helper.make_model(big, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    arena.SHRINK_AFTER_S = 0.2
    # the arena's first region is never returned (ONNX Runtime keeps it): a small run first, as any earlier test would
    with resolve_backend("cpu").backend.runner(onnx.load(SAMPLES / "resnet_digits_outlier.onnx")) as r:
        r.infer({"input": np.zeros((1, 1, 32, 32), np.float32)})
    assert _wait_for(lambda: arena.shrinks == 1)
    before = _rss_mb()
    with resolve_backend("cpu").backend.runner(model) as r:
        out = r.infer({"x": np.ones(1, np.float32)})
    assert float(out["y"]) == 25_000_000
    del out  # an output is a view of arena memory: held, it keeps its region (and the big tensor's, if they share one)
    held = _rss_mb()
    assert held - before > 80  # a 100 MB tensor (the runtime reuses its buffer), kept by the arena after the session closed
    assert _wait_for(lambda: arena.shrinks == 2)
    assert _rss_mb() - before < 40
