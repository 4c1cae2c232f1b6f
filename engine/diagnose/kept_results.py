"""A run folder keeps its last sensitivity and its last fallback search, each with the basis it was measured on: the
calibration, the quantization settings but the fallback set (probes measure the all-INT8 build), and the cached
batches. Reopened later (History, another session), the run shows them again where that basis is still the run's; a
browser trial's 7.5-minute search could not be found again once the page had moved on."""

from __future__ import annotations

import hashlib
import json
import os

import pandas as pd

from engine.compare.reference_cache import ReferenceCache
from engine.diagnose.autofallback import AutoFallbackResult
from engine.errors import QuantScopeError
from engine.runs import RunFolder

__all__ = ["keep_sensitivity", "kept_sensitivity", "keep_search", "kept_search", "SENSITIVITY_CSV", "SEARCH_JSON"]

SENSITIVITY_CSV = "sensitivity.csv"
SENSITIVITY_JSON = "sensitivity.json"  # its basis and sample count
SEARCH_JSON = "autofallback.json"


def probe_basis(run: RunFolder) -> str:
    """What probes of this run measure: its calibration, its quantization settings without the fallback set, and the
    batches they run on (a compare into the folder again makes a new cache, so results of the old one are not shown)."""
    h = hashlib.sha256()
    h.update(run.calibration_cache.read_bytes() if run.calibration_cache.is_file() else b"")
    h.update(json.dumps(run.read_config().quant.with_fallback(()).to_dict(), sort_keys=True).encode())
    h.update(str(ReferenceCache(run.cache_dir).generation).encode())
    return h.hexdigest()[:24]


def keep_sensitivity(run: RunFolder, frame: pd.DataFrame) -> None:
    run.write_frame(run.path / SENSITIVITY_CSV, frame)
    run.write_json(run.path / SENSITIVITY_JSON, {"basis": probe_basis(run), "samples": frame.attrs.get("samples")})


def kept_sensitivity(run_dir: str | os.PathLike) -> pd.DataFrame | None:
    """The run's last sensitivity where it was measured on what the run is now (None: none, or another basis)."""
    run = RunFolder(run_dir)
    try:
        meta = run.read_json(run.path / SENSITIVITY_JSON)
        if meta.get("basis") != probe_basis(run):
            return None
        frame = pd.read_csv(run.path / SENSITIVITY_CSV)
    except (OSError, ValueError, KeyError, TypeError, QuantScopeError):
        return None
    frame.attrs["samples"] = meta.get("samples")
    return frame


def keep_search(run: RunFolder, result: AutoFallbackResult) -> None:
    run.write_json(run.path / SEARCH_JSON, {**result.to_dict(), "basis": probe_basis(run)})


def kept_search(run_dir: str | os.PathLike) -> AutoFallbackResult | None:
    """The run's last fallback search where it was measured on what the run is now (None: none, or another basis)."""
    run = RunFolder(run_dir)
    try:
        d = run.read_json(run.path / SEARCH_JSON)
        if d.get("basis") != probe_basis(run):
            return None
        found = AutoFallbackResult.from_dict(d)
    except (OSError, ValueError, KeyError, TypeError, QuantScopeError):
        return None
    found.extra.pop("basis", None)
    return found
