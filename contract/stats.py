"""Summary statistics every report uses: percentiles of a list, and running statistics of a stream
that keep no list at all (a camera watched for months keeps its summary in constant memory)."""
from __future__ import annotations

import math

import numpy as np


def percentile(values, q: float) -> float | None:
    """The q-th percentile (linear interpolation, numpy's default) of `values`; None when empty."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.percentile(values, q)) if values.size else None


def rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


class RunningStats:
    """Count, mean and minimum of a stream of numbers; the sum is compensated (Neumaier), so the
    mean of millions of scores is as exact as numpy's over a list."""

    def __init__(self):
        self.count = 0
        self.minimum: float | None = None
        self._sum = self._compensation = 0.0

    def add(self, value: float) -> None:
        value = float(value)
        self.count += 1
        self.minimum = value if self.minimum is None else min(self.minimum, value)
        total = self._sum + value
        if abs(self._sum) >= abs(value):
            self._compensation += (self._sum - total) + value
        else:
            self._compensation += (value - total) + self._sum
        self._sum = total

    @property
    def mean(self) -> float | None:
        return (self._sum + self._compensation) / self.count if self.count else None


class RunningQuantiles:
    """Quantiles of a stream of positive numbers (latencies) in bounded memory: counts in
    logarithmic bins RATIO apart, so a quantile is within half a bin (0.5%) of the exact one."""

    RATIO = 1.01

    def __init__(self):
        self.bins: dict[int, int] = {}
        self.count = 0

    def add(self, value: float) -> None:
        index = math.floor(math.log(max(float(value), 1e-9)) / math.log(self.RATIO))
        self.bins[index] = self.bins.get(index, 0) + 1
        self.count += 1

    def merge(self, other: "RunningQuantiles") -> None:
        for index, count in other.bins.items():
            self.bins[index] = self.bins.get(index, 0) + count
        self.count += other.count

    def quantile(self, q: float) -> float | None:
        """The q-th percentile (0-100): the geometric middle of the bin holding it."""
        if not self.count:
            return None
        rank, seen = q / 100.0 * (self.count - 1), 0
        for index in sorted(self.bins):
            seen += self.bins[index]
            if seen > rank:
                return self.RATIO ** (index + 0.5)
        return self.RATIO ** (max(self.bins) + 0.5)
