"""Where a browser session's runs live: QUANTSCOPE_RUNS_ROOT (default ~/.quantscope/runs)/<session id>/.
File names are generated, never taken from uploads."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["runs_root", "session_dir", "new_run_dir", "save_upload"]

UPLOAD_SUFFIXES = {".onnx", ".npz", ".npy", ".json", ".zip"}


def runs_root() -> Path:
    return Path(os.environ.get("QUANTSCOPE_RUNS_ROOT", Path.home() / ".quantscope" / "runs"))


def session_dir(session_id: str) -> Path:
    d = runs_root() / session_id
    d.mkdir(parents=True, exist_ok=True)
    return d


def new_run_dir(session_id: str, counter: int) -> Path:
    return session_dir(session_id) / f"run_{counter:03d}"


def save_upload(session_id: str, role: str, original_name: str, data: bytes) -> Path:
    """Writes an upload as uploads/<role><suffix>; only the suffix of the user's name is kept, and only if known."""
    suffix = Path(original_name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        suffix = ".bin"
    target = session_dir(session_id) / "uploads" / f"{role}{suffix}"
    target.parent.mkdir(exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target
