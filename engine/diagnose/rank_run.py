"""The ranking stage of compare and rebuild: probes on `screen_samples` cached samples spread over the data.

A unit's alone-in-INT8 harm does not depend on the fallback set (everything else is in fallback in that probe), so a
rebuild that changes only the fallback set reuses the stored ranking (ranking.json) and drops the units now in
fallback; a change of calibration, op types, ranges or screening subset measures it again."""

from __future__ import annotations

import json

import onnx

from engine.backends.base import Backend
from engine.compare.reference_cache import ReferenceCache
from engine.diagnose.harm_ranking import RANK_PASSES_PER_SAMPLE, HarmRanking, rank_units
from engine.diagnose.probes import PoolFactory, local_pool
from engine.diagnose.run_probe import probe_for_run
from engine.diagnose.units import UnitMode
from engine.progress import ProgressCallback, ProgressEvent, Repeating, Stage, no_progress
from engine.run_config import RunConfig
from engine.runs import RunFolder

__all__ = ["rank_run", "ranking_key", "rank_budget"]


def ranking_key(cfg: RunConfig, backend: Backend, budget_passes: float | None) -> dict:
    quant = cfg.quant.with_fallback(()).to_dict()
    return {"quant": quant, "screen_samples": cfg.screen_samples, "backend": backend.name, "samples": cfg.samples,
            "budget_passes": budget_passes, "subset": "spread"}  # spread over the data (run_probe.spread_order), not its head


def rank_budget(run: RunFolder) -> float | None:
    """Probe passes the ranking may spend: RANK_PASSES_PER_SAMPLE per sample the compare evaluated (None: unknown)."""
    meta = ReferenceCache(run.cache_dir).meta
    samples = meta.get("samples") if meta else None
    return RANK_PASSES_PER_SAMPLE * int(samples) if samples else None


def rank_run(run: RunFolder, cfg: RunConfig, reference: onnx.ModelProto, backend: Backend,
             progress: ProgressCallback = no_progress, pools: PoolFactory = local_pool,
             device_library: str | None = None) -> tuple[HarmRanking | None, bool]:
    """(ranking, reused). None when ranking is switched off (screen_samples 0) or nothing is quantized.
    `backend` must switch Q/DQ at run time (see select.probe_backend); device_library: Settings.device_library."""
    if cfg.screen_samples <= 0:
        return None, False
    budget = rank_budget(run)
    key = ranking_key(cfg, backend, budget)
    if run.ranking.is_file():
        try:
            stored = json.loads(run.ranking.read_text())
            if stored.get("key") == key:
                return HarmRanking.from_dict(stored["ranking"]), True
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable: measure again
    # building the gated graph and opening its session took ~3 s on the captcha recogniser with nothing said
    progress = Repeating.of(progress)  # said again during the first probes, which carry the session's warm-up
    progress(ProgressEvent(Stage.RANK, 0, 1, "starting: building the probes' gated model and its session (0/1)"))
    probe = probe_for_run(run, cfg, reference, backend, UnitMode.NODE, cfg.screen_samples, device_library)
    if probe is None:
        return None, False
    ops = {n.name: n.op_type for n in reference.graph.node}
    with pools(probe) as pool:
        ranking = rank_units(pool, ops, progress, budget_passes=budget)
    run.write_json(run.ranking, {"key": key, "ranking": ranking.to_dict()})
    return ranking, False
