"""Diagnosis beyond the layerwise curve: the culprit ranking by measured harm, isolated per-node sensitivity and
automatic fallback search, all on one gated candidate session."""

from engine.diagnose.autofallback import AutoFallbackResult, Step, search_fallback
from engine.diagnose.harm_ranking import HarmRanking, UnitHarm, rank_units
from engine.diagnose.probe_scoring import ProbeData, ProbeMetrics
from engine.diagnose.probes import OutputProbe
from engine.diagnose.sensitivity import SensitivityEstimate, sensitivity, sensitivity_estimate
from engine.diagnose.targets import Target
from engine.diagnose.units import UnitMode, fallback_units

__all__ = ["sensitivity", "sensitivity_estimate", "SensitivityEstimate", "search_fallback", "AutoFallbackResult", "Step", "Target", "OutputProbe", "ProbeData", "ProbeMetrics",
           "UnitMode", "fallback_units", "HarmRanking", "UnitHarm", "rank_units"]
