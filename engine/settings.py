"""Settings that come from the environment, read once at the edge (the CLI, the dashboard) into a typed value and
passed down; nothing deeper in the engine reads environment variables.

    QUANTSCOPE_RUNS_ROOT      run index and dashboard workspaces (default ~/.quantscope/runs)
    QUANTSCOPE_CACHE_MB       batch cache budget per run folder, megabytes (0 keeps only inputs; unset: 4096, and the
                              reference's tensors only for models that compute them slower than a disk round trip)
    QUANTSCOPE_MEMORY_MB      peak memory the layerwise comparison may hold in observed tensors, its batch cache's
                              copies included (default 1024)
    QUANTSCOPE_WORKERS        dashboard jobs run at once (default: CPU cores)
    QUANTSCOPE_DEVICE_LIBRARY cupy | torch: which library reduces tensors on the GPU (default: cupy, else torch)"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.errors import ConfigError

__all__ = ["Settings", "MB", "DEFAULT_CACHE_MB", "DEFAULT_MEMORY_MB"]

MB = 1024**2
DEFAULT_CACHE_MB = 4096
DEFAULT_MEMORY_MB = 1024  # with ~0.5 GB of runtime and models: a compare stays under 1.5 GB, in a 4 GB container beside the app


def _whole_mb(env: Mapping[str, str], name: str, default: int, example: str, zero_means: str) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ConfigError(f"{name} is {raw[:40]!r}, not a whole number of megabytes; set it to e.g. {example}, or 0 {zero_means}.")
    return int(raw)


@dataclass(frozen=True)
class Settings:
    runs_root: Path
    cache_bytes: int
    memory_bytes: int
    workers: int
    device_library: str | None  # forced library, or None to pick the first importable
    cache_auto: bool = False  # QUANTSCOPE_CACHE_MB unset: reference tensors cached only where recomputing costs more

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        workers_raw = env.get("QUANTSCOPE_WORKERS", "").strip()
        if workers_raw and (not workers_raw.isdigit() or int(workers_raw) < 1):
            raise ConfigError(f"QUANTSCOPE_WORKERS is {workers_raw[:40]!r}; set it to a whole number of jobs, 1 or more.")
        library = env.get("QUANTSCOPE_DEVICE_LIBRARY", "").strip() or None
        if library not in (None, "cupy", "torch"):
            raise ConfigError(f"QUANTSCOPE_DEVICE_LIBRARY is {library[:40]!r}; set it to cupy or torch, or leave it unset.")
        memory_mb = _whole_mb(env, "QUANTSCOPE_MEMORY_MB", DEFAULT_MEMORY_MB, "1024", "for the smallest possible passes")
        return cls(
            runs_root=Path(env.get("QUANTSCOPE_RUNS_ROOT") or Path.home() / ".quantscope" / "runs"),
            cache_bytes=_whole_mb(env, "QUANTSCOPE_CACHE_MB", DEFAULT_CACHE_MB, "4096", "to cache only the inputs") * MB,
            memory_bytes=memory_mb * MB,
            cache_auto=not env.get("QUANTSCOPE_CACHE_MB", "").strip(),
            workers=int(workers_raw) if workers_raw else (os.cpu_count() or 2),
            device_library=library,
        )
