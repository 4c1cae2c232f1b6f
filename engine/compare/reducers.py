"""Reducers: (reference, candidate) tensor pairs of one batch -> the sufficient statistics of metrics.py.

One layerwise loop serves every backend; what differs is where the tensors are and so who reduces them:
  HostReducer    numpy arrays on the host, reduced in one pass by a small C kernel (_pairstats.c) on several threads,
                 or chunk by chunk in numpy where it was not built
  DeviceReducer  ONNX Runtime OrtValues in GPU memory, reduced there by two fused CUDA kernels a tensor (cupy), or
                 by generic cupy/torch operations through DLPack; one small copy a batch brings back 6 scalars and
                 N_BINS histogram counts per tensor, never the tensors.
Both return (T, 6) float64 statistics in STAT_FIELDS order, (T, N_BINS) int64 counts, and the T element counts."""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np

from engine.compare.metrics import N_BINS, SAMPLE_PER_BATCH, SHIFT, RelErrHistogram, sample_index, sample_stride

__all__ = ["Reducer", "HostReducer", "HOST_KERNEL", "DeviceReducer", "host_stats", "host_segment_sums", "device_library", "device_reducer",
           "contain_kernel_cache", "KERNEL_CACHE"]


class Reducer(Protocol):
    def shape(self, value) -> tuple[int, ...]: ...

    def to_host(self, value) -> np.ndarray: ...

    def reduce(self, pairs: Sequence[tuple[object, object]], keys: Sequence[str] | None = None
               ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(T, 6) statistics, (T, N_BINS) histogram counts (None: kept by the reducer, see take_counts), T sizes.
        keys: the tensors' names, in the order of `pairs`."""
        ...

    def take_counts(self) -> dict[str, np.ndarray]:
        """Histogram counts the reducer kept instead of returning them per batch, by tensor name."""
        ...


CHUNK = 1 << 16  # elements per step of the numpy reduction: a chunk of both tensors and their difference stays in cache
# sum(|d|) as a BLAS dot product: three times faster than ndarray.sum; it adds in float32 lanes within a chunk (like the
# dot products beside it), about 1e-6 relative for 64K elements, and chunks add in float64
_ONES = np.ones(CHUNK, np.float32)

try:  # the one-pass C kernel (setup.py builds it where a compiler is at hand; optional)
    from engine.compare import _pairstats
except ImportError:
    _pairstats = None

HOST_KERNEL = "compiled" if _pairstats is not None else "numpy"  # what reduces on the host (quantscope doctor says)
_NO_COUNTS = np.zeros(0, np.int64)


def host_stats(ref: np.ndarray, cand: np.ndarray, scratch: np.ndarray | None = None,
               histogram: bool = True, kernel: str = HOST_KERNEL) -> tuple[np.ndarray, np.ndarray | None, int]:
    """One pair on the host: (the 6 sums of STAT_FIELDS, the histogram counts of the strided sample or None, size).
    kernel: "compiled" (engine/compare/_pairstats.c, one pass, the GIL released: 2-3x the numpy path on one core) or
    "numpy" (chunk by chunk); both float32 arithmetic with float64 sums across blocks, float64 where float32
    overflows, and the same sampled elements (sample_index, which the device kernels read too)."""
    r = np.ascontiguousarray(ref, dtype=np.float32).reshape(-1)
    c = np.ascontiguousarray(cand, dtype=np.float32).reshape(-1)
    n = r.size
    if kernel == "compiled":
        step = sample_stride(n, SAMPLE_PER_BATCH)
        counts = np.zeros(N_BINS, np.int64) if histogram else _NO_COUNTS
        stats = np.array(_pairstats.pair_stats(r, c, step, min(n, step * SAMPLE_PER_BATCH), SHIFT, counts))
        return stats, counts if histogram else None, n
    return _numpy_stats(r, c, scratch, histogram)


def _numpy_stats(r: np.ndarray, c: np.ndarray, scratch: np.ndarray | None,
                 histogram: bool) -> tuple[np.ndarray, np.ndarray | None, int]:
    """host_stats without the compiled kernel: chunk by chunk, so each chunk is read from memory once. The histogram's
    strided sample is gathered from each chunk while it is in cache."""
    n = r.size
    buf = scratch if scratch is not None and scratch.size >= min(n, CHUNK) else np.empty(min(n, CHUNK), np.float32)
    step = sample_stride(n, SAMPLE_PER_BATCH)
    end = min(n, step * SAMPLE_PER_BATCH)  # past it, no element is sampled
    abs_d = np.empty(-(-end // step) if histogram else 0, np.float32)
    abs_r = np.empty_like(abs_d)
    taken = 0
    rr = cc = rc = dd = sum_abs = 0.0
    max_abs = 0.0
    dot = np.dot
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(0, n, CHUNK):
            a, b = r[i : i + CHUNK], c[i : i + CHUNK]
            d = np.subtract(b, a, out=buf[: a.size])
            rr += float(dot(a, a))
            cc += float(dot(b, b))
            rc += float(dot(a, b))
            dd += float(dot(d, d))
            np.abs(d, out=d)
            sum_abs += float(dot(d, _ONES[: d.size]))
            max_abs = max(max_abs, float(d.max()))
            if histogram and i < end:  # the sampled elements of this chunk: indices k * step in [i, min(i + CHUNK, end))
                first = -i % step
                last = min(a.size, end - i)
                got = len(range(first, last, step))
                abs_d[taken : taken + got] = d[first:last:step]
                np.abs(a[first:last:step], out=abs_r[taken : taken + got])
                taken += got
        if not all(math.isfinite(v) for v in (rr, cc, rc, dd, sum_abs)):  # float32 overflow (activations ~1e19): float64
            r64, c64 = r.astype(np.float64), c.astype(np.float64)
            d64 = c64 - r64
            rr, cc, rc, dd = (float(np.dot(x, y)) for x, y in ((r64, r64), (c64, c64), (r64, c64), (d64, d64)))
            sum_abs, max_abs = float(np.abs(d64).sum()), float(np.abs(d64).max())
    stats = np.array([rr, cc, rc, dd, sum_abs, max_abs if n else 0.0])
    if not histogram:
        return stats, None, n
    return stats, RelErrHistogram.bins(abs_d, abs_r), n


def _segment_sums(r, c, segments: int, stack):
    """r.r, c.c, r.c, d.d of each of `segments` equal parts of float64 `c` against `r`: the same operations in numpy, cupy
    and torch."""
    r, c = r.reshape(1, -1), c.reshape(segments, -1)
    d = c - r
    return stack([(r * r).sum(1).repeat(segments), (c * c).sum(1), (c * r).sum(1), (d * d).sum(1)], 1)


def host_segment_sums(ref: np.ndarray, out: np.ndarray, segments: int) -> np.ndarray:
    """[segments, 4]: r.r, c.c, r.c, d.d of each of `segments` equal parts of `out` (along its first axis) against `ref`
    (a tiled run: the same samples once per probe), in float64."""
    return _segment_sums(np.asarray(ref, np.float64), np.asarray(out, np.float64), segments, np.stack)


# Pairs of a batch reduce on up to this many threads with the compiled kernel (it releases the GIL), where the batch's
# pairs hold at least _PARALLEL_ELEMENTS; the runners are idle meanwhile. Measured 1.7-1.9x on the 2-core CPU.
MAX_REDUCE_THREADS = 8
_PARALLEL_ELEMENTS = 1 << 18  # below this many elements in a batch's pairs, one thread: handing work over costs more


def _usable_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class HostReducer:
    def __init__(self, kernel: str = HOST_KERNEL, threads: int | None = None) -> None:
        """kernel: host_stats' kernel; threads: for the compiled kernel (None: the machine's cores, at most
        MAX_REDUCE_THREADS)."""
        self.kernel = kernel
        self.threads = 1 if kernel != "compiled" else threads or min(MAX_REDUCE_THREADS, _usable_cores())
        self._scratch = np.empty(CHUNK, np.float32)
        self._pool: ThreadPoolExecutor | None = None

    def shape(self, value: np.ndarray) -> tuple[int, ...]:
        return tuple(value.shape)

    def to_host(self, value: np.ndarray) -> np.ndarray:
        return value

    def reduce(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]], keys: Sequence[str] | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        stats = np.zeros((len(pairs), 6))
        counts = np.zeros((len(pairs), N_BINS), dtype=np.int64)
        sizes = np.zeros(len(pairs), dtype=np.int64)

        def run(ks: list[int]) -> None:
            for k in ks:
                stats[k], counts[k], sizes[k] = host_stats(*pairs[k], self._scratch, kernel=self.kernel)

        sizes_in = [int(np.size(r)) for r, _ in pairs]
        if self.threads < 2 or sum(sizes_in) < _PARALLEL_ELEMENTS:
            run(list(range(len(pairs))))
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="quantscope-reduce")
            for f in [self._pool.submit(run, ks) for ks in balanced(sizes_in, self.threads)]:
                f.result()
        return stats, counts, sizes

    def take_counts(self) -> dict[str, np.ndarray]:
        return {}  # the host hands back every batch's counts with its statistics


def balanced(sizes: Sequence[int], workers: int) -> list[list[int]]:
    """Indices of `sizes` in at most `workers` groups of about equal total size (largest first, each to the lightest
    group)."""
    groups: list[list[int]] = [[] for _ in range(min(workers, len(sizes)))]
    load = [0] * len(groups)
    for k in sorted(range(len(sizes)), key=lambda k: -sizes[k]):
        g = load.index(min(load))
        groups[g].append(k)
        load[g] += sizes[k]
    return [g for g in groups if g]


KERNEL_CACHE = "device-kernels"  # under the runs root: CuPy's compiled kernels

_KERNELS = r"""
// One launch reduces every tensor of a batch: blockIdx.y picks the tensor, blocks along x stride over its elements.
extern "C" __global__ void qs_multi_stats(const unsigned long long* __restrict__ rp, const unsigned long long* __restrict__ cp,
                                          const long long* __restrict__ sizes, double* out, unsigned int* maxbits) {
    int tensor = blockIdx.y;
    const float* r = (const float*)rp[tensor];
    const float* c = (const float*)cp[tensor];
    long long n = sizes[tensor];
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
        for (int q = 0; q < 5; ++q) atomicAdd(&out[tensor * 5 + q], s[q][0]);
        atomicMax(&maxbits[tensor], __float_as_uint(m[0]));  // |d| >= 0: the bit pattern orders like the value
    }
}

// The relative-error histogram of every k-th element (k = strides[tensor]), added to the tensor's device-resident
// histogram (row slots[tensor]): the counts stay on the device until the comparison ends.
extern "C" __global__ void qs_multi_hist(const unsigned long long* __restrict__ rp, const unsigned long long* __restrict__ cp,
                                         const long long* __restrict__ counts, const long long* __restrict__ strides,
                                         const int* __restrict__ slots, int shift, int bins, unsigned long long* hist) {
    int tensor = blockIdx.y;
    const float* r = (const float*)rp[tensor];
    const float* c = (const float*)cp[tensor];
    long long m = counts[tensor], stride = strides[tensor];
    unsigned long long* h = hist + (long long)slots[tensor] * bins;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < m; i += (long long)blockDim.x * gridDim.x) {
        long long j = i * stride;
        float ad = fabsf(c[j] - r[j]);
        float rel = ad == 0.f ? 0.f : ad / fabsf(r[j]);
        atomicAdd(&h[__float_as_uint(rel) >> shift], 1ull);
    }
}
"""


class DeviceReducer:
    """Reduces OrtValues that live in GPU memory. `library`: "cupy" (two launches a batch for every tensor, reading the
    buffers by pointer, histograms kept on the device) or "torch" (generic operations through DLPack, per tensor)."""

    THREADS = 256
    MAX_BLOCKS = 64  # per tensor: enough to fill an H100 once every tensor of a batch is in the grid

    def __init__(self, library: str, kernel_cache: Path | None = None) -> None:
        """kernel_cache: where CuPy keeps the compiled kernels between processes (None: in memory only)."""
        self.library = library
        if library == "cupy":
            contain_kernel_cache(kernel_cache)  # before CuPy's import: it may read CUPY_CACHE_DIR there
        self.xp = importlib.import_module(library)
        self._idx: dict[int, object] = {}
        self._tables: dict[bytes, tuple] = {}
        self._slots: dict[str, int] = {}
        self._hist = None
        if library == "cupy":
            self._stats, self._hist_kernel = _cupy_kernels(self.xp)

    def shape(self, value) -> tuple[int, ...]:
        return tuple(value.shape())

    def to_host(self, value) -> np.ndarray:
        arr = self.xp.from_dlpack(value)
        return self.xp.asnumpy(arr) if self.library == "cupy" else arr.detach().cpu().numpy()

    def _index(self, n: int, device=None):
        if n not in self._idx:
            host = sample_index(n, SAMPLE_PER_BATCH).astype(np.int64)
            self._idx[n] = self.xp.asarray(host) if self.library == "cupy" else self.xp.as_tensor(host, device=device)
        return self._idx[n]

    def reduce(self, pairs, keys: Sequence[str] | None = None):
        sizes = np.array([int(np.prod(r.shape())) for r, _ in pairs], dtype=np.int64)
        if not pairs:
            return np.zeros((0, 6)), np.zeros((0, N_BINS), np.int64), sizes
        floats = all(r.data_type() == c.data_type() == "tensor(float)" for r, c in pairs)
        if self.library == "cupy" and floats and keys is not None:
            return self._kernels(pairs, sizes, list(keys)), None, sizes
        return (*self._generic([(self.xp.from_dlpack(r), self.xp.from_dlpack(c)) for r, c in pairs]), sizes)

    def _table(self, pairs, sizes: np.ndarray, keys: list[str]):
        """Device copies of the pointer, size, stride and slot tables; constant while the runners reuse their output
        buffers, so built once per batch shape."""
        ptr_r = np.array([r.data_ptr() for r, _ in pairs], dtype=np.uint64)
        ptr_c = np.array([c.data_ptr() for _, c in pairs], dtype=np.uint64)
        key = ptr_r.tobytes() + ptr_c.tobytes() + sizes.tobytes() + "\0".join(keys).encode()
        if key not in self._tables:
            for k in keys:
                self._slots.setdefault(k, len(self._slots))
            strides = np.array([sample_stride(int(n), SAMPLE_PER_BATCH) for n in sizes], dtype=np.int64)
            counts = np.minimum(sizes, SAMPLE_PER_BATCH).astype(np.int64)
            slots = np.array([self._slots[k] for k in keys], dtype=np.int32)
            cp = self.xp
            self._tables[key] = (cp.asarray(ptr_r), cp.asarray(ptr_c), cp.asarray(sizes), cp.asarray(counts), cp.asarray(strides),
                                 cp.asarray(slots), int(min(self.MAX_BLOCKS, max(1, -(-int(sizes.max()) // self.THREADS)))))
        if self._hist is None or self._hist.shape[0] < len(self._slots):
            grown = self.xp.zeros((max(len(self._slots), 1), N_BINS), dtype=self.xp.uint64)
            if self._hist is not None:
                grown[: self._hist.shape[0]] = self._hist
            self._hist = grown
        return self._tables[key]

    def _kernels(self, pairs, sizes: np.ndarray, keys: list[str]) -> np.ndarray:
        cp, t = self.xp, self.THREADS
        rp, cpp, n, counts, strides, slots, blocks = self._table(pairs, sizes, keys)
        out = cp.zeros((len(pairs), 5), dtype=cp.float64)
        maxbits = cp.zeros(len(pairs), dtype=cp.uint32)
        self._stats((blocks, len(pairs)), (t,), (rp, cpp, n, out, maxbits))
        hist_blocks = max(1, min(self.MAX_BLOCKS, -(-SAMPLE_PER_BATCH // t)))
        self._hist_kernel((hist_blocks, len(pairs)), (t,), (rp, cpp, counts, strides, slots, np.int32(SHIFT), np.int32(N_BINS),
                                                             self._hist))
        host_out, host_max = out.get(), maxbits.get().view(np.float32)
        return np.concatenate([host_out, host_max[:, None].astype(np.float64)], axis=1)

    def segment_sums(self, ref, out, segments: int) -> np.ndarray:
        """host_segment_sums for values in device memory: four float64 sums a segment come back."""
        xp, cupy = self.xp, self.library == "cupy"
        r, c = xp.from_dlpack(ref), xp.from_dlpack(out)
        r, c = (r.astype(xp.float64), c.astype(xp.float64)) if cupy else (r.to(xp.float64), c.to(xp.float64))
        sums = _segment_sums(r, c, segments, xp.stack)
        return xp.asnumpy(sums) if cupy else sums.detach().cpu().numpy()

    def take_counts(self) -> dict[str, np.ndarray]:
        """The histograms kept on the device, by tensor (and reset)."""
        if self._hist is None:
            return {}
        host = self._hist.get().astype(np.int64)
        out = {k: host[slot] for k, slot in self._slots.items()}
        self._hist = None
        self._slots = {}
        self._tables = {}
        return out

    def _generic(self, pairs) -> tuple[np.ndarray, np.ndarray]:
        xp, cupy = self.xp, self.library == "cupy"
        scalars, hists = [], []
        for ref, cand in pairs:
            r = ref.reshape(-1).astype(xp.float32) if cupy else ref.reshape(-1).to(xp.float32)
            c = cand.reshape(-1).astype(xp.float32) if cupy else cand.reshape(-1).to(xp.float32)
            d = c - r
            ad = xp.abs(d)
            n = r.size if cupy else r.numel()
            biggest = ad.max() if n else (xp.zeros((), dtype=xp.float32) if cupy else xp.zeros((), dtype=xp.float32, device=r.device))
            scalars.append(xp.stack([xp.dot(r, r), xp.dot(c, c), xp.dot(r, c), xp.dot(d, d), ad.sum(), biggest]))
            if n > SAMPLE_PER_BATCH:
                idx = self._index(n, None if cupy else r.device)
                ad_s, ar_s = ad[idx], xp.abs(r[idx])
            else:
                ad_s, ar_s = ad, xp.abs(r)
            rel = xp.abs(ad_s / ar_s)  # inf/inf's NaN may carry the sign bit: it would bin negative (RelErrHistogram.bins)
            rel = xp.where(ad_s == 0, xp.zeros_like(rel), rel)
            bins = rel.view(xp.int32) >> SHIFT
            hists.append(xp.bincount(bins if cupy else bins.to(xp.int64), minlength=N_BINS))
        stack = xp.stack
        host = (lambda a: xp.asnumpy(a)) if cupy else (lambda a: a.detach().cpu().numpy())
        return host(stack(scalars)).astype(np.float64), host(stack(hists)).astype(np.int64)


def device_library(forced: str | None = None) -> str | None:
    """The library that reduces device tensors: `forced` if importable, else cupy, else torch, else None."""
    for name in (forced,) if forced else ("cupy", "torch"):
        if importlib.util.find_spec(name) is not None:
            return name
    return None


def device_reducer(forced: str | None = None, kernel_cache: Path | None = None) -> DeviceReducer | None:
    """A reducer for outputs left in device memory, or None (then tensors come to the host and numpy reduces them).
    kernel_cache: see DeviceReducer."""
    library = device_library(forced)
    return DeviceReducer(library, kernel_cache) if library else None


_COMPILED: dict[int, tuple] = {}  # the kernels of each device, compiled once per process


def _cupy_kernels(cp) -> tuple:
    device = cp.cuda.Device().id
    if device not in _COMPILED:
        module = cp.RawModule(code=_KERNELS)  # compiled by the first get_function
        _COMPILED[device] = (module.get_function("qs_multi_stats"), module.get_function("qs_multi_hist"))
    return _COMPILED[device]


_CONTAINED: list[str] = []  # where this process pointed CuPy's kernel cache (a folder, or IN_MEMORY), if it did
IN_MEMORY = ":memory:"


def contain_kernel_cache(folder: Path | None) -> None:
    """CuPy compiles kernels on first use anywhere in the process (ours, and its own elementwise and reduction kernels)
    and keeps them in ~/.cupy/kernel_cache, outside the folders QuantScope writes to. The first device reducer of a
    process points CUPY_CACHE_DIR at `folder` (under the runs root) or, where None, keeps the kernels in memory
    (CUPY_CACHE_IN_MEMORY): a temporary folder removed at exit stayed behind in Ray's actors, which are killed without
    running exit handlers. CuPy reads the folder once a process, so the first choice stays; where that folder was
    deleted since (a finished test's runs root, a runs folder cleaned up while the dashboard runs), the next reducer
    makes it again. A CUPY_CACHE_DIR or CUPY_CACHE_IN_MEMORY=1 the user set is left alone."""
    current = os.environ.get("CUPY_CACHE_DIR")
    if current:
        if current in _CONTAINED:
            Path(current).mkdir(parents=True, exist_ok=True)
        return
    if os.environ.get("CUPY_CACHE_IN_MEMORY") == "1":
        return
    if folder is None:
        os.environ["CUPY_CACHE_IN_MEMORY"] = "1"
        _CONTAINED.append(IN_MEMORY)
        return
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["CUPY_CACHE_DIR"] = str(folder)
    _CONTAINED.append(str(folder))
