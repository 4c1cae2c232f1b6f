"""Sensitivity and the fallback search say what they do before their first probe (a layout detector's page read
'starting' for 49 s while its FP32 outputs were computed again), and give no time left from the first probe alone (it
carries the session's warm-up: 'about 9803 s left' for a job of about 20 minutes)."""

from __future__ import annotations

import re

import pytest

from engine import compare, search_fallback, sensitivity
from engine.progress import Stage
from tests.engine.conftest import SAMPLES


@pytest.fixture(scope="module")
def inputs_only_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("probe_progress") / "run"
    compare(SAMPLES / "resnet_digits_outlier.onnx", SAMPLES / "digits_calib.npz", data=SAMPLES / "digits_eval.npz", out_dir=out,
            batch_size=10, provider="cpu", screen_samples=0, cache_bytes=0)  # the cache keeps inputs only
    return out


def test_sensitivity_reports_its_preparation_then_a_time_left_from_the_second_probe(inputs_only_run, monkeypatch):
    from engine.compare.reference_cache import ReferenceCache

    real = ReferenceCache.parts
    # a cache without the final outputs (a fixed batch observed in passes whose first group lacks them): computed again
    monkeypatch.setattr(ReferenceCache, "parts", lambda self: ((inputs, {}, k) for inputs, _, k in real(self)))
    events = []
    sensitivity(inputs_only_run, samples=20, progress=events.append)
    prep = [e for e in events if e.stage == Stage.PREPARE_PROBES]
    probes = [e for e in events if e.stage == Stage.SENSITIVITY]
    assert events[0].stage == Stage.PREPARE_PROBES and events.index(prep[-1]) < events.index(probes[0])
    assert [e.done for e in prep] == sorted(e.done for e in prep) and {e.total for e in prep} == {3}
    recomputed = [e.message for e in prep if "did not keep" in e.message]
    # 20 samples picked across the cache's batches of 10 and joined into one probe batch, computed again (the cache kept
    # inputs only): one run, where each cached batch used to run on its own
    assert recomputed[-1].endswith("batch 1/1")
    assert probes[0].done == 1 and "known after a few more" in probes[0].message and "about" not in probes[0].message
    # then an estimate, once a second of results has passed (this sample's probes take milliseconds: none is given)
    assert all(re.search(r"about \d+ s left$", e.message) or "known after a few more" in e.message for e in probes[1:-1])
    assert probes[-1].done == probes[-1].total and probes[-1].message == f"probe {probes[-1].total}/{probes[-1].total}"


def test_the_fallback_search_reports_its_preparation_and_no_estimate_from_one_probe(inputs_only_run):
    events = []
    search_fallback(inputs_only_run, "snr_db=30", samples=20, progress=events.append)
    assert events[0].stage == Stage.PREPARE_PROBES
    searched = [e for e in events if e.stage == Stage.AUTOFALLBACK]
    assert "at most about" not in searched[0].message and "known after a few more probes" in searched[0].message


def test_the_time_left_comes_from_results_after_the_first_and_waits_out_a_burst(monkeypatch):
    """Results at 10 s (the first, with the warm-up), 10.01 s (a second worker's, at once), then every 2 s: no estimate
    until a second has passed since the first, then one from the pace after it; none from the warm-up."""
    import importlib
    from types import SimpleNamespace

    import engine.progress
    from engine.diagnose.probe_scoring import ProbeMetrics

    module = importlib.import_module("engine.diagnose.sensitivity")  # the package exports a function of that name

    clock = iter([10.0, 10.01, 12.0, 14.0, 16.0])
    monkeypatch.setattr(engine.progress.time, "perf_counter", lambda: next(clock))  # TimeLeft's clock

    class Pool:
        probe = SimpleNamespace(units=(("a",), ("b",)))

        def measure_many(self, requests, on_result, on_step=None):
            for k in range(1, len(requests) + 1):
                on_result(k, len(requests))
            return [ProbeMetrics(1.0, 20.0, 20.0, None, None, None, 0.1)] * len(requests)

    events = []
    module.sensitivity_frame(Pool(), {"a": "Conv", "b": "Conv"}, events.append)
    assert [e.message for e in events] == ["probe 1/5; the time left is known after a few more",
                                           "probe 2/5; the time left is known after a few more",
                                           "probe 3/5, about 2 s left",  # 2 s for 2 results since the first: 1 s each
                                           "probe 4/5, about 1 s left", "probe 5/5"]


def test_a_cancel_inside_a_probe_stops_before_its_next_batch(inputs_only_run):
    """The engine says its last event again before each batch a probe runs, so a cancel waits for one run, not a whole
    probe (a layout detector's probe is 32 runs, 3-7 s on two cores)."""
    from engine import Cancelled

    events = []

    def cancel_on_a_repeat(ev):
        if events and ev == events[-1] and ev.stage == Stage.SENSITIVITY:
            raise Cancelled()
        events.append(ev)

    with pytest.raises(Cancelled):
        sensitivity(inputs_only_run, samples=20, progress=cancel_on_a_repeat)
    probes = [e for e in events if e.stage == Stage.SENSITIVITY]
    assert [e.done for e in probes] == [1]  # stopped before the second probe's first run
    # the first probe is covered too: the preparation's last event is said again while it runs
    said = []
    sensitivity(inputs_only_run, samples=20, progress=said.append)
    opening = next(e for e in said if e.message.startswith("opening the probe session"))
    assert said.count(opening) >= 2  # said, then again before the first probe's runs


def test_tiled_probes_step_before_each_batch_too(inputs_only_run):
    """Tiled probes (one run holds many) step before each batch as well."""
    from engine.diagnose.probes import ProbeRequest
    from engine.diagnose.run_probe import open_probe

    _, _, probe = open_probe(inputs_only_run, "cpu", samples=20)
    probe.tile = True
    steps = []
    with probe:
        requests = [ProbeRequest()] + [ProbeRequest(only=u) for u in probe.units[:3]]
        probe.measure_many(requests, on_step=lambda: steps.append(1))
        assert len(steps) == len(probe.runs(requests)) * len(probe.data.batches)
        assert probe._step is None  # only while measure_many runs
