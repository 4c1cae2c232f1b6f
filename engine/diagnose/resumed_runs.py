"""Probe runs resumed at a cut of the gated candidate (gated_cuts.py), from a baseline run's tensors there.

A baseline is a set of units in fallback: always the all-INT8 candidate and the all-fallback one, and any other set
the probe asks for (a greedy search's round: every probe is the set chosen so far plus one unit). A run of a
baseline's gates goes through the recorder (the gated graph with every cut's tensors also observed) and keeps those
tensors per batch, while they fit `budget_bytes` (the least recently used baselines go first); a later probe on the
same samples whose gates agree with a kept baseline before some cut runs only the graph after the deepest such cut.
Every other run is the plain gated session's, as before.

On this 2-core CPU, with every probe of a ranking's stage resumed: MobileNetV3 2.1x, YOLOv8n 1.8x, ddddocr's detector
1.8x faster probes, outputs bit for bit the same. A probe opens the suffix sessions only where the probes to come
promise to save more than they cost (the recorder and suffix sessions cost about 2.5 openings of the gated graph), and
uses them only where a resumed run equals a full one bit for bit (checked when they open: probes.py)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import onnx

from engine.backends.base import Backend
from engine.data.source import Batch
from engine.diagnose.gated import GatedModel
from engine.diagnose.gated_cuts import Cut, GraphCuts, plan_cuts, suffix_model

__all__ = ["ResumedRuns", "Kept", "Baseline", "off_gates", "consensus", "same_outputs", "worth_resuming"]

Baseline = frozenset[str]  # the gates a baseline run has off: its units in fallback
Infer = Callable[[Batch], dict[str, np.ndarray]]
SamplesKey = int | None  # the probe data's first N samples (None: all of it)


def off_gates(gates: dict[str, np.ndarray]) -> Baseline:
    return frozenset(g for g, v in gates.items() if not bool(v))


def consensus(feeds: Sequence[dict[str, np.ndarray]]) -> Baseline:
    """The gates off in more than half of `feeds`: the set a batch of probes shares (a greedy round's chosen units)."""
    counts: dict[str, int] = {}
    for gates in feeds:
        for g in off_gates(gates):
            counts[g] = counts.get(g, 0) + 1
    return frozenset(g for g, c in counts.items() if 2 * c > len(feeds))


@dataclass(frozen=True)
class Kept:
    """One baseline's tensors on one samples key: a dict a batch, holding the tensors of the `usable` cuts."""

    parts: list[dict[str, np.ndarray]]
    usable: frozenset[int]
    nbytes: int


class ResumedRuns:
    """The recorder and suffix sessions of one gated probe (open until `close`), and the baselines' kept tensors."""

    def __init__(self, backend: Backend, gated: GatedModel, plan: GraphCuts, budget_bytes: int) -> None:
        self.backend, self.gated, self.plan, self.budget = backend, gated, plan, budget_bytes
        self._sessions = ExitStack()
        self._recorder = None
        self._suffixes: list = []
        self._inputs: list[set[str]] = []  # what each suffix session takes
        self._kept: OrderedDict[tuple[SamplesKey, Baseline], Kept] = OrderedDict()  # least recently used first
        self.int8, self.fallback = frozenset(), frozenset(gated.gates)
        self._wanted: set[Baseline] = {self.int8, self.fallback}  # the baselines a run of their gates records
        self._types: dict[str, np.dtype] = {}  # each cut tensor's type, from the recorder's runs

    @classmethod
    def plan_for(cls, backend: Backend, gated: GatedModel, budget_bytes: int) -> ResumedRuns | None:
        plan = plan_cuts(gated.model, gated.gates)
        return None if plan is None or budget_bytes <= 0 else cls(backend, gated, plan, budget_bytes)

    @property
    def is_open(self) -> bool:
        return bool(self._suffixes)

    def open_cost(self) -> float:
        """The recorder and the suffix sessions, in openings of the whole gated graph."""
        return 1.0 + sum(1.0 - c.skipped for c in self.plan.cuts)

    def open(self, dtypes: dict[str, np.dtype]) -> None:
        for cut in self.plan.cuts:
            model = suffix_model(self.gated.model, self.plan, cut, dtypes)
            self._suffixes.append(self._sessions.enter_context(self.backend.runner(model)))
            self._inputs.append({i.name for i in model.graph.input})

    def close(self) -> None:
        """The recorder and suffix sessions closed, the kept tensors dropped."""
        self._sessions.close()
        self._recorder, self._suffixes, self._inputs = None, [], []
        self._kept.clear()

    def recorder(self):
        """The gated graph with every cut's tensors also as outputs, left untyped: the runtime infers their types (a cut
        can carry an int64 shape as well as activations)."""
        if self._recorder is None:
            model = onnx.ModelProto()
            model.CopyFrom(self.gated.model)
            present = {o.name for o in model.graph.output}
            model.graph.output.extend(onnx.ValueInfoProto(name=t) for t in self.plan.observed if t not in present)
            self._recorder = self._sessions.enter_context(self.backend.runner(model))
        return self._recorder

    def wants(self, gates: dict[str, np.ndarray]) -> bool:
        """Whether a run of `gates` is a baseline to record."""
        return off_gates(gates) in self._wanted

    def want(self, baseline: Baseline) -> dict[str, np.ndarray]:
        """`baseline` recorded from now on when it runs, in place of an earlier batch's shared set; returns its gates."""
        self._wanted = {self.int8, self.fallback, baseline}
        return self.gated.feed_off(baseline)

    def resume_cut(self, gates: dict[str, np.ndarray], key: SamplesKey, kept_only: bool = True,
                   candidates: Sequence[Baseline] | None = None) -> tuple[int, Baseline] | None:
        """(cut index, baseline) of the deepest cut where `gates` agree with a baseline: one kept for `key`, or
        (kept_only False) one of `candidates` (default: all-INT8 and all-fallback) as if it were kept whole."""
        off = off_gates(gates)
        pool = [b for k, b in self._kept if k == key] if kept_only else list(candidates or (self.int8, self.fallback))
        best: tuple[int, Baseline] | None = None
        for baseline in pool:
            usable = self._kept[(key, baseline)].usable if kept_only else None
            for i, cut in enumerate(self.plan.cuts):
                if off & cut.gates != baseline & cut.gates:
                    break
                if (usable is None or i in usable) and (best is None or i > best[0]):
                    best = (i, baseline)
        return best

    def skipped(self, gates: dict[str, np.ndarray], candidates: Sequence[Baseline] | None = None) -> float:
        """Share of the graph a run of `gates` would skip with `candidates` kept (default: all-INT8 and all-fallback)."""
        at = self.resume_cut(gates, None, kept_only=False, candidates=candidates)
        return 0.0 if at is None else self.plan.cuts[at[0]].skipped

    def has(self, key: SamplesKey, baseline: Baseline) -> bool:
        return (key, baseline) in self._kept

    def recording(self, gates: dict[str, np.ndarray], key: SamplesKey, batches: int) -> tuple[Infer, Callable[[], None]]:
        """infer for a baseline's run through the recorder over `batches` batches, and what keeps its tensors once every
        batch has run. Which cuts are kept is chosen after the first batch (its sizes times `batches`): the deepest cuts
        that fit the budget, once the least recently used baselines have made room (any baseline of another samples
        key, and a past round's set; never all-INT8 or all-fallback of this key), so a run never holds more than it."""
        runner, name, kept = self.recorder(), off_gates(gates), []
        observed = self.plan.observed
        chosen: dict[str, object] = {}

        def choose(first: dict[str, np.ndarray]) -> None:
            sizes = {t: first[t].nbytes * batches for t in observed}
            fixed = (self.int8, self.fallback)
            for old in [k for k in self._kept if k[0] != key or k[1] not in fixed]:  # least recently used first
                if self._held() + sum(sizes.values()) <= self.budget:
                    break
                del self._kept[old]
            free = self.budget - self._held()
            usable, tensors = [], set()  # the deepest cuts first: a CNN's later tensors are the smaller ones
            for i in reversed(range(len(self.plan.cuts))):
                more = set(self.plan.cuts[i].tensors) - tensors
                if sum(sizes[t] for t in tensors | more) <= free:
                    usable.append(i)
                    tensors |= more
            chosen.update(usable=frozenset(usable), tensors=tensors)

        def infer(batch: Batch) -> dict[str, np.ndarray]:
            out = runner.infer({**batch, **gates})
            part = {t: out.pop(t) for t in observed if t in out}
            self._types.update((t, np.asarray(a).dtype) for t, a in part.items())
            if len(part) == len(observed) and all(isinstance(a, np.ndarray) for a in part.values()):
                if not chosen:
                    choose(part)
                kept.append({t: part[t] for t in chosen["tensors"]})
            return out

        def keep() -> None:
            if not chosen or not chosen["usable"] or len(kept) != batches:
                return
            self._kept[(key, name)] = Kept(kept, chosen["usable"], sum(a.nbytes for part in kept for a in part.values()))

        return infer, keep

    def resumed(self, gates: dict[str, np.ndarray], key: SamplesKey, at: tuple[int, Baseline]) -> Infer:
        """infer for a run resumed at cut `at[0]` from baseline `at[1]`'s kept tensors (batches in the kept order)."""
        index, name = at
        cut: Cut = self.plan.cuts[index]
        runner, takes, parts = self._suffixes[index], self._inputs[index], iter(self._kept[(key, name)].parts)
        self._kept.move_to_end((key, name))

        def infer(batch: Batch) -> dict[str, np.ndarray]:
            part = next(parts)
            feed = {k: v for k, v in {**batch, **gates}.items() if k in takes}
            return runner.infer({**feed, **{t: part[t] for t in cut.tensors}})

        return infer

    def dtypes(self) -> dict[str, np.dtype]:
        """The cut tensors' types, as the recorder gave them."""
        return dict(self._types)

    def forget(self, key: SamplesKey) -> None:
        for k in [k for k in self._kept if k[0] == key]:
            del self._kept[k]

    def _held(self) -> int:
        return sum(k.nbytes for k in self._kept.values())


def worth_resuming(saving_seconds: float, sessions_seconds: float, baselines_seconds: float) -> bool:
    """Open the resumed runs' sessions where the probes to come would save more than twice what the sessions and the
    baseline runs cost (estimates: a margin for a poor guess)."""
    return saving_seconds > 2 * (sessions_seconds + baselines_seconds)


def same_outputs(a: Sequence[dict[str, np.ndarray]], b: Sequence[dict[str, np.ndarray]], outputs: Sequence[str]) -> bool:
    """Bit for bit the same final outputs, batch by batch."""
    def same(x: np.ndarray, y: np.ndarray) -> bool:
        return np.array_equal(x, y, equal_nan=bool(np.issubdtype(np.asarray(x).dtype, np.inexact)))

    return len(a) == len(b) and all(same(x[o], y[o]) for x, y in zip(a, b) for o in outputs)
