"""Which samples a probe measures when it measures fewer than the data holds: spread over the data, not its head."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

__all__ = ["spread_order", "spread_rows"]


def spread_order(n: int, k: int) -> list[int]:
    """`k` of range(n) evenly spaced over it, ordered so that every prefix is spread too (van der Corput order): a probe
    on the first 8 of them sees 8 samples from all over the data, not its first 8. A ShuffleNet trial's data kept each
    photo's crops together, and the ranking's first 16 samples (3 of 9 photos) put the wrong node first."""
    k = max(0, min(k, n))
    picks = [int((j + 0.5) * n / k) for j in range(k)]
    order: list[int] = []
    seen: set[int] = set()
    i = 0
    while len(order) < k:
        v, f, m = 0.0, 0.5, i  # the bits of i reversed after the binary point
        while m:
            v += f * (m & 1)
            m >>= 1
            f /= 2
        j = int(v * k)
        if j not in seen:
            seen.add(j)
            order.append(j)
        i += 1
    return [picks[j] for j in order]


def spread_rows(sizes: Sequence[int], k: int) -> list[tuple[int, int, int]]:
    """spread_order over the samples of consecutive batches of `sizes`: (batch, row in it, sample) for each of the `k`
    picks, in that order."""
    starts = list(itertools.accumulate(sizes, initial=0))
    rows = []
    for g in spread_order(starts[-1], k):
        b = bisect.bisect_right(starts, g) - 1
        rows.append((b, g - starts[b], g))
    return rows
