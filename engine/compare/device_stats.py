"""Per-tensor reductions on the GPU, with cupy or torch (imported lazily, whichever is present).

For every observed tensor of a batch, the device computes the same quantities as TensorAccumulator.update
(r.r, c.c, r.c, d.d, sum|d|, max|d|, and the relative-error histogram over the same sampled elements),
writes them into one device array, and a single copy per batch brings back only those numbers:
6 scalars and N_BINS counts per tensor, never the tensors."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence

import numpy as np

from engine.compare.tensor_stats import _SHIFT, N_BINS, SAMPLE_PER_BATCH, _sample_index

__all__ = ["DeviceMath", "device_math", "device_library"]


def device_library() -> str | None:
    """cupy, else torch; QUANTSCOPE_DEVICE_LIBRARY=torch|cupy picks one explicitly."""
    forced = os.environ.get("QUANTSCOPE_DEVICE_LIBRARY")
    if forced:
        return forced if importlib.util.find_spec(forced) is not None else None
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


_KERNELS = r"""
extern "C" __global__ void qs_stats(const float* __restrict__ r, const float* __restrict__ c, long long n,
                                    double* out, unsigned int* maxbits) {
    double rr = 0, cc = 0, rc = 0, dd = 0, sa = 0;
    float mx = 0.f;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)blockDim.x * gridDim.x) {
        float a = r[i], b = c[i], d = b - a, ad = fabsf(d);
        rr += (double)a * a; cc += (double)b * b; rc += (double)a * b; dd += (double)d * d; sa += ad;
        mx = fmaxf(mx, ad);
    }
    __shared__ double s[5][256];
    __shared__ float m[256];
    int t = threadIdx.x;
    s[0][t] = rr; s[1][t] = cc; s[2][t] = rc; s[3][t] = dd; s[4][t] = sa; m[t] = mx;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (t < k) {
            for (int q = 0; q < 5; ++q) s[q][t] += s[q][t + k];
            m[t] = fmaxf(m[t], m[t + k]);
        }
        __syncthreads();
    }
    if (t == 0) {
        for (int q = 0; q < 5; ++q) atomicAdd(&out[q], s[q][0]);
        atomicMax(maxbits, __float_as_uint(m[0]));  // |d| >= 0: the bit pattern orders like the value
    }
}

extern "C" __global__ void qs_hist(const float* __restrict__ r, const float* __restrict__ c, const long long* __restrict__ idx,
                                   long long m, int use_idx, int shift, unsigned int* hist) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < m; i += (long long)blockDim.x * gridDim.x) {
        long long j = use_idx ? idx[i] : i;
        float ad = fabsf(c[j] - r[j]);
        float rel = ad == 0.f ? 0.f : ad / fabsf(r[j]);
        atomicAdd(&hist[__float_as_uint(rel) >> shift], 1u);
    }
}
"""


class CupyKernels:
    """Two fused kernels a tensor (statistics, sampled histogram), reading ONNX Runtime's device buffers by
    pointer: no DLPack wrapping, no dtype copies, float64 accumulation."""

    THREADS = 256

    def __init__(self) -> None:
        import cupy

        self.cp = cupy
        module = cupy.RawModule(code=_KERNELS)
        self.stats, self.hist = module.get_function("qs_stats"), module.get_function("qs_hist")
        self._idx: dict[int, object] = {}

    def _index(self, n: int):
        if n not in self._idx:
            self._idx[n] = self.cp.asarray(_sample_index(n, SAMPLE_PER_BATCH).astype(np.int64))
        return self._idx[n]

    def reduce(self, pairs: Sequence[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """pairs: (reference pointer, candidate pointer, element count) of float32 device buffers."""
        cp, t = self.cp, self.THREADS
        out = cp.zeros((len(pairs), 5), dtype=cp.float64)
        maxbits = cp.zeros(len(pairs), dtype=cp.uint32)
        hist = cp.zeros((len(pairs), N_BINS), dtype=cp.uint32)
        dummy = self._index(SAMPLE_PER_BATCH + 1)
        for k, (rp, cpnt, n) in enumerate(pairs):
            rp, cpnt = np.uint64(rp), np.uint64(cpnt)
            blocks = max(1, min(1024, -(-n // t)))
            self.stats((blocks,), (t,), (rp, cpnt, np.int64(n), out[k], maxbits[k : k + 1]))
            sampled = n > SAMPLE_PER_BATCH
            m = SAMPLE_PER_BATCH if sampled else n
            idx = self._index(n) if sampled else dummy
            self.hist((max(1, min(256, -(-m // t))),), (t,), (rp, cpnt, idx, np.int64(m), np.int32(sampled), np.int32(_SHIFT), hist[k]))
        host_out, host_max, host_hist = out.get(), maxbits.get().view(np.float32), hist.get()
        scalars = np.concatenate([host_out, host_max[:, None].astype(np.float64)], axis=1)
        return scalars, host_hist.astype(np.int64)


def device_math() -> DeviceMath | None:
    lib = device_library()
    return DeviceMath(lib) if lib else None
