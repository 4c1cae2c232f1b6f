"""Final outputs whose channels differ in scale by orders of magnitude, such as a YOLOv8 head: four box coordinates in
pixels beside class scores in [0, 1]. An output's SNR weighs every element by its power, so the large channels decide
it: on YOLOv8n the whole output read 26.5 dB while its class scores sat at 10.4 dB (found trying the app on it). This
finds such outputs, the small-scale channels, and their own SNR, so the summary can say what the figure hides."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.compare.metrics import json_number, snr_db

__all__ = ["ChannelSplit", "ChannelAccumulator", "SMALL_SHARE", "HIDDEN_DB"]

SMALL_SHARE = 0.01  # a channel whose RMS is under this share of the largest channel's RMS is small-scale
HIDDEN_DB = 6.0  # the small channels' SNR at least this far below the whole output's is worth a sentence
MAX_CHANNELS = 1024  # an axis longer than this holds positions or tokens, not channels
MAX_RANGES = 6  # index ranges named in the sentence


@dataclass(frozen=True)
class ChannelSplit:
    """One output's channels along `axis` split by scale: `small` (their RMS under SMALL_SHARE of the largest's) and the
    rest, with each group's SNR over all samples."""

    output: str
    axis: int
    channels: int
    small: tuple[int, ...]
    small_snr_db: float
    large_snr_db: float
    small_rms: float  # the small channels' RMS together
    large_rms: float  # the largest channel's RMS

    @property
    def hides(self) -> bool:
        """The small channels' SNR is HIDDEN_DB or more below the large ones': worth a sentence."""
        return self.small_snr_db <= self.large_snr_db - HIDDEN_DB

    @property
    def label(self) -> str:
        return f"{self.output}, {_ranges(self.small)}"

    def sentence(self) -> str:
        return (f"Output '{self.output}' mixes channels of very different scales along axis {self.axis}: its SNR is set by "
                f"the large ones ({self.channels - len(self.small)} of {self.channels}, RMS up to {self.large_rms:.3g}, at "
                f"{self.large_snr_db:.1f} dB), while its {len(self.small)} small-scale channels ({_ranges(self.small)}, RMS "
                f"{self.small_rms:.3g}) are at {self.small_snr_db:.1f} dB. Where those are scores (a detector's classes), "
                f"judge the build by {self.small_snr_db:.1f} dB.")

    def to_dict(self) -> dict:
        return {"output": self.output, "axis": self.axis, "channels": self.channels, "small": list(self.small),
                "small_snr_db": json_number(self.small_snr_db), "large_snr_db": json_number(self.large_snr_db), "small_rms": self.small_rms,
                "large_rms": self.large_rms}

    @classmethod
    def from_dict(cls, d: dict) -> ChannelSplit:
        return cls(str(d["output"]), int(d["axis"]), int(d["channels"]), tuple(int(i) for i in d["small"]),
                   float(d["small_snr_db"]), float(d["large_snr_db"]), float(d["small_rms"]), float(d["large_rms"]))


def _ranges(idx: tuple[int, ...]) -> str:
    """(4, 5, 6, 9) -> 'channels 4-6, 9'."""
    parts, start = [], idx[0]
    for a, b in zip(idx, idx[1:] + (None,)):
        if b != a + 1:
            parts.append(f"{start}-{a}" if a > start else f"{a}")
            start = b
    shown = ", ".join(parts[:MAX_RANGES]) + (", ..." if len(parts) > MAX_RANGES else "")
    return ("channel " if len(idx) == 1 else "channels ") + shown


def _channel_axes(ndim: int) -> tuple[int, ...]:
    """Where channels may lie: N x C; N x C x A or N x A x C (YOLOv8 and YOLOv5 heads); N x C x H x W. Never a spatial
    axis: the rows of PP-OCRv4's text-probability map (N x 1 x H x W) differ in scale by where text is."""
    return (1,) if ndim == 2 or ndim >= 4 else (1, 2) if ndim == 3 else ()


class ChannelAccumulator:
    """Per-channel signal and noise power of one float output over the batches. The channel axis is the shorter of
    the axes _channel_axes allows with 2 to MAX_CHANNELS entries (YOLOv8's N x 22 x 2100: axis 1), chosen on the first
    batch; an output with none, or whose axis changes length between batches, is left out."""

    def __init__(self) -> None:
        self.axis: int | None = None
        self.off = False
        self.signal = self.noise = self.count = None

    def update(self, ref: np.ndarray, cand: np.ndarray) -> None:
        if self.off:
            return
        if self.axis is None:
            axes = [a for a in _channel_axes(ref.ndim) if 2 <= ref.shape[a] <= MAX_CHANNELS]
            if not np.issubdtype(ref.dtype, np.floating) or not axes:
                self.off = True
                return
            self.axis = min(axes, key=lambda a: ref.shape[a])
            c = ref.shape[self.axis]
            self.signal, self.noise, self.count = np.zeros(c), np.zeros(c), np.zeros(c)
        if ref.ndim <= self.axis or ref.shape[self.axis] != len(self.signal) or ref.shape != cand.shape:
            self.off = True
            return
        rv, cv = np.moveaxis(ref, self.axis, 0), np.moveaxis(cand, self.axis, 0)  # views: one channel copied at a time
        for i in range(len(self.signal)):
            r = rv[i].astype(np.float64).ravel()
            d = r - cv[i].astype(np.float64).ravel()
            self.signal[i] += r @ r
            self.noise[i] += d @ d
            self.count[i] += r.size

    def result(self, output: str) -> ChannelSplit | None:
        """The split, where the output has both small-scale and large channels (whether it hides anything: .hides)."""
        if self.off or self.axis is None or not self.count.any():
            return None
        rms = np.sqrt(self.signal / np.maximum(self.count, 1))
        small = np.flatnonzero((rms > 0) & (rms < SMALL_SHARE * rms.max()))
        large = np.flatnonzero(rms >= SMALL_SHARE * rms.max())
        if not len(small) or not len(large):
            return None
        small_db = snr_db(float(self.signal[small].sum()), float(self.noise[small].sum()))
        large_db = snr_db(float(self.signal[large].sum()), float(self.noise[large].sum()))
        small_rms = math.sqrt(self.signal[small].sum() / self.count[small].sum())
        return ChannelSplit(output, self.axis, len(rms), tuple(int(i) for i in small), small_db, large_db, small_rms,
                            float(rms.max()))
