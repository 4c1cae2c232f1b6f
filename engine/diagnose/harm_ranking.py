"""The culprit ranking a user sees: fallback units ordered by their measured effect on the final outputs.

Two isolated measurements per unit, on a screening subset of the data:
  alone  only this unit in INT8, everything else in fallback: the noise the unit puts on the outputs, amplified by
         every later layer (no local score of the node can tell that amplification);
  gain   every unit in INT8 but this one: what falling back just this unit recovers.
Where noise from different units adds up as powers, the units that hurt most alone are also the ones whose fallback
recovers most together; where the outputs saturate (a softmax whose borderline tokens flip with any noise), one
unit's noise alone already costs nearly everything and only the gain view tells the units apart. So the ranking
measures both, tries the top three of each as one fallback set, and orders the list by the view whose top three
recover more: what "Tick the top-k culprits" gets a user is then the better of the two.

A budget keeps it interactive: the ranking may spend `budget_passes` probe passes of one sample each (rank_run gives
it RANK_PASSES_PER_SAMPLE per sample the compare evaluated, about what the compare itself costs). plan_stages picks the
most thorough plan that fits: every unit on the whole screening subset where that is affordable, otherwise two stages,
every unit on a few samples, then the strongest k of each view (2k units, the next strongest of either filling the
places where the two overlap) again on as many samples as the budget allows, which
orders the top of the list and decides the view; the rest keep their first-stage order (deep in the list, where
units barely matter, order is noise anyway). The plan depends only on the unit count, the subset and the budget, so
a ranking is reproducible."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pandas as pd

from engine.compare.metrics import json_number
from engine.diagnose.probe_scoring import ProbeMetrics
from engine.diagnose.probes import ProbePool, ProbeRequest
from engine.progress import ProgressCallback, ProgressEvent, Repeating, Stage, no_progress
from engine.results import read_number

__all__ = ["UnitHarm", "HarmRanking", "RankPlan", "plan_stages", "rank_units", "HARM_COLUMNS", "RANK_PASSES_PER_SAMPLE",
           "TOP_SET"]

HARM_COLUMNS = ("rank", "unit", "nodes", "op_types", "alone_snr_db", "gain_db", "samples")
RANK_PASSES_PER_SAMPLE = 10  # probe passes per evaluated sample: the ranking costs about what the compare does
FIRST_STAGE_SAMPLES = (8, 4, 2, 1)  # tried in this order, most thorough first
MIN_REFINED = 3  # the shortlist of each view never shrinks below the top set it decides
TOP_SET = 3  # the set both views are tried with ("Tick the top-k culprits" defaults to the top three)


@dataclass(frozen=True)
class RankPlan:
    """first_samples: every unit is measured on that many samples; refined: the strongest `refined` units of each view,
    and where the views share some, the next strongest of either in their place (shortlist_size in all), are measured
    again on `refined_samples` (0: no second stage); final_samples: the subset the top sets are tried on."""

    first_samples: int
    refined: int
    refined_samples: int
    final_samples: int

    def passes(self, n_units: int) -> int:
        """Probe passes of one sample each (the shortlist always fills its places)."""
        return ((2 * n_units + 1) * self.first_samples + (2 * self.shortlist_size(n_units) + 1) * self.refined_samples
                + 2 * self.final_samples)

    def describe(self, n_units: int) -> str:
        first = f"every unit on {self.first_samples} sample{'s' if self.first_samples != 1 else ''}"
        if not self.refined:
            return first if self.final_samples == self.first_samples else f"{first}, the top sets on {self.final_samples}"
        if self.shortlist_size(n_units) >= n_units:
            return f"{first}, every unit again on {self.refined_samples}"
        return f"{first}, the {self.shortlist_size(n_units)} strongest of both views on {self.refined_samples}"

    def shortlist_size(self, n_units: int) -> int:
        """The units measured again: each view's strongest `refined`, and where the two overlap, the next strongest of
        either view in their place."""
        return min(2 * self.refined, n_units)


def plan_stages(n_units: int, screen: int, budget_passes: float | None = None) -> RankPlan:
    """The most thorough plan within the budget (None: unbounded): one stage on the whole subset where that is within
    budget and no dearer than the default two stages; otherwise the first fitting two-stage plan in order of what
    decides the top of the list: a first stage of at least two samples, then the largest refinement subset (which
    orders the top and picks the view), then the largest first stage, then the longest shortlist; at the least,
    every unit on one sample and its top sets on as many samples as the budget leaves."""
    single = RankPlan(screen, 0, 0, screen)
    refine = max(5, n_units // 10)
    default = RankPlan(min(FIRST_STAGE_SAMPLES[0], screen), refine, screen, screen)
    if single.passes(n_units) <= default.passes(n_units) or screen <= FIRST_STAGE_SAMPLES[0]:
        if budget_passes is None or single.passes(n_units) <= budget_passes:
            return single
    elif budget_passes is None or default.passes(n_units) <= budget_passes:
        return default
    assert budget_passes is not None
    refinements = []
    s2 = screen
    while s2 >= 2:
        refinements.append(s2)
        s2 //= 2
    for first_stages in ([s for s in FIRST_STAGE_SAMPLES if 2 <= s < screen], [1]):
        for s2 in refinements:
            for s1 in (s for s in first_stages if 2 * s <= s2):
                for k in range(min(refine, n_units), MIN_REFINED - 1, -1):
                    plan = RankPlan(s1, k, s2, s2)
                    if plan.passes(n_units) <= budget_passes:
                        return plan
    left = budget_passes - (2 * n_units + 1)
    return RankPlan(1, 0, 0, int(max(1, min(screen, left // 2))))


@dataclass(frozen=True)
class UnitHarm:
    nodes: tuple[str, ...]
    op_types: tuple[str, ...]
    alone_snr_db: float  # the final outputs' SNR with only this unit in INT8
    gain_db: float  # how much falling back only this unit raises the final outputs' SNR
    samples: int  # how many samples those were measured on

    @property
    def name(self) -> str:
        return "+".join(self.nodes)


@dataclass(frozen=True)
class HarmRanking:
    units: tuple[UnitHarm, ...]  # most harmful first
    all_int8_snr_db: float  # the same outputs with every unit in INT8, on `samples`
    samples: int  # the samples the top of the list and the top sets were measured on (at most the screening subset)
    probes: int
    seconds: float
    view: str = "alone"  # the view that orders the list: "alone" or "gain"
    top_set_gain_db: dict[str, float] | None = None  # per view: what falling back its top three together gains
    plan: str = ""  # the stages the probes ran in (see plan_stages)
    work: float = 0.0  # what the probes cost in sample-passes (each probe: its samples + 1 for the run): seconds / work
    # is what a probe sample costs here, which the sensitivity estimate uses
    # how far the first stage's figures were from the refined stage's for the units measured in both (the largest
    # difference, in dB, of a unit's gain or of its alone SNR against the all-INT8 SNR of its stage); nan: one stage
    first_stage_error_db: float = math.nan

    def to_frame(self) -> pd.DataFrame:
        rows = [{"rank": i + 1, "unit": u.name, "nodes": " ".join(u.nodes), "op_types": " ".join(u.op_types),
                 "alone_snr_db": u.alone_snr_db, "gain_db": u.gain_db, "samples": u.samples} for i, u in enumerate(self.units)]
        return pd.DataFrame(rows, columns=list(HARM_COLUMNS))

    def rank_of(self, node: str) -> int | None:
        return next((i + 1 for i, u in enumerate(self.units) if node in u.nodes), None)

    def to_dict(self) -> dict:
        return {"samples": self.samples, "probes": self.probes, "seconds": round(self.seconds, 4), "view": self.view, "plan": self.plan,
                "work": self.work, "first_stage_error_db": json_number(self.first_stage_error_db),
                "all_int8_snr_db": json_number(self.all_int8_snr_db),
                "top_set_gain_db": {k: json_number(v) for k, v in (self.top_set_gain_db or {}).items()},
                "units": [{"nodes": list(u.nodes), "op_types": list(u.op_types), "alone_snr_db": json_number(u.alone_snr_db),
                           "gain_db": json_number(u.gain_db), "samples": u.samples} for u in self.units]}

    @classmethod
    def from_dict(cls, d: dict) -> HarmRanking:
        units = tuple(UnitHarm(tuple(u["nodes"]), tuple(u["op_types"]), float(u["alone_snr_db"]), float(u.get("gain_db", "nan")),
                               int(u["samples"])) for u in d["units"])
        return cls(units, float(d["all_int8_snr_db"]), int(d["samples"]), int(d["probes"]), float(d["seconds"]),
                   d.get("view", "alone"), {k: float(v) for k, v in (d.get("top_set_gain_db") or {}).items()}, d.get("plan", ""),
                   float(d.get("work", 0.0)), read_number(d.get("first_stage_error_db")))


def first_stage_error(first: list[UnitHarm], first_base: float, refined: list[UnitHarm], refined_base: float) -> float:
    """The largest difference, in dB, between a unit's figures on the first stage's few samples and on the refined
    stage's more: its gain, and its alone SNR against the all-INT8 SNR of the same stage (the samples' own level moves
    both alike). A CTC recogniser whose output changes by whole characters showed +26.9 dB on 2 samples for a node
    whose fallback cost 0.6 dB on 64: where this is large, the first stage's figures are noise."""
    before = {h.nodes: h for h in first}
    diffs = []
    for h in refined:
        f = before.get(h.nodes)
        if f is None:
            continue
        for a, b in ((f.gain_db, h.gain_db), (f.alone_snr_db - first_base, h.alone_snr_db - refined_base)):
            if math.isfinite(a) and math.isfinite(b):
                diffs.append(abs(a - b))
    return max(diffs) if diffs else math.nan


def _count(n: int, noun: str) -> str:
    """'1 sample', '8 samples' (a progress line read 'every unit on 1 samples')."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _order(harms: list[UnitHarm], view: str) -> list[UnitHarm]:
    def key(h: UnitHarm) -> float:
        v = h.alone_snr_db if view == "alone" else -h.gain_db
        return math.inf if math.isnan(v) else v

    return sorted(harms, key=key)


def rank_units(pool: ProbePool, op_types: dict[str, str], progress: ProgressCallback = no_progress,
               budget_passes: float | None = None) -> HarmRanking:
    """`op_types`: node name -> op type. The pool's probe data is the screening subset; `budget_passes` bounds the probe
    passes (of one sample each, see plan_stages; None: unbounded). Each stage's probes go to the pool at once (in
    parallel where the pool has workers)."""
    t0 = time.perf_counter()
    progress = Repeating.of(progress)  # its last event again inside a probe: a cancel need not wait for a whole probe
    probe = pool.probe
    units = list(probe.units)
    full = probe.data
    plan = plan_stages(len(units), full.samples, budget_passes)
    top_stage = plan.refined_samples if plan.refined else plan.first_samples
    own_base = plan.final_samples != top_stage  # the top sets run on another subset than the stage that ordered the top
    total = 2 * len(units) + 1 + (2 * plan.shortlist_size(len(units)) + 1 if plan.refined else 0) + 2 + own_base
    done = 0
    # the time left is counted in sample-passes, not probes: a probe of the refined stage (32 samples) costs several of
    # the first stage's (4); counted in probes, MobileNetV3's ranking said "about 1 s left" for its last 14 s
    def cost(samples: int, probes: int) -> float:
        return probes * (full.head(samples).samples + 1)  # + 1: a run's own overhead, about one sample's

    work = {"total": cost(plan.first_samples, 2 * len(units) + 1) + cost(plan.final_samples, 2 + own_base)
            + (cost(plan.refined_samples, 2 * plan.shortlist_size(len(units)) + 1) if plan.refined else 0), "done": 0.0}

    def at_most(samples: int) -> int | None:
        return None if samples >= full.samples else samples

    def stage(requests: list[ProbeRequest], what: str, samples: int) -> list[ProbeMetrics]:
        nonlocal done
        base, base_work, each = done, work["done"], cost(samples, 1)

        def on_result(k: int, _: int) -> None:
            spent = base_work + k * each
            eta = (time.perf_counter() - t0) / spent * max(0.0, work["total"] - spent)
            progress(ProgressEvent(Stage.RANK, base + k, total, f"{what} ({base + k}/{total} probes), about {eta:.0f} s left"))

        out = pool.measure_many(requests, on_result, progress.again)
        done += len(requests)
        work["done"] = base_work + len(requests) * each
        return out

    def both_views(todo: list, samples: int, what: str) -> tuple[list[UnitHarm], float]:
        cut = at_most(samples)
        requests = [ProbeRequest(samples=cut)]
        for u in todo:
            requests += [ProbeRequest(only=tuple(u), samples=cut), ProbeRequest(fallback=frozenset(u), samples=cut)]
        res = stage(requests, what, samples)
        base = res[0].outputs_snr_db
        n = full.head(samples).samples
        return [UnitHarm(tuple(u), tuple(op_types.get(x, "?") for x in u), res[1 + 2 * i].outputs_snr_db,
                         res[2 + 2 * i].outputs_snr_db - base, n) for i, u in enumerate(todo)], base

    first, base = both_views(units, plan.first_samples, f"every unit on {_count(full.head(plan.first_samples).samples, 'sample')}")
    first_base = base
    ordered = {view: _order(first, view) for view in ("alone", "gain")}
    error = math.nan
    if plan.refined:
        shortlist = list(dict.fromkeys(h.nodes for view in ("alone", "gain") for h in ordered[view][:plan.refined]))
        # both views' strongest mostly overlap (PP-OCRv4's recogniser: 8 units for 10 slots); the free slots go to the
        # next strongest of either view, alternately, so the budget refines the near-ties at the cut-off (a unit 0.5 dB
        # short of 5th, at +29 dB on 2 samples, was never measured again)
        for nodes in (h.nodes for i in range(plan.refined, len(units)) for view in ("alone", "gain") for h in ordered[view][i:i + 1]):
            if len(shortlist) >= plan.shortlist_size(len(units)):
                break
            if nodes not in shortlist:
                shortlist.append(nodes)
        refined_list, base = both_views(shortlist, plan.refined_samples,
                                        f"the {len(shortlist)} strongest of both views on {_count(full.head(plan.refined_samples).samples, 'sample')}")
        refined = {h.nodes: h for h in refined_list}
        error = first_stage_error(first, first_base, refined_list, base)
        rest = [h for h in first if h.nodes not in refined]
        ordered = {view: _order(list(refined.values()), view) + _order(rest, view) for view in ("alone", "gain")}
    sets = {view: frozenset(n for h in ordered[view][:TOP_SET] for n in h.nodes) for view in ("alone", "gain")}
    final = at_most(plan.final_samples)
    requests = [ProbeRequest(fallback=sets["alone"], samples=final), ProbeRequest(fallback=sets["gain"], samples=final)]
    res = stage(([ProbeRequest(samples=final)] if own_base else []) + requests, f"each view's top {TOP_SET} together",
                plan.final_samples)
    if own_base:
        base, res = res[0].outputs_snr_db, res[1:]
    top_gain = {"alone": res[0].outputs_snr_db - base, "gain": res[1].outputs_snr_db - base}
    view = "gain" if top_gain["gain"] > top_gain["alone"] else "alone"
    return HarmRanking(tuple(ordered[view]), base, full.head(plan.final_samples).samples, done, time.perf_counter() - t0, view,
                       top_gain, plan.describe(len(units)), work["done"], error)
