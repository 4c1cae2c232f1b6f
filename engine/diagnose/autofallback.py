"""Automatic fallback: the smallest node set whose fallback meets a target on the final outputs.

greedy: add the unit with the best measured result, re-measuring the remaining units after each pick,
        then prune any unit whose removal still meets the target.
bisect: the seed's search over topological order: the shortest prefix of units that meets the target
        (as Polygraphy's `debug precision` does), answered with node names, then pruned the same way."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from engine.diagnose.probe_scoring import ProbeMetrics
from engine.diagnose.probes import PoolFactory, ProbePool, ProbeRequest, local_pool
from engine.diagnose.run_probe import DEFAULT_SENSITIVITY_SAMPLES, open_probe
from engine.diagnose.targets import Target
from engine.diagnose.units import UnitMode
from engine.errors import ConfigError
from engine.progress import ProgressCallback, ProgressEvent, Repeating, Stage, TimeLeft, no_progress

__all__ = ["Step", "StrategyResult", "AutoFallbackResult", "search_fallback", "STRATEGIES", "json_safe"]

STRATEGIES = ("greedy", "bisect", "both")
GREEDY_ROUND_WIDTH = 16  # after the first round, re-measure only the best units of the previous round

Unit = tuple[str, ...]


@dataclass(frozen=True)
class Step:
    strategy: str
    phase: str
    fallback: tuple[str, ...]
    value: float | None
    met: bool
    seconds: float
    nodes: int | None = None  # the quantized nodes of `fallback` (a unit's Relu or Add travels with it): what a rebuild falls back

    def to_dict(self) -> dict:
        v = self.value
        return {"strategy": self.strategy, "phase": self.phase, "fallback": list(self.fallback),
                "nodes": len(self.fallback) if self.nodes is None else self.nodes,
                "value": None if v is None or (isinstance(v, float) and math.isnan(v)) else (str(v) if math.isinf(v) else v),
                "met": self.met, "seconds": round(self.seconds, 4)}

    @classmethod
    def from_dict(cls, d: dict) -> Step:
        return cls(d["strategy"], d["phase"], tuple(d["fallback"]), _number(d.get("value")), bool(d["met"]), float(d["seconds"]),
                   d.get("nodes"))


@dataclass(frozen=True)
class StrategyResult:
    strategy: str
    fallback: tuple[str, ...]
    before_pruning: tuple[str, ...]
    met: bool
    achieved: float | None
    probes: int
    phase: str = ""  # a set measured on the way, not the strategy's answer: the step that measured it (measured_sets)

    def to_dict(self) -> dict:
        return {"fallback": list(self.fallback), "before_pruning": list(self.before_pruning), "met": self.met,
                "achieved": self.achieved, "probes": self.probes}

    @classmethod
    def from_dict(cls, strategy: str, d: dict) -> StrategyResult:
        return cls(strategy, tuple(d["fallback"]), tuple(d["before_pruning"]), bool(d["met"]), _number(d.get("achieved")),
                   int(d["probes"]))


@dataclass(frozen=True)
class AutoFallbackResult:
    fallback: tuple[str, ...]
    met: bool
    target: Target
    achieved: float | None
    strategy: str
    strategies: dict[str, StrategyResult]
    steps: tuple[Step, ...]
    message: str
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-safe: inf and nan are written as strings."""
        return json_safe(self._dict())

    def _dict(self) -> dict:
        a = self.achieved
        return {"fallback": list(self.fallback), "met": self.met, "target": str(self.target),
                "achieved": str(a) if isinstance(a, float) and math.isinf(a) else a, "strategy": self.strategy,
                "message": self.message, "strategies": {k: v.to_dict() for k, v in self.strategies.items()},
                "steps": [s.to_dict() for s in self.steps], **self.extra}

    @classmethod
    def from_dict(cls, d: dict) -> AutoFallbackResult:
        """What to_dict wrote (DIR/autofallback.json)."""
        own = {"fallback", "met", "target", "achieved", "strategy", "message", "strategies", "steps"}
        return cls(tuple(d["fallback"]), bool(d["met"]), Target.parse(d["target"]), _number(d.get("achieved")), d["strategy"],
                   {k: StrategyResult.from_dict(k, v) for k, v in d["strategies"].items()},
                   tuple(Step.from_dict(s) for s in d["steps"]), d["message"], {k: v for k, v in d.items() if k not in own})


def _number(x) -> float | None:
    """A figure to_dict wrote: None, a number, or 'inf'/'-inf'/'nan' as a string."""
    return None if x is None else float(x)


def json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


class _Search:
    def __init__(self, pool: ProbePool, target: Target, progress: ProgressCallback) -> None:
        # its last event again inside a probe: a cancel need not wait for a whole probe
        self.pool, self.target, self.progress = pool, target, Repeating.of(progress)
        self.memo: dict[frozenset[str], ProbeMetrics] = {}
        self.steps: list[Step] = []
        self.strategy = ""
        self.count = 0
        self.budget = 0  # an upper bound on the probes still to come, for progress totals
        self.quantized: frozenset[str] | None = None  # the units' nodes a rebuild can fall back
        self._left = TimeLeft()

    def measure_many(self, sets: list[list[Unit]], phase: str) -> list[ProbeMetrics]:
        """Every set's probe, the ones not measured before in one go (in parallel where the pool has workers)."""
        keys = [frozenset(n for u in units for n in u) for units in sets]
        todo = [k for k in dict.fromkeys(keys) if k not in self.memo]
        base = self.count

        def on_result(done: int, total: int) -> None:
            overall = max(self.budget, base + total)
            step = phase if phase.startswith(self.strategy) else f"{self.strategy} search, {phase}"
            count = f": probe {done}/{total} of this step" if total > 1 else ""  # a step of one probe: 'probe 1/1' said nothing
            self.progress(ProgressEvent(Stage.AUTOFALLBACK, base + done, overall, f"{step}{count}{self._eta(base + done, overall)}"))

        for k, m in zip(todo, self.pool.measure_many([ProbeRequest(fallback=k) for k in todo], on_result, self.progress.again)):
            self.memo[k] = m
        self.count += len(todo)
        out = []
        for k in keys:
            m = self.memo[k]
            value = m.get(self.target.metric)
            self.steps.append(Step(self.strategy, phase, tuple(sorted(k)), value, self.target.met(value), m.seconds,
                                   len(_nodes([tuple(k)], self.quantized))))
            out.append(m)
        return out

    def _eta(self, done: int, overall: int) -> str:
        """The budget is an upper bound (a search usually stops earlier), so the estimate is one too. Counted from the
        first probe on: that one carries the session's first run and the resumed runs' set-up (a layout detector's search
        said "at most about 27275 s left" after it)."""
        if done <= 0:
            return ""
        left = self._left.seconds(done, overall)
        return "; the time left is known after a few more probes" if left is None else f", at most about {left:.0f} s left"

    def measure(self, units: list[Unit] | tuple[Unit, ...], phase: str) -> ProbeMetrics:
        return self.measure_many([list(units)], phase)[0]

    def value(self, m: ProbeMetrics) -> float | None:
        return m.get(self.target.metric)

    def prune(self, chosen: list[Unit]) -> list[Unit]:
        """Each unit dropped where the rest still meet the target, last picked first. Each try is said before it runs: a
        try is one probe over every sample, and the captcha trial's page read 'probe 1/1 of this step' for 35 s at a time."""
        order = list(reversed(chosen))
        for i, unit in enumerate(order, 1):
            if len(chosen) > 1:
                rest = [u for u in chosen if u != unit]
                overall = max(self.budget, self.count + 1)
                self.progress(ProgressEvent(Stage.AUTOFALLBACK, self.count, overall, f"{self.strategy} search, prune "
                                            f"{i}/{len(order)}: without {'+'.join(unit)}{self._eta(self.count, overall)}"))
                if self.target.met(self.value(self.measure(rest, f"prune {i}/{len(order)}"))):
                    chosen = rest
        return chosen


def probe_budget(units: int, strategy: str, max_nodes: int | None = None) -> int:
    """Most probes a search can take: start (2), greedy (rounds of at most GREEDY_ROUND_WIDTH after a first full one,
    at most max_nodes rounds, then pruning and the result), bisect (log2 steps, pruning, result). Without the limit's
    rounds a 3-node search of 51 units said 'at most about 2500 s left' and took 202 s."""
    rounds = units if max_nodes is None else max(1, min(units, max_nodes))
    greedy = units + GREEDY_ROUND_WIDTH * max(0, rounds - 1) + rounds + 2
    bisect = math.ceil(math.log2(max(units, 1))) + units + 1
    return 2 + {"greedy": greedy, "bisect": bisect, "both": greedy + bisect}[strategy]


def _nodes(units, quantized: frozenset[str] | None = None) -> tuple[str, ...]:
    """The nodes a fallback set of `units` names: the quantized ones (a residual unit's Add or an activation unit's
    Relu travels with its unit in the probes, but falling it back means nothing to a rebuild)."""
    return tuple(n for u in units for n in u if quantized is None or n in quantized)


def measured_sets(steps: tuple[Step, ...] | list[Step], quantized: frozenset[str] | None) -> list[StrategyResult]:
    """Every set the search measured on its way (greedy's rounds, bisect's prefixes, the pruning's tries) as a result of
    the strategy that measured it, named by its quantized nodes; `phase` says where (the first time it was measured)."""
    out: dict[frozenset[str], StrategyResult] = {}
    for st in steps:
        nodes = tuple(n for n in st.fallback if quantized is None or n in quantized)
        out.setdefault(frozenset(nodes), StrategyResult(st.strategy, nodes, nodes, st.met, st.value, 0, st.phase))
    return list(out.values())


def pick_result(results: dict[str, StrategyResult], target: Target, max_nodes: int | None,
                measured: list[StrategyResult] | tuple[StrategyResult, ...] = ()) -> tuple[StrategyResult, str]:
    """The best set within max_nodes, and the sentence saying what it is: the smallest set meeting the target, else the
    closest to it. The strategies' answers compete with every other set they measured (`measured`, see measured_sets):
    with at most 3 nodes, greedy's answer reached 7.21 dB where bisect's pruning had measured a 3-node set at 10.12 dB.
    A set over the limit is never picked (a search with at most 5 nodes returned bisect's 26 and said it met the
    target), but where one met the target the sentence names it."""
    fits = lambda r: max_nodes is None or len(r.fallback) <= max_nodes  # noqa: E731
    answers = list(results.values())
    within = [r for r in answers if fits(r)] + [r for r in measured if fits(r)] or answers
    meeting = [r for r in within if r.met]
    # min/max keep the first of equals: a strategy's own answer before a set it measured on the way
    best = min(meeting, key=lambda r: (len(r.fallback), -target.score(r.achieved))) if meeting else \
        max(within, key=lambda r: target.score(r.achieved))
    what = f"{len(best.fallback)} node(s) ({', '.join(best.fallback)})"
    by = best.strategy + (f" ({best.phase})" if best.phase else "")
    if best.met or max_nodes is None:
        return best, (f"Falling back {what} reaches {target.value_text(best.achieved)} ({'meets' if best.met else 'misses'} "
                      f"the target, {target.words()}); found by {by}.")
    over = min((r for r in answers if r.met), key=lambda r: len(r.fallback), default=None)
    also = (f"; {over.strategy} met it with {len(over.fallback)} nodes, more than the {max_nodes} allowed" if over is not None
            else "")
    return best, (f"No set of at most {max_nodes} node(s) meets the target, {target.words()}: the closest, falling back "
                  f"{what}, reaches {target.value_text(best.achieved)}; found by {by}{also}.")


def _greedy(s: _Search, units: list[Unit], max_nodes: int | None) -> tuple[list[Unit], list[Unit]]:
    chosen: list[Unit] = []
    remaining = list(units)
    ranking = remaining
    while remaining:
        if max_nodes is not None and len(_nodes(chosen, s.quantized)) >= max_nodes:
            break
        fits = [u for u in ranking if max_nodes is None or len(_nodes(chosen, s.quantized)) + len(_nodes([u], s.quantized)) <= max_nodes]
        measured = s.measure_many([[*chosen, u] for u in fits], f"greedy round {len(chosen) + 1}")
        scored = [(s.target.score(s.value(m)), u) for m, u in zip(measured, fits)]
        if not scored:
            break
        scored.sort(key=lambda x: -x[0])
        best_score, best = scored[0]
        chosen.append(best)
        remaining.remove(best)
        if s.target.met(-best_score if s.target.lower_is_better else best_score):
            break
        ranking = [u for _, u in scored[1:GREEDY_ROUND_WIDTH + 1]] or remaining[:GREEDY_ROUND_WIDTH]
    before = list(chosen)
    if s.target.met(s.value(s.measure(chosen, "greedy"))):
        chosen = s.prune(chosen)
    return before, chosen


def _bisect(s: _Search, units: list[Unit]) -> tuple[list[Unit], list[Unit]]:
    lo, hi = 1, len(units)  # invariant: the prefix of length hi meets the target
    while lo < hi:
        mid = (lo + hi) // 2
        if s.target.met(s.value(s.measure(units[:mid], "bisect"))):
            hi = mid
        else:
            lo = mid + 1
    before = units[:hi]
    return before, s.prune(list(before))


def search_fallback(
    run_dir: str | os.PathLike,
    target: Target | str,
    *,
    max_nodes: int | None = None,
    strategy: str = "both",
    units: UnitMode | str = UnitMode.NODE,
    provider: str | None = None,
    progress: ProgressCallback = no_progress,
    samples: int | None = DEFAULT_SENSITIVITY_SAMPLES,
    pools: PoolFactory = local_pool,
) -> AutoFallbackResult:
    """Finds a small fallback set meeting `target` with probes on `samples` of the run's cached samples, spread over them; changes
    nothing in the run folder (engine.fallback.autofallback rebuilds with what it found)."""
    target = Target.parse(target) if isinstance(target, str) else target
    mode = UnitMode.parse(units) if isinstance(units, str) else units
    if strategy not in STRATEGIES:
        raise ConfigError(f"Unknown strategy '{strategy}'; use greedy, bisect or both.")
    if max_nodes is not None and max_nodes < 1:
        raise ConfigError(f"--max-nodes {max_nodes} is not positive; use 1 or more.")
    progress = Repeating.of(progress)  # "opening the probe session and timing its first probe", again during that probe
    _, cfg, probe = open_probe(run_dir, provider, mode, samples, progress)
    op_of = {n.name: n.op_type for n in probe.reference.graph.node}
    with pools(probe) as pool:
        unit_list = list(probe.units)
        s = _Search(pool, target, progress)
        s.quantized = frozenset(n for n in probe.nodes if op_of.get(n) in cfg.quant.op_types)
        s.budget = probe_budget(len(unit_list), strategy, max_nodes)
        s.strategy = "start"
        base = s.value(s.measure([], "all INT8"))
        if base is None:
            why = ("the run has no labels (give --labels to compare)" if target.metric == "accuracy_drop"
                   else "no output of the model holds a CTC recogniser's scores" if target.metric == "text_agreement"
                   else "no output of the model is classifier-shaped (N x classes)")
            raise ConfigError(f"The target {target} cannot be measured on this run: {why}; target snr_db or cosine instead.",
                              option="target")
        everything = s.value(s.measure(unit_list, "all fallback"))
        results: dict[str, StrategyResult] = {}
        if target.met(base):
            chosen, met, achieved, message = (), True, base, (f"The full INT8 model already meets the target, {target.words()}: "
                                                               f"{target.value_text(base)}.")
            results["none"] = StrategyResult("none", (), (), True, base, s.count)
            picked, found_in = "none", ""
        elif not target.met(everything):
            chosen, met, achieved = _nodes(unit_list, s.quantized), False, everything
            message = (f"The target, {target.words()}, cannot be met even with every quantizable node in fallback: the best "
                       f"reached is {target.value_text(everything)}.")
            results["all"] = StrategyResult("all", chosen, chosen, False, everything, s.count)
            picked, found_in = "all", ""
            if max_nodes is not None and len(chosen) > max_nodes:
                # every node is more than the user allows: the closest set within the limit, by greedy's rounds (bisect
                # looks for a prefix meeting the target, which none does); a search with at most 2 of 10 nodes rebuilt all 10
                s.strategy, start = "greedy", s.count
                before, after = _greedy(s, unit_list, max_nodes)
                value = s.value(s.measure(after, "result"))
                results["greedy"] = StrategyResult("greedy", _nodes(after, s.quantized), _nodes(before, s.quantized), False,
                                                   value, s.count - start)
                best, _ = pick_result({"greedy": results["greedy"]}, target, max_nodes, measured_sets(s.steps, s.quantized))
                chosen, achieved, picked, found_in = best.fallback, best.achieved, best.strategy, best.phase
                by = best.strategy + (f" ({best.phase})" if best.phase else "")
                message = (f"The target, {target.words()}, cannot be met even with every quantizable node in fallback "
                           f"({len(results['all'].fallback)} nodes reach {target.value_text(everything)}). ")
                if chosen and target.score(achieved) > target.score(base):
                    message += (f"Within the {max_nodes} node(s) allowed, the closest, falling back {len(chosen)} node(s) "
                                f"({', '.join(chosen)}), reaches {target.value_text(achieved)}; found by {by}.")
                else:  # no unit fits the limit (a residual unit of 2 nodes, at most 1), or none improves on all INT8
                    chosen, achieved, found_in = (), base, ""
                    message += (f"No set of at most {max_nodes} node(s) improves on the full INT8 model "
                                f"({target.value_text(base)}), so there is nothing to fall back within that limit.")
        else:
            for name in ("greedy", "bisect") if strategy == "both" else (strategy,):
                s.strategy, start = name, s.count
                before, after = _greedy(s, unit_list, max_nodes) if name == "greedy" else _bisect(s, unit_list)
                value = s.value(s.measure(after, "result"))
                results[name] = StrategyResult(name, _nodes(after, s.quantized), _nodes(before, s.quantized), target.met(value), value,
                                               s.count - start)
            best, message = pick_result(results, target, max_nodes, measured_sets(s.steps, s.quantized))
            chosen, met, achieved, picked = best.fallback, best.met, best.achieved, best.strategy
            found_in = best.phase  # "" for a strategy's answer, else the step that measured the set
    result = AutoFallbackResult(tuple(chosen), met, target, achieved, picked, results, tuple(s.steps), message,
                                {"probes": s.count, "units": mode.value, "max_nodes": max_nodes, "samples": probe.data.samples,
                                 "baseline": base, "all_fallback": everything,
                                 "found_in": found_in})
    return result
