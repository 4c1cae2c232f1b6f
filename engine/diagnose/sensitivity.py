"""Isolated sensitivity of every fallback unit, two views, measured on the final outputs:
  only_this_quantized_*  this unit in INT8, every other unit in fallback (its own harm);
  all_but_this_*         every unit in INT8 except this one, in fallback (what falling it back gains).
Fallback is the run's fallback precision (FP16 unless the run says FP32). all_but_this_gain_db is on every float
output together (outputs_snr_db), as the culprit ranking measures it. All probes run in one session of the gated
candidate (see gated.py) on `samples` cached samples spread over the data (run_probe.cached_probe_data)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import pandas as pd

from engine.diagnose.kept_results import keep_sensitivity
from engine.diagnose.probe_scoring import ProbeMetrics
from engine.diagnose.probes import PoolFactory, ProbePool, ProbeRequest, local_pool
from engine.diagnose.run_probe import DEFAULT_SENSITIVITY_SAMPLES, open_probe
from engine.diagnose.units import UnitMode
from engine.errors import ConfigError
from engine.progress import ProgressCallback, ProgressEvent, Repeating, Stage, TimeLeft, no_progress
from engine.results import Summary

__all__ = ["sensitivity", "sensitivity_frame", "sensitivity_estimate", "SensitivityEstimate", "VIEW_METRICS",
           "DEFAULT_SENSITIVITY_SAMPLES"]

VIEW_METRICS = ("cosine", "snr_db", "outputs_snr_db", "top1_agreement", "accuracy")


def _cols(prefix: str, m: ProbeMetrics) -> dict:
    return {f"{prefix}_{k}": m.get(k) for k in VIEW_METRICS}


def sensitivity_frame(pool: ProbePool, op_types: dict[str, str], progress: ProgressCallback = no_progress) -> pd.DataFrame:
    """Both views for every unit of the pool's probe, most harmful alone first."""
    units = pool.probe.units
    progress = Repeating.of(progress)  # its last event again inside a probe: a cancel need not wait for a whole probe
    requests = [ProbeRequest()]
    for unit in units:
        requests += [ProbeRequest(only=unit), ProbeRequest(fallback=frozenset(unit))]
    left = TimeLeft()

    def on_result(done: int, total: int) -> None:
        eta = left.seconds(done, total)
        if done >= total:
            progress(ProgressEvent(Stage.SENSITIVITY, done, total, f"probe {done}/{total}"))
        elif eta is None:
            progress(ProgressEvent(Stage.SENSITIVITY, done, total, f"probe {done}/{total}; the time left is known after a few more"))
        else:
            progress(ProgressEvent(Stage.SENSITIVITY, done, total, f"probe {done}/{total}, about {eta:.0f} s left"))

    results = pool.measure_many(requests, on_result, progress.again)
    full = results[0]
    rows = []
    for i, unit in enumerate(units):
        only, but = results[1 + 2 * i], results[2 + 2 * i]
        row = {"node": "+".join(unit), "op_type": "+".join(op_types.get(n, "?") for n in unit),
               **_cols("only_this_quantized", only), **_cols("all_but_this", but)}
        row["all_but_this_gain_db"] = but.outputs_snr_db - full.outputs_snr_db if math.isfinite(full.outputs_snr_db) else math.nan
        row["probe_seconds"] = only.seconds + but.seconds
        rows.append(row)
    return pd.DataFrame(rows).sort_values("only_this_quantized_outputs_snr_db", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class SensitivityEstimate:
    """What `sensitivity` of a compared run will cost, told before it starts (PP-OCRv4's recogniser took six minutes
    with nothing said until the button was clicked)."""

    probes: int  # one all-INT8 run, and two per unit (only it in INT8; every unit but it)
    samples: int  # each probe runs on this many samples
    seconds: float  # probes x what a probe of that many samples cost the ranking here (else the comparison's candidate
    # time per sample); nan where neither was timed
    from_ranking: bool = False  # timed from the ranking's own probes

    def sentence(self) -> str:
        runs = (f"{self.probes} probe runs of the INT8 model on {self.samples} samples each (one with every node in INT8, "
                "then two per fallback candidate)")
        if not math.isfinite(self.seconds):
            return runs + "."
        if self.from_ranking:
            return (f"{runs}: about {self.seconds:.0f} s here, a rough guide from what the culprit ranking's probes cost a "
                    "sample (not counting the probe session's start).")
        return (f"{runs}: about {self.seconds:.0f} s here, counting each probe as one pass of the comparison's INT8 model "
                "over those samples (that pass observed every tensor; a probe reads only the outputs, so it is often "
                "less).")


def sensitivity_estimate(summary: Summary, samples: int | None = DEFAULT_SENSITIVITY_SAMPLES) -> SensitivityEstimate:
    """Node units of the all-INT8 build, as `sensitivity` probes them whatever the run's fallback set: its quantized
    nodes and those it keeps in fallback. The candidate's time is per pass over the samples (a fixed batch observed in
    several passes ran it that many times)."""
    n = summary.samples if samples is None else min(samples, summary.samples)
    probes = 1 + 2 * (summary.quantized_nodes + len(summary.fallback))
    ranking = summary.ranking
    if ranking.work > 0 and math.isfinite(ranking.seconds):
        # the ranking's probes are sensitivity's probes on fewer samples: the captcha recogniser's estimate from the
        # marked candidate pass said 76 s for a 33 s run
        return SensitivityEstimate(probes, n, probes * (n + 1) * ranking.seconds / ranking.work, from_ranking=True)
    passes = max(1, summary.passes)
    per_sample = summary.timings.get("candidate", math.nan) / passes / summary.samples if summary.samples else math.nan
    return SensitivityEstimate(probes, n, probes * n * per_sample)


def sensitivity(run_dir: str | os.PathLike, *, provider: str | None = None, samples: int | None = DEFAULT_SENSITIVITY_SAMPLES,
                units: UnitMode | str = UnitMode.NODE, progress: ProgressCallback = no_progress,
                pools: PoolFactory = local_pool) -> pd.DataFrame:
    """Writes DIR/sensitivity.csv. samples: N cached samples spread over the data (None: all). pools: where the probes run
    (default: here, one after another; an engine.scale executor's probe_pool spreads them over workers)."""
    if samples is not None and samples < 1:
        raise ConfigError(f"--samples {samples} is not positive; use 1 or more, or leave it out.", option="samples")
    mode = UnitMode.parse(units) if isinstance(units, str) else units
    progress = Repeating.of(progress)  # "opening the probe session and timing its first probe", again during that probe
    run, _, probe = open_probe(run_dir, provider, mode, samples, progress)
    ops = {n.name: n.op_type for n in probe.reference.graph.node}
    with pools(probe) as pool:
        frame = sensitivity_frame(pool, ops, progress)
    frame.attrs["samples"] = probe.data.samples
    keep_sensitivity(run, frame)
    return frame
