"""On-disk cache of each batch's inputs and reference tensors, so a rebuild runs only the candidate.

One raw file per batch plus a JSON index of (tensor -> offset, shape, dtype); reading memory-maps it, so a
rebuild touches one batch at a time. Inputs are always kept; reference tensors only while the cache
stays under its byte budget (past it, a rebuild recomputes the reference)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["ReferenceCache", "DEFAULT_CACHE_BYTES"]

DEFAULT_CACHE_BYTES = 4 * 1024**3


class ReferenceCache:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    # ---------------------------------------------------------------- writing
    def reset(self, inputs_only: bool = False) -> None:
        """inputs_only: keep just the inputs (device backends recompute the reference faster than disk reads it)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self._batches = 0
        self._bytes = 0
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
            raise OSError(f"writing the batch cache failed: {self._error}")

    def append(self, inputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], budget: int = DEFAULT_CACHE_BYTES) -> None:
        ref_bytes = sum(a.nbytes for a in reference.values())
        if self._with_reference and self._bytes + ref_bytes > budget:
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
        meta = {"batches": self._batches, "with_reference": self._with_reference, "samples": sample_count}
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
