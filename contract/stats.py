"""Summary statistics every report uses (latency percentiles of runs, fleets and benchmarks)."""
from __future__ import annotations

import numpy as np


def percentile(values, q: float) -> float | None:
    """The q-th percentile (linear interpolation, numpy's default) of `values`; None when empty."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.percentile(values, q)) if values.size else None


def rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)
