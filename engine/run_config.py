"""A run's settings, one source of truth: `compare` writes config.json, every rebuild rewrites it with what it
changed, and rebuild, sensitivity, autofallback and latency read it. A rebuild flag left out keeps the run's current
value (the CLI and the dashboard share `RunConfig.updated`). The backend is stored as resolved, so a before/after
never straddles two backends without saying so."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from engine.data.images import ImagePreprocess
from engine.errors import RunFolderError
from engine.quantize.config import FallbackPrecision, QuantConfig, RangeOverride
from engine.settings import DEFAULT_MEMORY_MB, MB

__all__ = ["RunConfig", "DEFAULT_SCREEN_SAMPLES", "CONFIG_VERSION"]

CONFIG_VERSION = 2
DEFAULT_SCREEN_SAMPLES = 32


@dataclass(frozen=True)
class RunConfig:
    model: str  # the model's file name (what the user knows it by)
    batch_size: int
    requested_provider: str  # what was asked: auto | cpu | cuda | tensorrt
    provider: str  # what it resolved to (cpu | cuda | tensorrt); every later step of the run uses this
    backend: str  # e.g. onnxruntime-cpu
    quant: QuantConfig
    samples: int
    calibration_samples: int
    has_labels: bool
    cache_bytes: int
    memory_bytes: int
    screen_samples: int = DEFAULT_SCREEN_SAMPLES  # the ranking's probes run on this many samples (0: no ranking probes)
    images: ImagePreprocess | None = None  # how image folders were turned into arrays (for the equivalent command)
    model_sha256: str = ""
    data_sha256: str = ""  # the compared samples' content digest ("": not known cheaply, e.g. an image folder)
    cache_auto: bool = False  # the batch cache keeps reference tensors only where recomputing them costs more

    def updated(self, *, fallback=None, ranges: tuple[RangeOverride, ...] | None = None,
                fallback_precision: FallbackPrecision | None = None, provider: str | None = None,
                backend: str | None = None) -> RunConfig:
        """The settings of a rebuild: every argument left as None keeps the run's current value."""
        quant = self.quant
        if fallback is not None or fallback_precision is not None:
            quant = quant.with_fallback(quant.fallback if fallback is None else fallback, fallback_precision)
        if ranges is not None:
            quant = replace(quant, ranges=tuple(ranges))
        return replace(self, quant=quant, provider=provider or self.provider, backend=backend or self.backend)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["quant"] = self.quant.to_dict()
        d["images"] = None if self.images is None else {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.images).items()}
        return {"version": CONFIG_VERSION, **d}

    @classmethod
    def from_dict(cls, d: dict, where: Path | str = "config.json") -> RunConfig:
        try:
            if d.get("version", 1) < 2:  # written before the config held the resolved backend
                provider = d["provider"] if d["provider"] != "auto" else "cpu"
                return cls(model=d["model"], batch_size=int(d["batch_size"]), requested_provider=d["provider"], provider=provider,
                           backend=f"onnxruntime-{provider}" if provider in ("cpu", "cuda") else "tensorrt",
                           quant=QuantConfig.from_dict(d["quant"]), samples=int(d["samples"]),
                           calibration_samples=int(d.get("calibration_samples", d["samples"])), has_labels=bool(d.get("has_labels")),
                           cache_bytes=int(d.get("cache_bytes", 0)), memory_bytes=int(d.get("memory_bytes", DEFAULT_MEMORY_MB * MB)))
            images = d.get("images")
            return cls(model=d["model"], batch_size=int(d["batch_size"]), requested_provider=d["requested_provider"],
                       provider=d["provider"], backend=d["backend"], quant=QuantConfig.from_dict(d["quant"]),
                       samples=int(d["samples"]), calibration_samples=int(d["calibration_samples"]), has_labels=bool(d["has_labels"]),
                       cache_bytes=int(d["cache_bytes"]), memory_bytes=int(d["memory_bytes"]), screen_samples=int(d["screen_samples"]),
                       images=None if images is None else ImagePreprocess(**{k: tuple(v) if isinstance(v, list) else v for k, v in images.items()}),
                       model_sha256=d.get("model_sha256", ""),
                       data_sha256=d.get("data_sha256", ""), cache_auto=bool(d.get("cache_auto", False)))
        except (KeyError, TypeError, ValueError):
            raise RunFolderError(f"{where} is not a QuantScope run configuration; run `quantscope compare` again for this folder.") from None
