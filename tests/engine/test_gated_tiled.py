"""Several probes in one run (what a GPU runs, where launches cost more than samples): the tiled gated candidate computes,
copy by copy, what the scalar-gated candidate computes one probe at a time, and a tiled probe gives the same figures."""

from __future__ import annotations

import random

import numpy as np
import pytest

from engine.backends.onnxrt import OnnxRuntimeBackend
from engine.diagnose import probes as probes_module
from engine.diagnose.gated_tiled import gate_model_tiled, tiled_gates
from engine.diagnose.gated_where import gate_model_where
from engine.diagnose.harm_ranking import rank_units
from engine.diagnose.probes import LocalProbePool, OutputProbe, ProbeRequest
from engine.diagnose.run_probe import open_probe
from tests.engine.conftest import SAMPLES


def test_each_copy_of_a_tiled_run_equals_its_probe_run_alone_bit_for_bit(all_int8):
    reference, candidate, units = all_int8
    feed = {"input": np.load(SAMPLES / "digits_eval.npz")["input"][:3]}
    backend = OnnxRuntimeBackend("cpu")
    for fp16 in (False, True):
        tiled, single = gate_model_tiled(reference, candidate, units, fp16), gate_model_where(reference, candidate, units, fp16)
        rng = random.Random(fp16)
        probes = [single.feed(()), single.feed_only(0), single.feed_only(len(units) - 1)]
        probes += [single.feed([u[0] for u in rng.sample(units, rng.randint(1, len(units)))]) for _ in range(3)]
        with backend.runner(tiled.model) as rt, backend.runner(single.model) as rs:
            together = rt.infer({"input": np.concatenate([feed["input"]] * len(probes)), **tiled_gates(tiled, probes, 3)})["logits"]
            for k, p in enumerate(probes):
                alone = rs.infer({**feed, **p})["logits"]
                assert np.array_equal(together[3 * k : 3 * k + 3], alone), (fp16, k)
        assert len({tuple(np.round(together[3 * k], 4)) for k in range(len(probes))}) > 1  # the copies did differ


@pytest.fixture()
def probe_pair(run_copy):
    _, _, probe = open_probe(run_copy, "cpu", samples=32)
    tiled = OutputProbe(probe.backend, probe.reference, probe.candidate, probe.units, probe.data, probe.emit, probe.fp16,
                        tile=True)
    return probe, tiled


def test_tiled_probes_give_the_figures_of_probes_one_at_a_time(probe_pair):
    single, tiled = probe_pair
    requests = [ProbeRequest()] + [ProbeRequest(only=u, samples=s) for u in single.units[:5] for s in (2, 8)]
    requests += [ProbeRequest(fallback=frozenset(u), samples=8) for u in single.units[:3]]
    seen = []
    with single, tiled:
        assert tiled._tiled and not single._tiled
        a = single.measure_many(requests)
        b = tiled.measure_many(requests, lambda done, total: seen.append((done, total)))
        alone = [tiled.measure_only(single.units[2]), tiled.measure((single.units[1][0],), single.data.head(8))]  # one copy a run
        expected = [single.measure_only(single.units[2]), single.measure((single.units[1][0],), single.data.head(8))]
    for x, y in zip(expected, alone):
        assert y.outputs_snr_db == pytest.approx(x.outputs_snr_db, abs=1e-6) and y.top1_agreement == x.top1_agreement
    assert seen[-1] == (len(requests), len(requests)) and len(seen) < len(requests)  # several probes to a run
    assert tiled.probes == single.probes == len(requests) + 2
    for x, y in zip(a, b):
        assert y.outputs_snr_db == pytest.approx(x.outputs_snr_db, abs=1e-6)
        assert y.cosine == pytest.approx(x.cosine, abs=1e-6)  # float64 sums against float32 dots a chunk
        assert (y.top1_agreement, y.accuracy, y.unpaired) == (x.top1_agreement, x.accuracy, x.unpaired)


def test_the_ranking_is_the_same_tiled_and_where_tiling_disagrees_probes_run_one_at_a_time(probe_pair, monkeypatch):
    single, tiled = probe_pair
    with single:
        expected = rank_units(LocalProbePool(single), {}, budget_passes=600)
    with tiled:
        got = rank_units(LocalProbePool(tiled), {}, budget_passes=600)
    assert [u.nodes for u in got.units] == [u.nodes for u in expected.units] and got.view == expected.view
    monkeypatch.setattr(probes_module.OutputProbe, "_tiling_agrees", lambda self: False)  # as for a tensor without the batch first
    with tiled:
        assert not tiled._tiled
        fallback = rank_units(LocalProbePool(tiled), {}, budget_passes=600)
    assert [u.alone_snr_db for u in fallback.units] == [u.alone_snr_db for u in expected.units]
