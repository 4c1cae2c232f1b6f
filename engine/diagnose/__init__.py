"""Diagnosis beyond the layerwise curve: isolated per-node sensitivity and automatic fallback search."""

from engine.diagnose.autofallback import AutoFallbackResult, Step, autofallback
from engine.diagnose.probes import OutputProbe, ProbeMetrics
from engine.diagnose.sensitivity import sensitivity
from engine.diagnose.targets import Target
from engine.diagnose.units import UnitMode, fallback_units

__all__ = ["sensitivity", "autofallback", "AutoFallbackResult", "Step", "Target", "OutputProbe", "ProbeMetrics",
           "UnitMode", "fallback_units"]
