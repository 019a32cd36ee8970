"""A camera's own normal of one quantity (its score, or an image signal): robust, learned from its
own frames, and following slow change (light, season) only while the camera is healthy.

A warm-up gathers the first samples and takes their median and spread (1.4826 x the median
absolute deviation, the standard deviation of a normal distribution, which one outlier cannot
move). From then on each healthy sample moves the normal by a clipped step with a time constant of
`follow_s`: a cloud or a passing truck barely moves it, dusk moves it within the hour, and the
caller stops feeding it while the camera is degraded, so a defect is never learned as normal.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

WARMUP_SAMPLES = 256        # at most this many kept during warm-up (every other one dropped past it)
MIN_SAMPLES = 8             # and at least this many before the warm-up can end
CLIP = 3.0                  # a sample moves the normal by at most CLIP spreads ...
CLIP_SHARE = 0.2            # ... or this share of its level, whichever is more (dusk moves it fast)
FOLLOW_S = 600.0            # the time constant of following slow change
MEAN_ABS_TO_SIGMA = math.sqrt(math.pi / 2)   # E|x - mu| = sigma * sqrt(2 / pi) for a normal distribution


@dataclass
class Normal:
    warmup_s: float
    follow_s: float = FOLLOW_S
    floor: float = 1e-3                  # the least spread: a perfectly still scene is not infinitely sure
    started: float | None = None
    samples: list = field(default_factory=list)
    stride: int = 1                      # warm-up: keep every stride-th sample
    seen: int = 0
    level: float | None = None
    spread: float | None = None
    updated: float | None = None

    @property
    def ready(self) -> bool:
        return self.level is not None

    def add(self, now: float, value: float) -> None:
        if self.ready:
            self._follow(now, value)
        else:
            self._warm(now, value)

    def _warm(self, now: float, value: float) -> None:
        if self.started is None:
            self.started = now
        self.seen += 1
        if self.seen % self.stride == 0:
            self.samples.append(float(value))
        if len(self.samples) > WARMUP_SAMPLES:
            self.samples, self.stride = self.samples[::2], self.stride * 2
        if now - self.started >= self.warmup_s and len(self.samples) >= MIN_SAMPLES:
            ordered = sorted(self.samples)
            self.level = _median(ordered)
            self.spread = max(1.4826 * _median(sorted(abs(x - self.level) for x in ordered)), self._floor())
            self.samples, self.updated = [], now

    def _follow(self, now: float, value: float) -> None:
        alpha = 1.0 - math.exp(-max(0.0, now - self.updated) / self.follow_s)
        self.updated = now
        limit = max(CLIP * self.spread, CLIP_SHARE * abs(self.level))
        deviation = min(max(value - self.level, -limit), limit)
        self.level += alpha * deviation
        self.spread = max(self._floor(), self.spread + alpha * (MEAN_ABS_TO_SIGMA * abs(deviation) - self.spread))

    def _floor(self) -> float:
        return max(self.floor, 0.01 * abs(self.level or 0.0))

    def restart(self) -> None:
        """Learn afresh (a camera moved or its lens replaced)."""
        self.__init__(self.warmup_s, self.follow_s, self.floor)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Normal":
        """A saved normal; how fast it follows is this version's (FOLLOW_S), not the file's."""
        return cls(**{key: value for key, value in values.items() if key != "follow_s"})


def _median(ordered: list[float]) -> float:
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else 0.5 * (ordered[middle - 1] + ordered[middle])
