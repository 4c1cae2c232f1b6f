"""Automatic fallback: the smallest node set whose fallback meets a target on the final outputs.

greedy: add the unit with the best measured result, re-measuring the remaining units after each pick,
        then prune any unit whose removal still meets the target.
bisect: the seed's search over topological order: the shortest prefix of units that meets the target
        (as Polygraphy's `debug precision` does), answered with node names, then pruned the same way."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from engine.diagnose.probes import OutputProbe, ProbeMetrics
from engine.diagnose.sensitivity import open_probe
from engine.diagnose.targets import Target
from engine.diagnose.units import UnitMode, fallback_units
from engine.errors import ConfigError
from engine.progress import ProgressCallback, ProgressEvent, Stage, no_progress

__all__ = ["Step", "StrategyResult", "AutoFallbackResult", "autofallback", "STRATEGIES"]

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

    def to_dict(self) -> dict:
        v = self.value
        return {"strategy": self.strategy, "phase": self.phase, "fallback": list(self.fallback), "nodes": len(self.fallback),
                "value": None if v is None or (isinstance(v, float) and math.isnan(v)) else (str(v) if math.isinf(v) else v),
                "met": self.met, "seconds": round(self.seconds, 4)}


@dataclass(frozen=True)
class StrategyResult:
    strategy: str
    fallback: tuple[str, ...]
    before_pruning: tuple[str, ...]
    met: bool
    achieved: float | None
    probes: int

    def to_dict(self) -> dict:
        return {"fallback": list(self.fallback), "before_pruning": list(self.before_pruning), "met": self.met,
                "achieved": self.achieved, "probes": self.probes}


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
        a = self.achieved
        return {"fallback": list(self.fallback), "met": self.met, "target": str(self.target),
                "achieved": str(a) if isinstance(a, float) and math.isinf(a) else a, "strategy": self.strategy,
                "message": self.message, "strategies": {k: v.to_dict() for k, v in self.strategies.items()},
                "steps": [s.to_dict() for s in self.steps], **self.extra}


class _Search:
    def __init__(self, probe: OutputProbe, target: Target, progress: ProgressCallback) -> None:
        self.probe, self.target, self.progress = probe, target, progress
        self.memo: dict[frozenset[str], ProbeMetrics] = {}
        self.steps: list[Step] = []
        self.strategy = ""
        self.count = 0

    def measure(self, units: list[Unit] | tuple[Unit, ...], phase: str) -> ProbeMetrics:
        nodes = frozenset(n for u in units for n in u)
        if nodes not in self.memo:
            self.memo[nodes] = self.probe.measure(nodes)
            self.count += 1
            self.progress(ProgressEvent(Stage.SENSITIVITY, self.count, 0, f"{self.strategy} {phase}: {len(nodes)} node(s) in fallback"))
        m = self.memo[nodes]
        value = m.get(self.target.metric)
        self.steps.append(Step(self.strategy, phase, tuple(sorted(nodes)), value, self.target.met(value), m.seconds))
        return m

    def value(self, m: ProbeMetrics) -> float | None:
        return m.get(self.target.metric)

    def prune(self, chosen: list[Unit]) -> list[Unit]:
        for unit in list(reversed(chosen)):
            if len(chosen) > 1:
                rest = [u for u in chosen if u != unit]
                if self.target.met(self.value(self.measure(rest, "prune"))):
                    chosen = rest
        return chosen


def _nodes(units) -> tuple[str, ...]:
    return tuple(n for u in units for n in u)


def _greedy(s: _Search, units: list[Unit], max_nodes: int | None) -> tuple[list[Unit], list[Unit]]:
    chosen: list[Unit] = []
    remaining = list(units)
    ranking = remaining
    while remaining:
        if max_nodes is not None and len(_nodes(chosen)) >= max_nodes:
            break
        scored = []
        for u in ranking:
            if max_nodes is not None and len(_nodes(chosen)) + len(u) > max_nodes:
                continue
            scored.append((s.target.score(s.value(s.measure([*chosen, u], "greedy"))), u))
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


def autofallback(
    run_dir: str | os.PathLike,
    target: Target | str,
    *,
    max_nodes: int | None = None,
    strategy: str = "both",
    units: UnitMode | str = UnitMode.NODE,
    provider: str | None = None,
    progress: ProgressCallback = no_progress,
    apply: bool = True,
    rebuild_fn: Callable | None = None,
) -> AutoFallbackResult:
    """Finds a small fallback set meeting `target`; with `apply`, rebuilds the run with it (history kept)
    and writes DIR/autofallback.json."""
    target = Target.parse(target) if isinstance(target, str) else target
    mode = UnitMode.parse(units) if isinstance(units, str) else units
    if strategy not in STRATEGIES:
        raise ConfigError(f"Unknown strategy '{strategy}'; use greedy, bisect or both.")
    if max_nodes is not None and max_nodes < 1:
        raise ConfigError(f"--max-nodes {max_nodes} is not positive; use 1 or more.")
    probe = open_probe(run_dir, provider)
    unit_list = fallback_units(probe.reference, probe.quantizable, mode)
    s = _Search(probe, target, progress)
    s.strategy = "start"
    base = s.value(s.measure([], "all INT8"))
    everything = s.value(s.measure(unit_list, "all fallback"))
    results: dict[str, StrategyResult] = {}
    if target.met(base):
        chosen, met, achieved, message = (), True, base, f"The full INT8 model already meets {target} ({base:.4g})."
        results["none"] = StrategyResult("none", (), (), True, base, s.count)
    elif not target.met(everything):
        chosen, met, achieved = _nodes(unit_list), False, everything
        message = (f"{target} cannot be met even with every quantizable node in {probe.config.fallback_precision.value}: "
                   f"the best reached is {target.metric}={everything:.4g}.")
        results["all"] = StrategyResult("all", chosen, chosen, False, everything, s.count)
    else:
        for name in ("greedy", "bisect") if strategy == "both" else (strategy,):
            s.strategy, start = name, s.count
            before, after = _greedy(s, unit_list, max_nodes) if name == "greedy" else _bisect(s, unit_list)
            value = s.value(s.measure(after, "result"))
            results[name] = StrategyResult(name, _nodes(after), _nodes(before), target.met(value), value, s.count - start)
        meeting = [r for r in results.values() if r.met and (max_nodes is None or len(r.fallback) <= max_nodes)]
        best = min(meeting, key=lambda r: (len(r.fallback), -target.score(r.achieved))) if meeting else \
            max(results.values(), key=lambda r: target.score(r.achieved))
        chosen, met, achieved = best.fallback, best.met, best.achieved
        message = (f"Falling back {len(chosen)} node(s) ({', '.join(chosen)}) reaches {target.metric}={achieved:.4g} "
                   f"({'meets' if met else 'misses'} {target}); found by {best.strategy}.")
    picked = next((k for k, r in results.items() if r.fallback == chosen), "none")
    result = AutoFallbackResult(tuple(chosen), met, target, achieved, picked, results, tuple(s.steps), message,
                                {"probes": s.count, "units": mode.value, "max_nodes": max_nodes,
                                 "baseline": base, "all_fallback": everything})
    if apply:
        from engine.pipeline import rebuild

        (rebuild_fn or rebuild)(run_dir, fallback=list(chosen), provider=provider)
        probe.run.write_json(probe.run.path / "autofallback.json", _json_safe(result.to_dict()))
    return result


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj
