"""Per-tensor reductions on the GPU, with cupy or torch (imported lazily, whichever is present).

For every observed tensor of a batch, the device computes the same quantities as TensorAccumulator.update
(r.r, c.c, r.c, d.d, sum|d|, max|d|, and the relative-error histogram over the same sampled elements),
writes them into one device array, and a single copy per batch brings back only those numbers:
6 scalars and N_BINS counts per tensor, never the tensors."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import numpy as np

from engine.compare.tensor_stats import _SHIFT, N_BINS, SAMPLE_PER_BATCH, _sample_index

__all__ = ["DeviceMath", "device_math", "device_library"]


def device_library() -> str | None:
    for name in ("cupy", "torch"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None


class DeviceMath:
    def __init__(self, library: str) -> None:
        self.library = library
        self.xp = importlib.import_module(library)
        self._idx: dict[int, object] = {}

    def from_dlpack(self, value):
        return self.xp.from_dlpack(value)

    def to_host(self, arr) -> np.ndarray:
        if self.library == "cupy":
            return self.xp.asnumpy(arr)
        return arr.detach().cpu().numpy()

    def _index(self, n: int, like):
        if n not in self._idx:
            host = _sample_index(n, SAMPLE_PER_BATCH).astype(np.int64)
            self._idx[n] = self.xp.asarray(host) if self.library == "cupy" else self.xp.as_tensor(host, device=like.device)
        return self._idx[n]

    def reduce(self, pairs: Sequence[tuple[object, object]]) -> tuple[np.ndarray, np.ndarray]:
        """pairs: (reference, candidate) device arrays. Returns host (T, 6) float64 scalars and (T, N_BINS) counts."""
        xp = self.xp
        cupy = self.library == "cupy"
        f32 = xp.float32
        i32 = xp.int32
        scalars, hists = [], []
        for ref, cand in pairs:
            r = ref.reshape(-1).astype(f32) if cupy else ref.reshape(-1).to(f32)
            c = cand.reshape(-1).astype(f32) if cupy else cand.reshape(-1).to(f32)
            d = c - r
            ad = xp.abs(d)
            n = r.size if cupy else r.numel()
            biggest = ad.max() if n else (xp.zeros((), dtype=f32) if cupy else xp.zeros((), dtype=f32, device=r.device))
            scalars.append(xp.stack([xp.dot(r, r), xp.dot(c, c), xp.dot(r, c), xp.dot(d, d), ad.sum(), biggest]))
            if n > SAMPLE_PER_BATCH:
                idx = self._index(n, r)
                ad_s, ar_s = ad[idx], xp.abs(r[idx])
            else:
                ad_s, ar_s = ad, xp.abs(r)
            rel = ad_s / ar_s
            rel = xp.where(ad_s == 0, xp.zeros_like(rel), rel)
            bins = rel.view(i32) >> _SHIFT
            hists.append(xp.bincount(bins if cupy else bins.to(xp.int64), minlength=N_BINS))
        if not pairs:
            return np.zeros((0, 6)), np.zeros((0, N_BINS), np.int64)
        return self.to_host(xp.stack(scalars)).astype(np.float64), self.to_host(xp.stack(hists)).astype(np.int64)


def device_math() -> DeviceMath | None:
    lib = device_library()
    return DeviceMath(lib) if lib else None
