"""A run folder: everything one comparison wrote, and the history of its rebuilds.

    DIR/config.json            the run's settings (RunConfig): written by compare and by every rebuild
    DIR/reference.onnx         the FP32 graph compared (after pre-processing, named nodes)
    DIR/calibration_cache.json ORT's calibration cache: rebuilds re-emit from it, never recalibrate
    DIR/candidate.onnx         the exact Q/DQ model compared, without extra outputs
    DIR/layers.csv, DIR/summary.json
    DIR/ranking.json           the culprit ranking's probes (reused by rebuilds that change only the fallback set)
    DIR/provenance.json        for every node of reference.onnx, the node(s) of the user's file it came from
    DIR/candidate_int8.onnx    the all-INT8 graph of the run's quantization: fallback sets are applied to it by surgery
    DIR/cache/                 inputs and reference tensors per batch (see reference_cache.py)
    DIR/labels.npy             optional
    DIR/history/N/             earlier candidate.onnx, layers.csv, summary.json
Every write goes to a temporary file first and is renamed into place."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
import pandas as pd

from engine.errors import RunFolderError
from engine.model.provenance import Origin
from engine.run_config import RunConfig

__all__ = ["RunFolder", "RESULT_FILES"]

RESULT_FILES = ("candidate.onnx", "layers.csv", "summary.json")


class RunFolder:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __getattr__(self, item: str) -> Path:  # run.reference -> DIR/reference.onnx etc.
        names = {"config": "config.json", "reference": "reference.onnx", "calibration_cache": "calibration_cache.json",
                 "candidate": "candidate.onnx", "layers": "layers.csv", "summary": "summary.json",
                 "cache_dir": "cache", "labels": "labels.npy", "history": "history", "ranking": "ranking.json",
                 "provenance": "provenance.json", "int8_base": "candidate_int8.onnx"}
        if item in names:
            return self.path / names[item]
        raise AttributeError(item)

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunFolderError(f"Cannot create the run folder {self.path} ({err.strerror}); choose a writable --out folder.") from None

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Only one compare or rebuild writes a run folder at a time (another process, or another dashboard session
        with the same workspace link). The OS drops the lock when its process dies, so a crash never leaves it held."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        with open(self.path / ".lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunFolderError(f"Another comparison or rebuild is writing {self.path} right now; wait for it to finish, "
                                     "then run this again.") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def require(self) -> None:
        missing = [p.name for p in (self.config, self.reference, self.calibration_cache) if not p.is_file()]
        if missing:
            raise RunFolderError(f"{self.path} is not a complete QuantScope run folder (missing {', '.join(missing)}); run `quantscope compare ... --out {self.path}` first.")

    def has_results(self) -> bool:
        return all((self.path / f).is_file() for f in RESULT_FILES)

    def archive_results(self) -> int | None:
        """Moves the current results to history/N (N = 1, 2, ...) and returns N."""
        if not self.has_results():
            return None
        self.history.mkdir(exist_ok=True)
        n = 1 + max((int(p.name) for p in self.history.iterdir() if p.name.isdigit()), default=0)
        dest = self.history / str(n)
        tmp = self.history / f".{n}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for f in RESULT_FILES:
            shutil.copy2(self.path / f, tmp / f)
        os.replace(tmp, dest)
        return n

    def history_entries(self) -> list[Path]:
        if not self.history.is_dir():
            return []
        return sorted((p for p in self.history.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))

    # ---------------------------------------------------------------- atomic writes
    def write_text(self, target: Path, text: str) -> None:
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, target)

    def write_bytes(self, target: Path, data: bytes) -> None:
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)

    def write_json(self, target: Path, obj) -> None:
        self.write_text(target, json.dumps(obj, indent=2, allow_nan=False) + "\n")

    def write_model(self, target: Path, model: onnx.ModelProto, stored: Path | None = None) -> None:
        """stored: a file that already holds `model` as written (the pre-processing cache's entry): hard-linked where it
        is on the same file system, else copied; cheaper than serializing the model again."""
        tmp = target.with_name(target.name + ".tmp")
        tmp.unlink(missing_ok=True)
        if stored is not None:
            try:
                os.link(stored, tmp)
            except OSError:
                try:
                    shutil.copyfile(stored, tmp)
                except OSError:
                    stored = None
        if stored is None:
            onnx.save(model, tmp)
        os.replace(tmp, target)

    def write_frame(self, target: Path, frame: pd.DataFrame) -> None:
        tmp = target.with_name(target.name + ".tmp")
        frame.to_csv(tmp, index=False)
        os.replace(tmp, target)

    def read_config(self) -> RunConfig:
        return RunConfig.from_dict(self.read_json(self.config), self.config)

    def write_config(self, config: RunConfig) -> None:
        self.write_json(self.config, config.to_dict())

    def read_provenance(self) -> dict[str, tuple[Origin, ...]]:
        """Empty for a run folder written before provenance existed."""
        if not self.provenance.is_file():
            return {}
        return {k: tuple(Origin.from_dict(o) for o in v) for k, v in self.read_json(self.provenance).items()}

    def write_provenance(self, prov: dict[str, tuple[Origin, ...]]) -> None:
        self.write_json(self.provenance, {k: [o.to_dict() for o in v] for k, v in prov.items()})

    def read_json(self, target: Path) -> dict:
        try:
            return json.loads(target.read_text())
        except (OSError, json.JSONDecodeError):
            raise RunFolderError(f"{target} is missing or unreadable; run `quantscope compare` again for this folder.") from None
