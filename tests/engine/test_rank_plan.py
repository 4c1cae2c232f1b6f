"""The ranking's probe plan: the most thorough plan within its budget, chosen from the unit count, the screening subset
and the budget alone (so a ranking is reproducible), and never dearer than the budget where the budget allows a plan."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from engine.diagnose.harm_ranking import RankPlan, plan_stages


def test_unbounded_small_models_measure_every_unit_on_the_whole_subset():
    # 10 units on 32 samples: one stage (21*32 + 2*32 = 736 passes) is cheaper than 8 samples then 5+5 on 32 (904)
    assert plan_stages(10, 32) == RankPlan(32, 0, 0, 32)


def test_unbounded_large_models_take_the_default_two_stages():
    assert plan_stages(83, 32) == RankPlan(8, 8, 32, 32)  # shortlist max(5, 83 // 10) of each view


@pytest.mark.parametrize(("units", "screen", "budget", "plan", "passes"), [
    (10, 32, 5000, RankPlan(32, 0, 0, 32), 736),  # the bundled sample: plenty of budget, one stage as before
    (33, 32, 800, RankPlan(4, 3, 32, 32), 748),  # 80 evaluated samples: the top still ordered on all 32
    (51, 32, 640, RankPlan(2, 5, 16, 16), 574),  # a larger subset for the top before a larger first stage
    (83, 32, 320, RankPlan(1, 4, 8, 8), 319),  # 32 evaluated samples, 83 units: one sample each, 4+4 refined on 8
])
def test_a_budget_picks_the_most_thorough_plan_that_fits(units, screen, budget, plan, passes):
    assert plan_stages(units, screen, budget) == plan
    assert plan.passes(units) == passes <= budget


def test_below_the_least_plan_every_unit_still_gets_one_sample():
    assert plan_stages(83, 32, 100) == RankPlan(1, 0, 0, 1)


def test_every_plan_fits_any_budget_that_allows_the_least_plan():
    for units in (1, 3, 10, 33, 64, 83, 200):
        for screen in (1, 4, 8, 16, 32, 64):
            least = 2 * units + 1 + 2
            for budget in (least, least + 7, 2 * least, 10 * least, 1000, 10_000, 100_000):
                plan = plan_stages(units, screen, budget)
                assert plan.passes(units) <= budget, (units, screen, budget, plan)
                assert plan.first_samples <= screen and plan.final_samples <= screen
                assert not plan.refined or plan.refined_samples >= 2 * plan.first_samples


def test_the_time_left_weighs_each_probe_by_its_samples(monkeypatch):
    """MobileNetV3's ranking said 'about 1 s left' for its last 14 s: the refined stage's probes (32 samples) were
    counted like the first stage's (4). Where a probe takes exactly (samples + 1) time units, every estimate is exact once
    the shortlist is known, and an upper bound before (both views' shortlists may overlap)."""
    import re
    from types import SimpleNamespace

    import numpy as np

    from engine.diagnose import harm_ranking
    from engine.diagnose.probe_scoring import ProbeData, ProbeMetrics

    clock = [0.0]
    monkeypatch.setattr(harm_ranking.time, "perf_counter", lambda: clock[0])
    data = ProbeData(tuple({"x": np.zeros((1, 1), np.float32)} for _ in range(32)), tuple({"y": np.zeros(1)} for _ in range(32)))
    units = [(f"n{i}",) for i in range(40)]
    durations: list[float] = []

    class Pool:
        probe = SimpleNamespace(units=units, data=data)

        def measure_many(self, requests, on_result, on_step=None):
            out = []
            for k, r in enumerate(requests, 1):
                took = data.head(r.samples or data.samples).samples + 1
                clock[0] += took
                durations.append(took)
                out.append(ProbeMetrics(1.0, 30.0, 30.0 - len(r.only or ()) - 0.1 * len(r.fallback), None, None, None, took))
                on_result(k, len(requests))
            return out

    events = []
    harm_ranking.rank_units(Pool(), {u[0]: "Conv" for u in units}, events.append, budget_passes=400)
    assert len({d for d in durations}) > 1  # stages on different sample counts
    later = [k for k, e in enumerate(events) if not e.message.startswith("every unit")]
    assert later and later[0] > 0
    for k, e in enumerate(events):
        left, exact = float(re.search(r"about (\d+) s left", e.message).group(1)), round(sum(durations[k + 1:]))
        assert (left == exact) if k in later else (left >= exact), (k, e.message, exact)


def test_where_both_views_pick_the_same_units_the_next_strongest_are_refined_in_their_place():
    """PP-OCRv4's recogniser: the two views' five strongest shared most units (8 for 10 places), and a unit 0.5 dB short
    of 5th, at +29 dB on 2 samples, was never measured again. Here both views order 40 units alike (n0 strongest), so
    the refined stage must take the 2k strongest, not k, within the same budget."""
    from types import SimpleNamespace

    import numpy as np

    from engine.diagnose import harm_ranking
    from engine.diagnose.probe_scoring import ProbeData, ProbeMetrics

    data = ProbeData(tuple({"x": np.zeros((1, 1), np.float32)} for _ in range(32)), tuple({"y": np.zeros(1)} for _ in range(32)))
    units = [(f"n{i}",) for i in range(40)]
    refined_only: list[str] = []
    plan = harm_ranking.plan_stages(len(units), data.samples, 400)
    assert plan.refined == 5 and plan.refined_samples > plan.first_samples  # a two-stage plan, 5 of each view

    class Pool:
        probe = SimpleNamespace(units=units, data=data)

        def measure_many(self, requests, on_result, on_step=None):
            out = []
            for k, r in enumerate(requests, 1):
                if r.only:  # only unit i in INT8: n0 hurts most
                    snr = 10.0 + int(r.only[0][1:])
                    if r.samples == plan.refined_samples or (r.samples is None and plan.refined_samples >= data.samples):
                        refined_only.append(r.only[0])
                elif r.fallback and len(r.fallback) == 1:  # all but unit i in INT8: falling back n0 gains most
                    snr = 5.0 + (40 - int(next(iter(r.fallback))[1:])) * 0.01
                else:
                    snr = 5.0
                out.append(ProbeMetrics(1.0, snr, snr, None, None, None, 0.0))
                on_result(k, len(requests))
            return out

    events = []
    ranking = harm_ranking.rank_units(Pool(), {u[0]: "Conv" for u in units}, events.append, budget_passes=400)
    assert refined_only == [f"n{i}" for i in range(10)]  # 2 x 5 places, not the 5 both views share
    assert [u.samples for u in ranking.units[:10]] == [plan.refined_samples] * 10
    assert all(u.samples == plan.first_samples for u in ranking.units[10:])
    assert events[-1].done == events[-1].total == ranking.probes  # the count the progress gave was exact
    assert ranking.plan == "every unit on 2 samples, the 10 strongest of both views on 8"


def test_a_shortlist_as_long_as_the_units_is_counted_and_described_as_every_unit_again():
    """Six units and five places per view: the refined stage measures the six again, no more (the budget counted 21)."""
    plan = RankPlan(2, 5, 8, 8)
    assert plan.shortlist_size(6) == 6 and plan.shortlist_size(40) == 10
    assert plan.passes(6) == 13 * 2 + 13 * 8 + 2 * 8
    assert plan.passes(40) == 81 * 2 + 21 * 8 + 2 * 8
    assert plan.describe(6) == "every unit on 2 samples, every unit again on 8"
    assert plan.describe(40) == "every unit on 2 samples, the 10 strongest of both views on 8"


def test_the_first_stage_error_compares_each_refined_unit_with_its_first_figures():
    """Gains directly, alone SNRs against their stage's all-INT8 SNR (4 samples at 52.9 dB, 32 at 12.7 dB: MobileNetV3's
    first images were easy ones, which moves every alone SNR alike)."""
    from engine.diagnose.harm_ranking import UnitHarm, first_stage_error

    first = [UnitHarm(("a",), ("Conv",), 56.0, 5.0, 4), UnitHarm(("b",), ("Conv",), 60.0, 26.9, 4), UnitHarm(("c",), ("Conv",), 70.0, 1.0, 4)]
    refined = [UnitHarm(("a",), ("Conv",), 15.0, 2.0, 32), UnitHarm(("b",), ("Conv",), 20.0, -0.6, 32)]
    assert first_stage_error(first, 53.0, refined, 12.0) == pytest.approx(27.5)  # b's gain: 26.9 -> -0.6
    assert first_stage_error(first[:1], 53.0, refined[:1], 12.0) == pytest.approx(3.0)  # a: gain 5 -> 2, alone 3 -> 3
    assert math.isnan(first_stage_error(first, 53.0, [], 12.0))


def test_figures_of_units_measured_only_on_a_first_stage_that_proved_rough_are_not_given():
    from engine.compare.graph import GraphView
    from engine.diagnose.harm_ranking import HarmRanking, UnitHarm
    from engine.summarize import _culprits

    units = (UnitHarm(("a",), ("Conv",), 15.0, 2.0, 32), UnitHarm(("b",), ("Conv",), 60.0, 26.9, 4))
    view = GraphView((), frozenset({"a", "b"}), (), ())
    layers = pd.DataFrame({"tensor": ["ta", "tb"], "node": ["a", "b"], "snr_db": [20.0, 30.0], "input_snr_db": [30.0, 40.0],
                           "introduced_db": [1.0, 2.0]})
    for error, shown in ((27.5, False), (3.0, True), (math.nan, True)):
        ranking = HarmRanking(units, 12.0, 32, 10, 1.0, first_stage_error_db=error)
        culprits, _ = _culprits(layers, ranking, view, frozenset())
        assert culprits[0].gain_db == 2.0  # measured again on 32 samples: always given
        assert (culprits[1].gain_db == 26.9) is shown and (culprits[1].alone_snr_db == 60.0) is shown
        assert culprits[1].samples == 4 and culprits[1].rank == 2  # its place and sample count stay
