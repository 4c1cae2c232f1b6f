"""Re-iterable batch sources: a source is a factory of batches, never a one-shot reader."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from engine.errors import DataError

__all__ = ["Batch", "BatchSource", "ArraySource"]

Batch = dict[str, np.ndarray]


@runtime_checkable
class BatchSource(Protocol):
    """What the engine needs from data: names, a sample count, and fresh batches on every call."""

    @property
    def input_names(self) -> tuple[str, ...]: ...

    @property
    def num_samples(self) -> int: ...

    def sample_spec(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Per input: the shape of one sample (without the sample axis) and the dtype name."""
        ...

    def batches(self, batch_size: int) -> Iterator[Batch]: ...

    def content_digest(self) -> str | None:
        """A digest of every sample as the model sees it, where that costs much less than a pass of the model (None:
        not known cheaply). Equal digests mean equal data: a calibration on it can be reused."""
        ...


@dataclass(frozen=True)
class ArraySource:
    """Samples held in memory, one array per input, axis 0 = samples."""

    arrays: Mapping[str, np.ndarray]
    description: str = "data"
    _n: int = field(init=False, repr=False, default=0)
    _digest: str = field(init=False, repr=False, default="")

    def __post_init__(self) -> None:
        if not self.arrays:
            raise DataError(f"{_cap(self.description)} contains no arrays; it needs one array per model input.")
        counts = {k: (v.shape[0] if v.ndim else 0) for k, v in self.arrays.items()}
        n = next(iter(counts.values()))
        if any(c != n for c in counts.values()):
            listing = ", ".join(f"'{k}': {c}" for k, c in counts.items())
            raise DataError(
                f"The inputs in the {self.description} have different sample counts ({listing}); "
                "every input needs the same number of samples along axis 0."
            )
        if n == 0:
            raise DataError(f"{_cap(self.description)} contains zero samples; provide at least one sample per input.")
        object.__setattr__(self, "_n", int(n))

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.arrays)

    @property
    def num_samples(self) -> int:
        return self._n

    def sample_spec(self) -> dict[str, tuple[tuple[int, ...], str]]:
        return {k: (tuple(v.shape[1:]), v.dtype.name) for k, v in self.arrays.items()}

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for start in range(0, self._n, batch_size):
            yield {k: np.ascontiguousarray(v[start : start + batch_size]) for k, v in self.arrays.items()}

    def content_digest(self) -> str | None:
        if not self._digest:  # once: the calibration store and the run's record both ask
            h = hashlib.sha256()
            for name, arr in sorted(self.arrays.items()):
                h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
                h.update(memoryview(np.ascontiguousarray(arr)).cast("B"))
            object.__setattr__(self, "_digest", h.hexdigest())
        return self._digest


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]
