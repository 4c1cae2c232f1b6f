"""Quantization settings as frozen values (no string-keyed option dicts)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from enum import Enum

from engine.errors import ConfigError


def in_name_order(names) -> list[str]:
    """Node names sorted with their numbers as numbers (n4 before n10, Conv.5 before Conv.12): lists of fallback nodes
    read n0, n10, n12, n17, n23, n25, n35, n37, n4 (ShuffleNet trial)."""
    return sorted(names, key=lambda n: [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", n) if t])

__all__ = ["CalibrationMethod", "FallbackPrecision", "Precision", "RangeOverride", "QuantConfig", "TRT_INT8_OP_TYPES",
           "check_percentile"]

# The op types TensorRT runs in INT8 when their inputs carry Q/DQ.
TRT_INT8_OP_TYPES: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")


class CalibrationMethod(str, Enum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"

    @classmethod
    def parse(cls, text: str) -> CalibrationMethod:
        try:
            return cls(text.lower())
        except ValueError:
            raise ConfigError(f"Unknown calibration method '{text}'; use one of: {', '.join(m.value for m in cls)}.") from None


class FallbackPrecision(str, Enum):
    FP16 = "fp16"
    FP32 = "fp32"

    @classmethod
    def parse(cls, text: str) -> FallbackPrecision:
        try:
            return cls(text.lower())
        except ValueError:
            raise ConfigError(f"Unknown fallback precision '{text}'; use fp16 or fp32.") from None


class Precision(str, Enum):
    """What quantized nodes compute in: INT8, or FP8 E4M3 (explicit float8 Q/DQ; TensorRT runs it on Hopper and later)."""

    INT8 = "int8"
    FP8 = "fp8"

    @classmethod
    def parse(cls, text: str) -> Precision:
        try:
            return cls(text.lower())
        except ValueError:
            raise ConfigError(f"Unknown precision '{text}'; use int8 or fp8.", option="precision") from None

    @property
    def label(self) -> str:
        """How pages and sentences name it: 'INT8', 'FP8'."""
        return self.value.upper()


@dataclass(frozen=True)
class RangeOverride:
    """A custom calibration range for one tensor (TensorQuantOverrides rmin/rmax)."""

    tensor: str
    min: float
    max: float

    @classmethod
    def parse(cls, text: str) -> RangeOverride:
        """Parses `TENSOR=MIN,MAX`."""
        name, sep, rest = text.rpartition("=")
        parts = rest.split(",")
        try:
            lo, hi = (float(p) for p in parts) if len(parts) == 2 else (math.nan, math.nan)
        except ValueError:
            lo = hi = math.nan
        if not sep or not name or not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
            raise ConfigError(f"The range '{text}' is not of the form TENSOR=MIN,MAX with finite MIN < MAX, e.g. conv1_out=-4,4.")
        return cls(name, lo, hi)

    def __str__(self) -> str:
        """TENSOR=MIN,MAX with each bound in the fewest digits that read back as the same float (config.json and cache
        keys keep it: `:g`'s six digits made 123456.4 and 123456.0 the same range)."""
        return f"{self.tensor}={_exact(self.min)},{_exact(self.max)}"


def _exact(x: float) -> str:
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def check_percentile(p: float | str, option: str = "percentile") -> float:
    """A calibration percentile as a number, or one sentence (naming `option`) where it is outside (0, 100]."""
    value = float(p)
    if not 0 < value <= 100:
        raise ConfigError(f"The percentile {p} is outside (0, 100]; use e.g. 99.99 or 99.999.", option=option)
    return value


@dataclass(frozen=True)
class QuantConfig:
    calibration: CalibrationMethod = CalibrationMethod.MINMAX
    op_types: tuple[str, ...] = TRT_INT8_OP_TYPES
    fallback: frozenset[str] = field(default_factory=frozenset)
    fallback_precision: FallbackPrecision = FallbackPrecision.FP16
    ranges: tuple[RangeOverride, ...] = ()
    percentile: float = 99.999
    precision: Precision = Precision.INT8

    def __post_init__(self) -> None:
        if not self.op_types:
            raise ConfigError("No op types to quantize were given; name at least one, e.g. Conv.")
        check_percentile(self.percentile)

    def with_fallback(self, nodes, precision: FallbackPrecision | None = None) -> QuantConfig:
        return replace(self, fallback=frozenset(nodes), fallback_precision=precision or self.fallback_precision)

    def to_dict(self) -> dict:
        return {
            "calibration": self.calibration.value,
            "op_types": list(self.op_types),
            "fallback": in_name_order(self.fallback),
            "fallback_precision": self.fallback_precision.value,
            "ranges": [str(r) for r in self.ranges],
            "percentile": self.percentile,
            "precision": self.precision.value,
        }

    @classmethod
    def from_dict(cls, d: dict) -> QuantConfig:
        return cls(
            calibration=CalibrationMethod.parse(d["calibration"]),
            op_types=tuple(d["op_types"]),
            fallback=frozenset(d.get("fallback", ())),
            fallback_precision=FallbackPrecision.parse(d.get("fallback_precision", "fp16")),
            ranges=tuple(RangeOverride.parse(r) for r in d.get("ranges", ())),
            percentile=float(d.get("percentile", 99.999)),
            precision=Precision.parse(d.get("precision", "int8")),
        )
