"""Quality events of one camera: a small state machine with hysteresis (docs/fleet.md, "Events").

A camera has four conditions. Each turns on when its evidence has held for `hold_s` seconds
and off when the opposite evidence has held as long; evidence in the band between (a score
between the threshold and threshold + margin) restarts neither timer's count, so a score
flickering around its threshold raises nothing. The camera's state is the first condition
that holds, in CONDITIONS order, else `ok` (`starting` before its first scored frame).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import cv2
import numpy as np

from runtime.fleet.config import Camera
from runtime.live.selection import Smoothing


@dataclass(frozen=True)
class Condition:
    """A condition a camera can be in: the state it shows, the events that start and end it."""

    state: str
    raised: str
    cleared: str


# In priority order: a lost source is neither covered nor frozen, a covered lens is not "degraded".
CONDITIONS = (
    Condition("lost", "source_lost", "source_back"),
    Condition("covered", "covered", "uncovered"),
    Condition("frozen", "frozen", "unfrozen"),
    Condition("degraded", "degraded", "recovered"),
)
CONDITION = {condition.state: condition for condition in CONDITIONS}
STATES = ("starting", "ok") + tuple(condition.state for condition in CONDITIONS)
EVENTS = tuple(name for condition in CONDITIONS for name in (condition.raised, condition.cleared))


@dataclass
class Hold:
    """Hysteresis in time: `evidence` True (the condition is seen) or False (its absence is seen)
    must persist for `hold_s` seconds to switch; None (undecided) restarts the count."""

    hold_s: float
    active: bool = False
    since: float | None = None

    def update(self, now: float, evidence: bool | None) -> bool:
        """Take one observation; True when the condition switched on or off."""
        if evidence is None or evidence == self.active:
            self.since = None
            return False
        if self.since is None:
            self.since = now
        if now - self.since < self.hold_s:
            return False
        self.active, self.since = not self.active, None
        return True

    def restart(self) -> None:
        self.since = None


def picture_of(image: np.ndarray) -> np.ndarray:
    """A small gray picture for the frozen and covered checks. Subsampled, not averaged: an
    average would smooth away the sensor noise that tells a live static scene from a frozen one."""
    step = max(1, min(image.shape[:2]) // 120)
    return cv2.cvtColor(np.ascontiguousarray(image[::step, ::step]), cv2.COLOR_BGR2GRAY)


def contrast(picture: np.ndarray) -> float:
    return float(picture.std())


def change(picture: np.ndarray, previous: np.ndarray | None) -> float | None:
    """Mean absolute gray difference between consecutive pictures (None: nothing to compare)."""
    if previous is None or previous.shape != picture.shape:
        return None
    return float(cv2.absdiff(picture, previous).mean())


def band(value: float, low: float, high: float) -> bool | None:
    """True below `low`, False at or above `high`, None in between (the hysteresis band)."""
    if value < low:
        return True
    if value >= high:
        return False
    return None


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CameraWatch:
    """One camera's conditions, fed by the fleet's inference loop (pictures, scores) and its
    reader (gaps, reconnects). Each feeding method returns the events it raised, as dicts."""

    def __init__(self, camera: Camera, started: float):
        self.camera, self.started = camera, started
        self.holds = {condition.state: Hold(camera.hold_s) for condition in CONDITIONS}
        self.smoothing = Smoothing(camera.smooth, camera.threshold)
        self.previous: np.ndarray | None = None
        self.uniform = False
        self.scored = False

    @property
    def state(self) -> str:
        for condition in CONDITIONS:
            if self.holds[condition.state].active:
                return condition.state
        return "ok" if self.scored else "starting"

    def _switch(self, condition: Condition, now: float, evidence: bool | None, previous: str, **detail) -> list[dict]:
        if not self.holds[condition.state].update(now, evidence):
            return []
        active = self.holds[condition.state].active
        return [self._event(condition.raised if active else condition.cleared, now, previous, **detail)]

    def _event(self, name: str, now: float, previous: str, **detail) -> dict:
        """The event's JSON payload (docs/fleet.md, "MQTT")."""
        return {"event": name, "camera": self.camera.name, "time": utc_now(), "t": round(now - self.started, 3),
                "state": self.state, "previous": previous, "score": _rounded(self.smoothing.score),
                "smoothed": _rounded(self.smoothing.smoothed), **detail}

    def on_picture(self, now: float, image: np.ndarray) -> list[dict]:
        """A frame that arrived while frames keep coming: is it nearly uniform (covered), or the same
        picture as the last one (frozen)? A uniform picture says nothing about frozen."""
        picture, previous_state = picture_of(image), self.state
        spread, moved = contrast(picture), change(picture, self.previous)
        self.previous = picture
        covered = band(spread, self.camera.covered_contrast, 1.5 * self.camera.covered_contrast)
        self.uniform = covered is not False
        frozen = None if self.uniform or moved is None else band(moved, self.camera.frozen_diff + 1e-9,
                                                                  2 * self.camera.frozen_diff + 1e-6)
        raised = self._switch(CONDITION["covered"], now, covered, previous_state, contrast=round(spread, 3))
        previous_state = self.state
        return raised + self._switch(CONDITION["frozen"], now, frozen, previous_state,
                                     change=None if moved is None else round(moved, 3))

    def on_score(self, now: float, score: float) -> list[dict]:
        """A scored frame: the smoothed score against threshold (degraded) and threshold + margin
        (recovered). A uniform picture's score is kept but is no evidence: a covered lens is covered."""
        previous_state = self.state
        self.smoothing.add(score)
        self.scored = True
        threshold = self.camera.threshold
        if threshold is None:
            return []
        evidence = None if self.uniform else band(self.smoothing.smoothed, threshold, threshold + self.camera.margin)
        return self._switch(CONDITION["degraded"], now, evidence, previous_state, threshold=threshold)

    def on_gap(self, now: float, reason: str) -> list[dict]:
        """The reader lost the source (its read timed out or failed, or it never opened): lost at once,
        the reader's timeouts are the hold. Every other count restarts: the scene may differ after."""
        previous_state = self.state
        for hold in self.holds.values():
            hold.restart()
        self.smoothing.restart()
        self.previous = None
        lost = self.holds["lost"]
        if lost.active:
            return []
        lost.active = True
        return [self._event("source_lost", now, previous_state, reason=reason)]

    def on_reconnect(self, now: float, gap_s: float) -> list[dict]:
        previous_state = self.state
        lost = self.holds["lost"]
        if not lost.active:
            return []
        lost.active = False
        return [self._event("source_back", now, previous_state, gap_s=gap_s)]

    def state_record(self) -> dict:
        """The retained state message: what a subscriber joining now needs to know."""
        return {"camera": self.camera.name, "state": self.state, "time": utc_now(),
                "score": _rounded(self.smoothing.score), "smoothed": _rounded(self.smoothing.smoothed)}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)
