"""The score shown and watched: the mean of the last N scores, restarted after a gap."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Smoothing:
    """The score shown and flagged: the mean of the last N scores, restarted after a gap."""

    size: int
    threshold: float | None
    recent: deque = field(init=False)
    score: float | None = None
    smoothed: float | None = None
    low: bool = False

    def __post_init__(self):
        self.recent = deque(maxlen=self.size)

    def add(self, score: float) -> None:
        self.recent.append(score)
        self.score, self.smoothed = score, float(np.mean(self.recent))
        self.low = self.threshold is not None and self.smoothed < self.threshold

    def restart(self) -> None:
        """After a gap: the scene may differ, so the mean never spans one."""
        self.recent.clear()
