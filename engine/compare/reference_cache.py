"""On-disk cache of each batch's inputs and reference tensors, so a rebuild runs only the candidate.

One raw file per batch plus a JSON index of (tensor -> offset, shape, dtype); reading memory-maps it, so a
rebuild touches one batch at a time. Inputs are always kept; reference tensors only while the cache
stays under its byte budget (past it, a rebuild recomputes the reference). The budget is Settings.cache_bytes
(QUANTSCOPE_CACHE_MB, default 4096 MB), never more than half of what the disk has free beyond a 1 GiB reserve: a cache must not fill a
shared machine's disk."""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from engine.settings import DEFAULT_CACHE_MB, MB

__all__ = ["ReferenceCache", "disk_budget"]

DISK_RESERVE_BYTES = 1024 * MB


def disk_budget(folder: Path, requested: int) -> int:
    """`requested`, lowered to half of the disk's free space beyond DISK_RESERVE_BYTES."""
    free = shutil.disk_usage(folder).free
    return max(0, min(requested, (free - DISK_RESERVE_BYTES) // 2))


class ReferenceCache:
    def __init__(self, folder: Path, budget: int = DEFAULT_CACHE_MB * MB) -> None:
        """budget: bytes of reference tensors a new cache keeps at most (lowered further by disk_budget)."""
        self.folder = folder
        self.budget = budget

    # ---------------------------------------------------------------- writing
    def reset(self, inputs_only: bool = False, why: str | None = None) -> None:
        """inputs_only: keep just the inputs (device backends recompute the reference faster than disk reads it; a
        comparison in several passes never holds every tensor of a batch at once); `why` says which, for the summary."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self._batches = 0
        self._batch_of: list[int] = []
        self._bytes = 0
        self._budget = disk_budget(self.folder, self.budget)
        self._with_reference = not inputs_only
        self._finals: set[str] = set()  # "ref:<output>" names kept whatever the budget
        self._why = why if inputs_only else None
        # Writes overlap with inference: a writer thread drains a one-batch queue, so the cache holds at most
        # CACHE_COPIES batches of reference tensors (queued and being written) beside the loop's own (see memory_plan).
        self._queue: queue.Queue = queue.Queue(maxsize=1)
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
            del item  # the batch's arrays go now, not when the next one arrives

    def _join(self) -> None:
        self.stop_writer()
        if self._error is not None:
            raise self._error  # as raised (a full disk keeps its errno, so the user is told what to free)

    def stop_writer(self) -> None:
        """Waits for the queued writes and ends the writer thread; safe to call again (a cancelled comparison calls it
        on its way out, so no thread is left waiting with a batch's tensors)."""
        writer = getattr(self, "_writer", None)
        if writer is not None and writer.is_alive():
            self._queue.put(None)
            writer.join()

    def append(self, inputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], batch: int | None = None,
               finals: dict[str, np.ndarray] | None = None) -> None:
        """One entry: a batch, or a part of one (a micro-batch); `batch` numbers the batch it belongs to. finals: the
        reference's final outputs, kept even where the cache keeps only inputs (they are small, and probes read them:
        without them a ranking on a GPU opened a session of the reference only to compute them again)."""
        self._batch_of.append(self._batches if batch is None else batch)
        finals = {f"ref:{k}": v for k, v in (finals or {}).items()}
        self._finals.update(finals)
        ref_bytes = sum(a.nbytes for a in reference.values())
        if self._with_reference and self._bytes + ref_bytes > self._budget:
            self._with_reference, self._why = False, "budget"
            for k in range(self._batches):  # keep the cache consistent: all batches or none
                self._queue.put(lambda k=k: self._rewrite_inputs_only(k))
        arrays = {f"in:{k}": v for k, v in inputs.items()} | finals
        if self._with_reference:
            arrays.update({f"ref:{k}": v for k, v in reference.items()})
            self._bytes += ref_bytes
        self._queue.put(lambda k=self._batches, a=arrays: self._write(k, a))
        self._batches += 1

    def finish(self, sample_count: int) -> None:
        self._join()
        meta = {"batches": self._batches, "with_reference": self._with_reference, "samples": sample_count,
                "budget_bytes": self._budget, "batch_of": self._batch_of,
                "inputs_only_because": self._why,
                "generation": secrets.token_hex(8)}  # which batches these are: results measured on them name it
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
        arrays = {n: a.copy() for n, a in self._read(k).items() if n.startswith("in:") or n in self._finals}
        self._write(k, arrays)

    # ---------------------------------------------------------------- reading
    @property
    def meta(self) -> dict | None:
        p = self.folder / "meta.json"
        return json.loads(p.read_text()) if p.is_file() else None

    @property
    def generation(self) -> str | None:
        """A name for this cache's batches, new with every cache written (None: none, or written before it was kept)."""
        m = self.meta
        return m.get("generation") if m else None

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
        """Yields (inputs, reference tensors) per entry; reference is empty when not cached."""
        for inputs, ref, _ in self.parts():
            yield inputs, ref

    def parts(self) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]]:
        """Yields (inputs, reference tensors, batch number) per entry: an entry is a batch or a part of one."""
        meta = self.meta
        assert meta is not None, "cache is incomplete"
        batch_of = meta.get("batch_of") or list(range(meta["batches"]))
        for k in range(meta["batches"]):
            arrays = self._read(k)
            yield ({n[3:]: a for n, a in arrays.items() if n.startswith("in:")},
                   {n[4:]: a for n, a in arrays.items() if n.startswith("ref:")}, batch_of[k])
