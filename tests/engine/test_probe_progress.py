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
    assert recomputed[-1].endswith("batch 2/2")  # 20 samples in batches of 10, computed again: the cache kept inputs only
    assert probes[0].done == 1 and "known after the next" in probes[0].message and "about" not in probes[0].message
    assert all(re.search(r"about \d+ s left$", e.message) for e in probes[1:]) and probes[-1].done == probes[-1].total


def test_the_fallback_search_reports_its_preparation_and_no_estimate_from_one_probe(inputs_only_run):
    events = []
    search_fallback(inputs_only_run, "snr_db=30", samples=20, progress=events.append)
    assert events[0].stage == Stage.PREPARE_PROBES
    searched = [e for e in events if e.stage == Stage.AUTOFALLBACK]
    assert "at most about" not in searched[0].message and "known after the next probe" in searched[0].message
    assert any("at most about" in e.message for e in searched[1:])
