"""What a reader hands to the run: frames, and typed signals of what happened to the source
(a gap, a reconnect, the end). Each signal's `record()` is its JSON line (docs/runtime.md)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Frame:
    image: np.ndarray | None
    index: int                      # frame number in the file, or frames read from a live source
    t: float                        # video time (files) or seconds since the run started (live)
    captured: float                 # time.monotonic() when the frame was read
    selected: bool | None = None    # files: decided by the reader; live: decided by the runner
    crops: np.ndarray | None = None


def _record(event: str, **fields) -> dict:
    """A signal's JSON line: fields that do not apply to it (None) are left out, the rest in order."""
    return {"event": event, **{name: value for name, value in fields.items() if value is not None}}


@dataclass(frozen=True)
class Gap:
    """The source stopped delivering the scene: a live source's reads failed (it is reopened), or
    a frame was a uniform filler (never scored)."""

    frame: int                      # frames read when it happened: it comes before any frame read later
    t: float
    reason: str
    last_frame_t: float | None = None

    def record(self) -> dict:
        return _record("gap", frame=self.frame, t=self.t, last_frame_t=self.last_frame_t, reason=self.reason)


@dataclass(frozen=True)
class Reconnect:
    """The first frame after an outage: the gap ran from the last frame before it to this one."""

    frame: int
    t: float
    attempts: int
    gap_s: float
    size: tuple[int, int]           # width, height: it may differ from before the outage

    def record(self) -> dict:
        return _record("reconnect", frame=self.frame, t=self.t, attempts=self.attempts, gap_s=self.gap_s,
                       size=list(self.size))


# End.reason (the reader's own words) -> the run's ending (runtime/live/summary.py ENDINGS)
END_REASONS = {"end of file": "finished", "max frames reached": "finished", "ended early": "file truncated",
               "no frames": "no frames", "source lost": "source lost"}


@dataclass(frozen=True)
class End:
    """The reader has stopped: a file read to its end (or cut short), --max-frames frames read, or a
    live source lost for good (its reopen attempts ran out)."""

    reason: str                     # a key of END_REASONS
    frames: int
    frame: int | None = None        # live sources: frames read when it happened
    expected: int | None = None     # files: the frame count the header announces
    attempts: int | None = None     # source lost: the reopen attempts made
    since_s: float | None = None    # source lost: seconds since its last frame

    @property
    def ending(self) -> str:
        return END_REASONS[self.reason]

    def record(self) -> dict:
        return _record("end", frame=self.frame, frames=self.frames, reason=self.reason, expected=self.expected,
                       attempts=self.attempts, since_s=self.since_s)


Signal = Gap | Reconnect | End
