"""On-disk cache of each batch's inputs and reference tensors, so a rebuild runs only the candidate.

One raw file per batch plus a JSON index of (tensor -> offset, shape, dtype); reading memory-maps it, so a
rebuild touches one batch at a time. Inputs are always kept; reference tensors only while the cache
stays under its byte budget (past it, a rebuild recomputes the reference). The budget is QUANTSCOPE_CACHE_MB
(default 4096), never more than half of what the disk has free beyond a 1 GiB reserve: a cache must not fill a
shared machine's disk."""

from __future__ import annotations

import json
import os
import queue
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from engine.errors import ConfigError

__all__ = ["ReferenceCache", "DEFAULT_CACHE_BYTES", "MB", "configured_cache_bytes", "disk_budget"]

MB = 1024**2
DEFAULT_CACHE_BYTES = 4096 * MB
DISK_RESERVE_BYTES = 1024 * MB


def configured_cache_bytes() -> int:
    """The cache budget from QUANTSCOPE_CACHE_MB (megabytes; 0 keeps only the inputs)."""
    raw = os.environ.get("QUANTSCOPE_CACHE_MB", "").strip()
    if not raw:
        return DEFAULT_CACHE_BYTES
    if not raw.isdigit():
        raise ConfigError(f"QUANTSCOPE_CACHE_MB is {raw[:40]!r}, not a whole number of megabytes; set it to e.g. 4096, "
                          "or 0 to cache only the inputs.")
    return int(raw) * MB


def disk_budget(folder: Path, requested: int) -> int:
    """`requested`, lowered to half of the disk's free space beyond DISK_RESERVE_BYTES."""
    free = shutil.disk_usage(folder).free
    return max(0, min(requested, (free - DISK_RESERVE_BYTES) // 2))


class ReferenceCache:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    # ---------------------------------------------------------------- writing
    def reset(self, inputs_only: bool = False, budget: int = DEFAULT_CACHE_BYTES) -> None:
        """inputs_only: keep just the inputs (device backends recompute the reference faster than disk reads it).
        budget: bytes of reference tensors to keep at most (lowered further by disk_budget)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self._batches = 0
        self._bytes = 0
        self._budget = disk_budget(self.folder, budget)
        self._with_reference = not inputs_only
        # Writes overlap with inference: a writer thread drains a short queue (bounded memory).
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._writer = threading.Thread(target=self._drain, name="quantscope-cache-writer", daemon=True)
        self._writer.start()

    def _drain(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                if self._error is None:
                    item()
            except BaseException as err:  # noqa: BLE001 - re-raised in finish()
                self._error = err

    def _join(self) -> None:
        self._queue.put(None)
        self._writer.join()
        if self._error is not None:
            raise self._error  # as raised (a full disk keeps its errno, so the user is told what to free)

    def append(self, inputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
        ref_bytes = sum(a.nbytes for a in reference.values())
        if self._with_reference and self._bytes + ref_bytes > self._budget:
            self._with_reference = False
            for k in range(self._batches):  # keep the cache consistent: all batches or none
                self._queue.put(lambda k=k: self._rewrite_inputs_only(k))
        arrays = {f"in:{k}": v for k, v in inputs.items()}
        if self._with_reference:
            arrays.update({f"ref:{k}": v for k, v in reference.items()})
            self._bytes += ref_bytes
        self._queue.put(lambda k=self._batches, a=arrays: self._write(k, a))
        self._batches += 1

    def finish(self, sample_count: int) -> None:
        self._join()
        meta = {"batches": self._batches, "with_reference": self._with_reference, "samples": sample_count,
                "budget_bytes": self._budget}
        tmp = self.folder / "meta.json.tmp"
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self.folder / "meta.json")

    def _write(self, k: int, arrays: dict[str, np.ndarray]) -> None:
        index, offset = {}, 0
        tmp = self.folder / f"batch_{k:05d}.bin.tmp"
        with open(tmp, "wb") as fh:
            for name, arr in arrays.items():
                a = np.ascontiguousarray(arr)
                fh.write(memoryview(a).cast("B"))
                index[name] = [offset, list(a.shape), a.dtype.str]
                offset += a.nbytes
        os.replace(tmp, self.folder / f"batch_{k:05d}.bin")
        (self.folder / f"batch_{k:05d}.json").write_text(json.dumps(index))

    def _rewrite_inputs_only(self, k: int) -> None:
        arrays = {n: a.copy() for n, a in self._read(k).items() if n.startswith("in:")}
        self._write(k, arrays)

    # ---------------------------------------------------------------- reading
    @property
    def meta(self) -> dict | None:
        p = self.folder / "meta.json"
        return json.loads(p.read_text()) if p.is_file() else None

    @property
    def complete(self) -> bool:
        return self.meta is not None

    @property
    def has_reference(self) -> bool:
        m = self.meta
        return bool(m and m["with_reference"])

    def _read(self, k: int) -> dict[str, np.ndarray]:
        index = json.loads((self.folder / f"batch_{k:05d}.json").read_text())
        path = self.folder / f"batch_{k:05d}.bin"
        if path.stat().st_size == 0:
            return {name: np.zeros(shape, dtype) for name, (_, shape, dtype) in index.items()}
        mm = np.memmap(path, mode="r", dtype=np.uint8)
        out = {}
        for name, (offset, shape, dtype) in index.items():
            dt = np.dtype(dtype)
            count = int(np.prod(shape)) if shape else 1
            out[name] = mm[offset : offset + count * dt.itemsize].view(dt).reshape(shape)
        return out

    def batches(self) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """Yields (inputs, reference tensors) per batch; reference is empty when not cached."""
        meta = self.meta
        assert meta is not None, "cache is incomplete"
        for k in range(meta["batches"]):
            arrays = self._read(k)
            yield ({n[3:]: a for n, a in arrays.items() if n.startswith("in:")},
                   {n[4:]: a for n, a in arrays.items() if n.startswith("ref:")})
