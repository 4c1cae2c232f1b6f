"""A fallback target on the final outputs: `cosine=X`, `snr_db=Y`, `top1_agreement=Z`, `accuracy_drop=D` or, for a CTC
text recogniser, `text_agreement=T` (the share of samples that must read the same text as FP32)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.errors import ConfigError

__all__ = ["Target", "METRICS"]

METRICS = ("cosine", "snr_db", "top1_agreement", "accuracy_drop", "text_agreement")
WORDS = {"cosine": ("final-output cosine", ""), "snr_db": ("final-output SNR", " dB"),
         "top1_agreement": ("top-1 agreement with FP32", ""), "accuracy_drop": ("accuracy drop", ""),
         "text_agreement": ("text read the same as FP32", "")}  # metric -> (name, unit) in sentences


@dataclass(frozen=True)
class Target:
    metric: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Target:
        name, sep, raw = text.partition("=")
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not sep or name not in METRICS or not math.isfinite(value):
            raise ConfigError(f"The target '{text}' is not METRIC=VALUE with METRIC one of {', '.join(METRICS)}, e.g. snr_db=30.")
        return cls(name, value)

    @property
    def lower_is_better(self) -> bool:
        return self.metric == "accuracy_drop"

    def score(self, value: float | None) -> float:
        """Larger is better, whatever the metric."""
        if value is None or math.isnan(value):
            return -math.inf
        return -value if self.lower_is_better else value

    def met(self, value: float | None) -> bool:
        return self.score(value) >= self.score(self.value)

    def value_text(self, value: float | None) -> str:
        """'final-output SNR 15.94 dB': a value of this target's metric in words (the search's sentences read
        'reaches snr_db=15.94' to a browser user)."""
        name, unit = WORDS[self.metric]
        return f"{name} {'not measured' if value is None else format(value, '.4g') + unit}"

    def words(self) -> str:
        """'final-output SNR of at least 25 dB'."""
        name, unit = WORDS[self.metric]
        return f"{name} of {'at most' if self.lower_is_better else 'at least'} {self.value:g}{unit}"

    def __str__(self) -> str:
        return f"{self.metric}={self.value:g}"
