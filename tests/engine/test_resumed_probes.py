"""Probes resumed at a cut of the gated graph from a baseline's tensors give what whole-graph runs give, bit for bit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from onnx import TensorProto, helper

from engine import sensitivity
from engine.backends.onnxrt import OnnxRuntimeBackend
from engine.diagnose import probes as probes_module
from engine.diagnose.autofallback import search_fallback
from engine.diagnose.gated import GATE_PREFIX, GatedModel
from engine.diagnose.gated_cuts import plan_cuts
from engine.diagnose.resumed_runs import ResumedRuns
from engine.diagnose.run_probe import open_probe
from engine.diagnose.units import UnitMode
from engine.model.graph_reads import node_reads
from engine.scale import SerialExecutor

UNITS = 10


def _switched_chain() -> GatedModel:
    """x -> ten steps, step k taking Relu(h) with gate k on and Neg(h) with it off (a Where, as the branchless gated
    graph switches); step 1 reads Or(g1, g9), as a tensor shared by two units is switched; Shape(x) (int64) is carried
    to a Reshape at the very end."""
    nodes = [helper.make_node("Shape", ["x"], ["shape"], name="shape"),
             helper.make_node("Or", ["g1", "g9"], ["g1_or_g9"], name="or")]
    h = "x"
    for k in range(UNITS):
        on, off, out = f"on{k}", f"off{k}", f"h{k}"
        nodes += [helper.make_node("Relu", [h], [on], name=f"relu{k}"), helper.make_node("Neg", [h], [off], name=f"neg{k}"),
                  helper.make_node("Where", ["g1_or_g9" if k == 1 else f"g{k}", on, off], [out], name=f"step{k}")]
        h = out
    nodes.append(helper.make_node("Reshape", [h, "shape"], ["y"], name="reshape"))
    gates = [f"g{k}" for k in range(UNITS)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3]),
                                               *(helper.make_tensor_value_info(g, TensorProto.BOOL, []) for g in gates)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return GatedModel(model, tuple((f"step{k}",) for k in range(UNITS)), tuple(gates))


def test_cuts_carry_what_the_rest_reads_and_the_gates_before_them():
    gated = _switched_chain()
    plan = plan_cuts(gated.model, gated.gates, parts=4)
    assert plan is not None and [n.name for n in plan.gate_only] == ["or"]
    assert len(plan.cuts) == 3
    assert [plan.main[c.position].name for c in plan.cuts] == ["step2", "step4", "step6"]  # before the node reading a gate
    for cut, k in zip(plan.cuts, (2, 4, 6)):
        assert set(cut.tensors) == {"shape", f"on{k}", f"off{k}"}  # the int64 shape crosses every cut
        assert cut.gates == {f"g{j}" for j in range(k)} | {"g9"}  # step 1, before every cut, reads g9 too
    assert plan_cuts(gated.model, gated.gates, parts=6) is None  # fewer than two units a part: not worth cutting


def test_a_branch_reads_what_its_body_reads_from_outside_it():
    """An If whose then-branch reads an outer tensor `w` and returns an outer tensor `v` as it is: both are the If's
    reads, so a cut between their writers and the If keeps them; names the body writes itself are not."""
    then = helper.make_graph([helper.make_node("Add", ["w", "w"], ["inner"])], "then", [],
                             [helper.make_tensor_value_info("inner", TensorProto.FLOAT, None)])
    other = helper.make_graph([], "else", [], [helper.make_tensor_value_info("v", TensorProto.FLOAT, None)])
    node = helper.make_node("If", ["cond"], ["out"], then_branch=then, else_branch=other)
    assert node_reads(node) == {"cond", "w", "v"}


def test_a_suffix_run_from_a_baselines_tensors_equals_the_whole_graph():
    gated = _switched_chain()
    plan = plan_cuts(gated.model, gated.gates, parts=4)
    backend = OnnxRuntimeBackend("cpu")
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    off = {g: np.array(False) for g in gated.gates}
    runs = ResumedRuns(backend, gated, plan, budget_bytes=1 << 20)

    with backend.runner(gated.model) as whole:
        infer, keep = runs.recording(off, None, 1)
        assert np.array_equal(infer({"x": x})["y"], whole.infer({"x": x, **off})["y"])
        keep()
        assert runs.dtypes()["shape"] == np.int64
        runs.open(runs.dtypes())
        probe = {**off, "g8": np.array(True)}  # agrees with the all-off baseline before every cut
        at = runs.resume_cut(probe, None)
        assert at == (2, runs.fallback)
        assert np.array_equal(runs.resumed(probe, None, at)({"x": x})["y"], whole.infer({"x": x, **probe})["y"])
        assert runs.resume_cut({**off, "g9": np.array(True)}, None) is None  # g9 is read before every cut, by the Or
        assert runs.resume_cut({**off, "g8": np.array(True)}, 3) is None  # nothing kept for the first 3 samples
        runs.close()
        assert not runs.is_open and not runs.has(None, runs.fallback)


def test_a_tight_budget_keeps_the_deepest_cuts_that_fit():
    gated = _switched_chain()
    plan = plan_cuts(gated.model, gated.gates, parts=4)
    backend = OnnxRuntimeBackend("cpu")
    x = np.ones((1000, 3), np.float32)  # a cut holds 2 x 12,000 bytes (on, off) and 16 of shape
    off = {g: np.array(False) for g in gated.gates}
    for budget, usable in ((100_000, {0, 1, 2}), (50_000, {1, 2}), (30_000, {2}), (10_000, None)):
        runs = ResumedRuns(backend, gated, plan, budget_bytes=budget)
        infer, keep = runs.recording(off, None, 1)
        infer({"x": x})
        keep()
        assert runs.has(None, runs.fallback) == (usable is not None)
        if usable is not None:
            assert runs._kept[(None, runs.fallback)].usable == usable
        runs.close()


def _numbers(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["probe_seconds"]).set_index("node")


@pytest.fixture()
def resumed_count(monkeypatch):
    """How many probe runs were resumed, with resuming always judged worth its sessions."""
    calls = []
    original = ResumedRuns.resumed

    def counted(self, gates, key, at):
        if key != -1:  # not the check's own runs (on its two samples) when the sessions open
            calls.append(at)
        return original(self, gates, key, at)

    monkeypatch.setattr(ResumedRuns, "resumed", counted)
    monkeypatch.setattr(probes_module, "worth_resuming", lambda *a: True)
    return calls


def test_sensitivity_resumed_equals_whole_graph_runs(run_copy, resumed_count, monkeypatch):
    resumed = sensitivity(run_copy, samples=64, pools=SerialExecutor().probe_pool)
    used = len(resumed_count)
    monkeypatch.setattr(ResumedRuns, "plan_for", classmethod(lambda cls, *a: None))
    whole = sensitivity(run_copy, samples=64, pools=SerialExecutor().probe_pool)
    assert used >= 10  # most of the 20 single-unit probes resumed at some cut (the check's own runs not counted)
    pd.testing.assert_frame_equal(_numbers(resumed), _numbers(whole), check_exact=True)


def test_a_greedy_search_resumes_from_the_set_it_has_chosen_and_finds_the_same(run_copy, resumed_count, monkeypatch):
    """A greedy round's probes are the units chosen so far plus one: they resume from a baseline of the chosen set
    (recorded once a round), not only from all-INT8 or all-fallback, and every step measures what whole-graph runs do."""
    resumed = search_fallback(run_copy, "snr_db=45", strategy="greedy", samples=64)
    units = len(open_probe(run_copy, None, UnitMode.NODE, 64)[2].units)
    everything = frozenset(f"{GATE_PREFIX}{k}" for k in range(units))
    shared = [b for _, b in resumed_count if b not in (frozenset(), everything)]  # neither all-INT8 nor all-fallback
    monkeypatch.setattr(ResumedRuns, "plan_for", classmethod(lambda cls, *a: None))
    whole = search_fallback(run_copy, "snr_db=45", strategy="greedy", samples=64)
    assert len(resumed.fallback) >= 3 and resumed.fallback == whole.fallback and resumed.achieved == whole.achieved
    assert [(s.fallback, s.value) for s in resumed.steps] == [(s.fallback, s.value) for s in whole.steps]
    assert all(b < everything for b in shared)
    assert len(shared) >= 5 and len(set(shared)) >= 2  # several rounds resumed, each from the set it had chosen


def test_a_mixed_baseline_resumes_a_probe_that_differs_from_it_late():
    """A baseline with some units in fallback and some in INT8 (a greedy round's chosen set): a probe that differs from
    it only after a cut runs the suffix from its tensors and gives what the whole graph gives."""
    gated = _switched_chain()
    plan = plan_cuts(gated.model, gated.gates, parts=4)
    backend = OnnxRuntimeBackend("cpu")
    x = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    runs = ResumedRuns(backend, gated, plan, budget_bytes=1 << 20)
    chosen = frozenset({"g0", "g9"})  # Neg first and last, Relu between: the output is -Relu(-x), not zero
    with backend.runner(gated.model) as whole:
        infer, keep = runs.recording(runs.want(chosen), None, 1)
        assert np.array_equal(infer({"x": x})["y"], whole.infer({"x": x, **gated.feed_off(chosen)})["y"])
        keep()
        runs.open(runs.dtypes())
        probe = gated.feed_off(chosen | {"g8"})
        at = runs.resume_cut(probe, None)
        assert at is not None and at[1] == chosen and at[0] == len(plan.cuts) - 1
        out = runs.resumed(probe, None, at)({"x": x})["y"]
        assert np.array_equal(out, whole.infer({"x": x, **probe})["y"])
        assert not np.array_equal(out, whole.infer({"x": x, **gated.feed_off(chosen)})["y"])  # g8 did change the result
        assert runs.resume_cut(gated.feed_off({"g9"}), None) is None  # g0 differs before every cut
        runs.close()


def test_resumed_runs_that_differ_from_the_whole_graph_are_never_used(run_copy, resumed_count, monkeypatch):
    """The check when the sessions open compares resumed and whole-graph outputs: a suffix that computes anything else
    (here: outputs nudged by 1e-3) switches resuming off, and every probe runs the whole graph."""
    original = ResumedRuns.open

    def nudged(self, dtypes):
        original(self, dtypes)
        runners = self._suffixes

        class Nudged:
            def __init__(self, r):
                self.r = r

            def infer(self, feed):
                return {k: v + np.float32(1e-3) for k, v in self.r.infer(feed).items()}

        self._suffixes = [Nudged(r) for r in runners]

    monkeypatch.setattr(ResumedRuns, "open", nudged)
    checked = sensitivity(run_copy, samples=64, pools=SerialExecutor().probe_pool)
    checks = len(resumed_count)
    monkeypatch.setattr(ResumedRuns, "plan_for", classmethod(lambda cls, *a: None))
    whole = sensitivity(run_copy, samples=64, pools=SerialExecutor().probe_pool)
    assert checks == 0  # the check failed on its own runs: no probe resumed
    pd.testing.assert_frame_equal(_numbers(checked), _numbers(whole), check_exact=True)
