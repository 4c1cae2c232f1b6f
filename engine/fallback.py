"""Automatic fallback as a workflow step: search for a fallback set (diagnose.autofallback), then rebuild the run with
it and keep what the search found in DIR/autofallback.json."""

from __future__ import annotations

import os
from collections.abc import Callable

from engine.diagnose.autofallback import AutoFallbackResult, search_fallback
from engine.diagnose.kept_results import keep_search
from engine.diagnose.probes import PoolFactory, local_pool
from engine.diagnose.run_probe import DEFAULT_SENSITIVITY_SAMPLES
from engine.diagnose.targets import Target
from engine.diagnose.units import UnitMode
from engine.pipeline import rebuild
from engine.progress import ProgressCallback, no_progress
from engine.runs import RunFolder

__all__ = ["autofallback"]


def autofallback(
    run_dir: str | os.PathLike,
    target: Target | str,
    *,
    max_nodes: int | None = None,
    strategy: str = "both",
    units: UnitMode | str = UnitMode.NODE,
    provider: str | None = None,
    progress: ProgressCallback = no_progress,
    samples: int | None = DEFAULT_SENSITIVITY_SAMPLES,
    apply: bool = True,
    rebuild_fn: Callable | None = None,
    pools: PoolFactory = local_pool,
) -> AutoFallbackResult:
    """Finds a small fallback set meeting `target`; with `apply`, rebuilds the run with it (history kept). Either way
    DIR/autofallback.json keeps what it found (kept_results.kept_search reads it back). rebuild_fn: the rebuild to call
    (the CLI records it in the run index)."""
    result = search_fallback(run_dir, target, max_nodes=max_nodes, strategy=strategy, units=units, provider=provider,
                             progress=progress, samples=samples, pools=pools)
    if apply and (result.fallback or result.met):  # an empty set that misses the target changes nothing: no rebuild
        (rebuild_fn or rebuild)(run_dir, fallback=list(result.fallback), provider=provider)
    keep_search(RunFolder(run_dir), result)  # kept whether applied or not: reopening the run shows it (kept_results)
    return result
