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

Two stages keep it interactive: every unit on the first FIRST_STAGE_SAMPLES samples, then the strongest
max(REFINED_UNITS, N/10) of each view again on the whole screening subset, which orders the top of the list; the rest
keep their first-stage order (deep in the list, where units barely matter, order is noise anyway)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pandas as pd

from engine.diagnose.probes import ProbeMetrics, ProbePool, ProbeRequest
from engine.progress import ProgressCallback, ProgressEvent, Stage, no_progress

__all__ = ["UnitHarm", "HarmRanking", "rank_units", "HARM_COLUMNS", "FIRST_STAGE_SAMPLES", "REFINED_UNITS", "TOP_SET"]

HARM_COLUMNS = ("rank", "unit", "nodes", "op_types", "alone_snr_db", "gain_db", "samples")
FIRST_STAGE_SAMPLES = 8
REFINED_UNITS = 5
TOP_SET = 3  # the set both views are tried with ("Tick the top-k culprits" defaults to the top three)


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
    all_int8_snr_db: float  # the same outputs with every unit in INT8, on the screening subset
    samples: int  # the screening subset the probes ran on
    probes: int
    seconds: float
    view: str = "alone"  # the view that orders the list: "alone" or "gain"
    top_set_gain_db: dict[str, float] | None = None  # per view: what falling back its top three together gains

    def to_frame(self) -> pd.DataFrame:
        rows = [{"rank": i + 1, "unit": u.name, "nodes": " ".join(u.nodes), "op_types": " ".join(u.op_types),
                 "alone_snr_db": u.alone_snr_db, "gain_db": u.gain_db, "samples": u.samples} for i, u in enumerate(self.units)]
        return pd.DataFrame(rows, columns=list(HARM_COLUMNS))

    def rank_of(self, node: str) -> int | None:
        return next((i + 1 for i, u in enumerate(self.units) if node in u.nodes), None)

    def to_dict(self) -> dict:
        return {"samples": self.samples, "probes": self.probes, "seconds": round(self.seconds, 4), "view": self.view,
                "all_int8_snr_db": _num(self.all_int8_snr_db),
                "top_set_gain_db": {k: _num(v) for k, v in (self.top_set_gain_db or {}).items()},
                "units": [{"nodes": list(u.nodes), "op_types": list(u.op_types), "alone_snr_db": _num(u.alone_snr_db),
                           "gain_db": _num(u.gain_db), "samples": u.samples} for u in self.units]}

    @classmethod
    def from_dict(cls, d: dict) -> HarmRanking:
        units = tuple(UnitHarm(tuple(u["nodes"]), tuple(u["op_types"]), float(u["alone_snr_db"]), float(u.get("gain_db", "nan")),
                               int(u["samples"])) for u in d["units"])
        return cls(units, float(d["all_int8_snr_db"]), int(d["samples"]), int(d["probes"]), float(d["seconds"]),
                   d.get("view", "alone"), {k: float(v) for k, v in (d.get("top_set_gain_db") or {}).items()})


def _num(x: float):
    return x if math.isfinite(x) else str(x)


def _order(harms: list[UnitHarm], view: str) -> list[UnitHarm]:
    def key(h: UnitHarm) -> float:
        v = h.alone_snr_db if view == "alone" else -h.gain_db
        return math.inf if math.isnan(v) else v

    return sorted(harms, key=key)


def rank_units(pool: ProbePool, op_types: dict[str, str], progress: ProgressCallback = no_progress,
               first_stage_samples: int = FIRST_STAGE_SAMPLES, refined_units: int = REFINED_UNITS) -> HarmRanking:
    """`op_types`: node name -> op type. The pool's probe data is the screening subset; each stage's probes go to the
    pool at once (in parallel where the pool has workers)."""
    t0 = time.perf_counter()
    probe = pool.probe
    units = list(probe.units)
    full = probe.data
    refine = max(refined_units, len(units) // 10)
    small = full.head(first_stage_samples)
    # two stages only where they save work: N on the small set plus the shortlist (both views) on all < N on all
    two_stage = len(units) * small.samples + min(2 * refine, len(units)) * full.samples < len(units) * full.samples
    total = 2 * len(units) + 2 * (min(2 * refine, len(units)) if two_stage else 0) + (2 if two_stage else 1) + 2
    done = 0

    def stage(requests: list[ProbeRequest], what: str) -> list[ProbeMetrics]:
        nonlocal done
        base = done

        def on_result(k: int, _: int) -> None:
            eta = (time.perf_counter() - t0) / (base + k) * (total - base - k)
            progress(ProgressEvent(Stage.RANK, base + k, total, f"{what} ({base + k}/{total} probes), about {eta:.0f} s left"))

        out = pool.measure_many(requests, on_result)
        done += len(requests)
        return out

    def both_views(todo: list, samples: int | None, what: str) -> tuple[list[UnitHarm], float]:
        requests = [ProbeRequest(samples=samples)]
        for u in todo:
            requests += [ProbeRequest(only=tuple(u), samples=samples), ProbeRequest(fallback=frozenset(u), samples=samples)]
        res = stage(requests, what)
        base = res[0].outputs_snr_db
        n = full.samples if samples is None else min(samples, full.samples)
        return [UnitHarm(tuple(u), tuple(op_types.get(x, "?") for x in u), res[1 + 2 * i].outputs_snr_db,
                         res[2 + 2 * i].outputs_snr_db - base, n) for i, u in enumerate(todo)], base

    if two_stage:
        rough, _ = both_views(units, small.samples, f"every unit on {small.samples} samples")
        shortlist = [h.nodes for view in ("alone", "gain") for h in _order(rough, view)[:refine]]
        shortlist = list(dict.fromkeys(shortlist))
        refined_list, base_full = both_views(shortlist, None, f"the {len(shortlist)} strongest on {full.samples} samples")
        refined = {h.nodes: h for h in refined_list}
        rest = [h for h in rough if h.nodes not in refined]
        ordered = {view: _order(list(refined.values()), view) + _order(rest, view) for view in ("alone", "gain")}
    else:
        measured, base_full = both_views(units, None, f"every unit on {full.samples} samples")
        ordered = {view: _order(measured, view) for view in ("alone", "gain")}
    sets = {view: frozenset(n for h in ordered[view][:TOP_SET] for n in h.nodes) for view in ("alone", "gain")}
    res = stage([ProbeRequest(fallback=sets["alone"]), ProbeRequest(fallback=sets["gain"])], f"each view's top {TOP_SET} together")
    top_gain = {"alone": res[0].outputs_snr_db - base_full, "gain": res[1].outputs_snr_db - base_full}
    view = "gain" if top_gain["gain"] > top_gain["alone"] else "alone"
    return HarmRanking(tuple(ordered[view]), base_full, full.samples, done, time.perf_counter() - t0, view, top_gain)
