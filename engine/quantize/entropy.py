"""Entropy calibration as TensorRT's entropy calibrator does it: a histogram of |x| (2048 bins to start with), and for
each candidate threshold from bin 128 on, the KL divergence between the clipped distribution P (the counts up to the
threshold, everything beyond it added to the last bin) and Q, the same counts merged into 128 levels (what symmetric
INT8 keeps of one sign) and spread back evenly over the bins that held anything. The threshold with the least
divergence wins (the widest of equal ones). The first bin counts as much as the second, as NVIDIA's pytorch-quantization
does: zero quantizes exactly at any scale, and a ReLU's zeros (20-60% of a tensor in PP-OCR's classifier) pulled the
threshold of a tensor reaching 4.25 down to 1.04.

It is TensorRT's criterion, with its weakness: on spiky histograms (images padded with a constant) it clips hard. PP-OCR's
text-direction classifier: MinMax 15.6 dB, percentile 24.4 dB, entropy 6.1 dB (one early ReLU clipped at 0.54 of 6.1,
17% of its values); the MobileNetV3 orientation classifier: MinMax 11.0 dB, percentile 12.2 dB, entropy 13.3 dB. The
sweep exists to show which.

ONNX Runtime's Entropy calibrator with its defaults (128 bins, 128 quantized bins) has exactly one candidate, the whole
range, so it gave MinMax's ranges on every tensor we tried; with 2048 bins its pure-Python search takes seconds a
tensor. This one evaluates every candidate at once from cumulative sums (milliseconds a tensor) and reads the
histograms ONNX Runtime's percentile collector builds, so a sweep's percentile and entropy share one collection.

For a candidate i (threshold edges[i]) with group g of the 128 covering bins [a_g, a_{g+1}), a_g = ceil(g * i / 128):
    KL = (1/T) * sum_j p_j log p_j - log T + log Q - (1/T) * sum_j p_j log q_j
with T every count, Q the counts below the threshold, and sum_j p_j log q_j = sum_g C_g log(C_g / N_g) plus the outliers
times the log of the last bin's q (C_g: the group's counts, N_g: its bins that hold any). A last bin that is empty while
outliers exist makes the divergence infinite (Q has nothing where P has mass)."""

from __future__ import annotations

import numpy as np

__all__ = ["ENTROPY_BINS", "ENTROPY_VERSION", "QUANTIZED_LEVELS", "entropy_amax", "entropy_ranges", "from_zero"]

ENTROPY_BINS = 2048  # the |x| histogram's bins to start with (ORT's collector adds bins of the same width as ranges grow)
QUANTIZED_LEVELS = 128  # symmetric INT8: 128 levels of one sign
ENTROPY_VERSION = "abs-kl-2048-128-from-zero"  # in the calibration store's key: an entropy calibration kept before it is not reused


def _xlogx(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)


def entropy_amax(hist: np.ndarray, edges: np.ndarray, levels: int = QUANTIZED_LEVELS) -> float:
    """The threshold of least KL divergence for an |x| histogram (`edges` has len(hist) + 1 entries, from 0)."""
    h = np.asarray(hist, dtype=np.float64).copy()
    n = h.size
    if n > 1:
        h[0] = h[1]  # zero quantizes exactly at any scale: a ReLU's spike of zeros (20-60% of a tensor) must not choose it
    if n <= levels or h.sum() == 0:
        return float(edges[-1])
    total = h.sum()
    cum = np.concatenate([[0.0], np.cumsum(h)])  # cum[k]: counts of bins [0, k)
    nonzero = np.concatenate([[0], np.cumsum(h > 0)])
    cum_xlogx = np.concatenate([[0.0], np.cumsum(_xlogx(h))])
    i = np.arange(levels, n + 1)  # candidates: the threshold is edges[i], bins [0, i) kept
    g = np.arange(levels + 1)
    bounds = -((-g[None, :] * i[:, None]) // levels)  # ceil(g * i / levels): [candidates, levels + 1]
    counts = cum[bounds[:, 1:]] - cum[bounds[:, :-1]]  # C_g
    filled = nonzero[bounds[:, 1:]] - nonzero[bounds[:, :-1]]  # N_g
    outliers = total - cum[i]
    last = h[i - 1]
    p_last = last + outliers
    sum_p_log_p = cum_xlogx[i - 1] + _xlogx(p_last)
    with np.errstate(divide="ignore", invalid="ignore"):
        q_per_bin = np.where(filled > 0, counts / np.maximum(filled, 1), 0.0)
        sum_c_log_q = np.where(counts > 0, counts * np.log(np.where(q_per_bin > 0, q_per_bin, 1.0)), 0.0).sum(axis=1)
        q_last = q_per_bin[:, -1]
        sum_p_log_q = sum_c_log_q + np.where(outliers > 0, outliers * np.log(np.where(q_last > 0, q_last, 1.0)), 0.0)
        below = cum[i]
        kl = sum_p_log_p / total - np.log(total) + np.log(np.where(below > 0, below, 1.0)) - sum_p_log_q / total
    kl = np.where((outliers > 0) & (last == 0), np.inf, kl)
    kl = np.where(below > 0, kl, np.inf)
    # a threshold whose quantized distribution has one level left (everything clipped into the last bin) diverges by
    # nothing, however much it clips: |x| in [3.7, 6.3] got a range ending at 3.704. Two levels at least
    kl = np.where((counts > 0).sum(axis=1) >= 2, kl, np.inf)
    best = np.flatnonzero(kl <= kl.min() + 1e-12 * max(1.0, abs(float(kl.min()))))
    return float(edges[i[best[-1]]]) if np.isfinite(kl.min()) else float(edges[-1])


def from_zero(hist: np.ndarray, edges: np.ndarray, bins: int = ENTROPY_BINS) -> tuple[np.ndarray, np.ndarray]:
    """The |x| histogram on `bins` equal bins from 0 to its top edge, as TensorRT's calibrator keeps it. ORT's collector
    starts its bins at the first chunk's smallest |x| (from -0.5 where that chunk was all zeros: the zeros then sat
    mid-histogram, and a candidate just past them won with no divergence, a range of 0.0005 for values up to 3.95), and
    adds bins of the first width as larger values come (a 20x jump: 40,000 bins, 0.9 s and 247 MB for one tensor's
    search). Each bin's count moves to the new bin holding its centre."""
    h = np.asarray(hist, dtype=np.float64)
    e = np.asarray(edges, dtype=np.float64)
    top = float(e[-1])
    if h.size == bins and e[0] == 0.0:
        return h, e
    new = np.linspace(0.0, top if top > 0 else 1.0, bins + 1)
    centres = np.clip((e[:-1] + e[1:]) / 2, 0.0, new[-1])
    out, _ = np.histogram(centres, bins=new, weights=h)
    return out, new


def entropy_ranges(histograms: dict) -> dict[str, tuple]:
    """ORT's calibration result per tensor, (low, high, hist, edges), from its |x| histograms ({name: (hist, edges, min,
    max)}): (-amax, amax) clipped to the values seen, as ORT's percentile calibration clips its thresholds."""
    out = {}
    for name, (hist, edges, low, high) in histograms.items():
        amax = np.array(entropy_amax(*from_zero(hist, edges)), dtype=edges.dtype)
        lo, hi = -amax, amax
        out[name] = (low if lo < low else lo, high if hi > high else hi, hist, edges)
    return out
