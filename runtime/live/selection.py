"""Which frames are scored, and which are not the scene."""
from __future__ import annotations

import numpy as np

from runtime.live.frames import Frame, Gap


class Selector:
    """Score every N-th frame and at most F frames per second (of video time for files)."""

    def __init__(self, every: int = 1, fps: float | None = None):
        self.every, self.fps = every, fps
        self.last_index: int | None = None
        self.last_t: float | None = None

    def __call__(self, index: int, t: float) -> bool:
        if self.last_index is not None and index - self.last_index < self.every:
            return False
        if self.fps and self.last_t is not None and t - self.last_t < 1.0 / self.fps - 1e-4:
            return False
        self.last_index, self.last_t = index, t
        return True


def is_blank(image: np.ndarray) -> bool:
    """A uniform frame (black / grey filler of a dropped stream) is not a scene."""
    sample = image[::8, ::8]
    return int(sample.max()) - int(sample.min()) <= 2


class BlankRun:
    """Uniform filler frames are counted, and a run of them is reported once, as a gap."""

    REASON = "blank frame (filler), not scored"

    def __init__(self):
        self.active = False

    def check(self, frame: Frame, image: np.ndarray) -> tuple[bool, Gap | None]:
        """(blank, the Gap to report or None): a Gap only for the first blank frame of a run."""
        if not is_blank(image):
            self.active = False
            return False, None
        first, self.active = not self.active, True
        return True, Gap(frame.index, round(frame.t, 3), self.REASON) if first else None
