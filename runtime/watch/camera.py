"""Quality events of one camera: its conditions with hysteresis in time, judged against its own
normal (docs/fleet.md, "Events" and "Baselines").

Degraded has two kinds of evidence: the smoothed score under an absolute `threshold` (when one is
set), and the smoothed score (or the image signals, as `evidence` says) fallen below the camera's
own normal. Either is enough; recovery needs both to agree. A degraded event names the likely
cause, the signals that moved furthest from their normal.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from runtime.watch.baseline import MODES, CameraBaseline
from runtime.watch.conditions import CONDITION, CONDITIONS, EVENTS, STATES, Condition, Hold, band, either
from runtime.watch.signals import Look, change, look_at
from runtime.watch.smoothing import Smoothing

__all__ = ["CameraWatch", "WatchRules", "EVENTS", "STATES", "Hold", "MODES"]


@dataclass(kw_only=True)
class WatchRules:
    """The rules a camera's quality events follow; every one can be set per camera."""

    smooth: int = 5                   # the smoothed score is the mean of the last N scores
    threshold: float | None = None    # an absolute floor: degraded below this smoothed score (None: none)
    margin: float = 0.05              # recovered only at threshold + margin: a score on the line does not flap
    hold_s: float = 10.0              # a condition must hold this long before its event (both ways)
    frozen_diff: float = 0.5          # frozen: consecutive frames differ by at most this (mean |gray diff|)
    covered_contrast: float = 6.0     # covered: the picture's gray standard deviation is below this
    baseline_warmup: float = 600.0    # seconds of frames the camera's own normal is first learned from
    drop: float = 0.10                # degraded: the smoothed score this share below the normal ...
    spreads: float = 3.0              # ... and this many of its own spreads (the larger of the two)
    evidence: str = "signals"         # what judges against the normal: signals, model, model+signals


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CameraWatch:
    """One camera's conditions, fed by the run's inference loop (pictures, scores) and its reader
    (gaps, reconnects). Each feeding method returns the events it raised, as dicts."""

    def __init__(self, rules, started: float, name: str | None = None):
        self.rules, self.started = rules, started
        self.name = name or rules.name
        self.holds = {condition.state: Hold(rules.hold_s) for condition in CONDITIONS}
        self.smoothing = Smoothing(rules.smooth, rules.threshold)
        self.baseline = CameraBaseline(rules.baseline_warmup, rules.drop, rules.spreads, rules.evidence,
                                       rules.smooth)
        self.previous: np.ndarray | None = None
        self.uniform = False
        self.scored = False
        self.verdict = None                   # the baseline's latest Verdict

    @property
    def camera(self):
        return self.rules

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
        return {"event": name, "camera": self.name, "time": utc_now(), "t": round(now - self.started, 3),
                "state": self.state, "previous": previous, "score": _rounded(self.smoothing.score),
                "smoothed": _rounded(self.smoothing.smoothed), **detail}

    def on_picture(self, now: float, image: np.ndarray | None = None, look: Look | None = None) -> list[dict]:
        """A frame that arrived while frames keep coming (or how it looks, measured already): is it
        nearly uniform (covered), or the same picture as the last one (frozen)? A uniform picture
        says nothing about frozen. Its image signals join the latest ones the baseline judges."""
        look = look or look_at(image, self.rules.covered_contrast)
        previous_state, spread, moved = self.state, look.contrast, change(look.picture, self.previous)
        self.previous = look.picture
        covered = band(spread, self.rules.covered_contrast, 1.5 * self.rules.covered_contrast)
        self.uniform = covered is not False
        if not self.uniform and look.signals is not None:
            self.baseline.observe(look.signals)
        frozen = None if self.uniform or moved is None else band(moved, self.rules.frozen_diff + 1e-9,
                                                                  2 * self.rules.frozen_diff + 1e-6)
        raised = self._switch(CONDITION["covered"], now, covered, previous_state, contrast=round(spread, 3))
        previous_state = self.state
        return raised + self._switch(CONDITION["frozen"], now, frozen, previous_state,
                                     change=None if moved is None else round(moved, 3))

    def on_score(self, now: float, score: float) -> list[dict]:
        """A scored frame: the smoothed score against the absolute threshold and against the camera's
        own normal. A uniform picture's score is kept but is no evidence: a covered lens is covered."""
        previous_state = self.state
        self.smoothing.add(score)
        self.scored = True
        if self.uniform:
            return self._switch(CONDITION["degraded"], now, None, previous_state)
        self.verdict = self.baseline.judge(self.smoothing.smoothed)
        threshold = self.rules.threshold
        floor = None if threshold is None else band(self.smoothing.smoothed, threshold, threshold + self.rules.margin)
        applicable = [e for e, applies in ((floor, threshold is not None), (self.verdict.evidence, self.baseline.ready))
                      if applies]
        if self.state == "ok" and self.verdict.evidence is not True:
            self.baseline.learn(now, self.smoothing.smoothed)   # a defect is never learned as normal
        elif self.state == "degraded" and not self.baseline.ready:
            # a light condition first seen while degraded (dusk turned the picture infrared): nothing
            # to judge it against, so its normal is learned from what it sees, else the camera stays
            # degraded for the whole night
            self.baseline.learn(now, self.smoothing.smoothed)
        elif self.state == "degraded":
            self.baseline.follow_light(now)                     # only what the defect left alone
        return self._switch(CONDITION["degraded"], now, either(*applicable), previous_state, **self._why(threshold))

    def _why(self, threshold: float | None) -> dict:
        detail = {} if threshold is None else {"threshold": threshold}
        if self.verdict is not None and self.verdict.changes:
            detail.update(reason=self.verdict.reason, changes=self.verdict.changes)
        return detail

    def on_gap(self, now: float, reason: str) -> list[dict]:
        """The reader lost the source (its read timed out or failed, or it never opened): lost at once,
        the reader's timeouts are the hold. Every other count restarts: the scene may differ after."""
        previous_state = self.state
        for hold in self.holds.values():
            hold.restart()
        self.smoothing.restart()
        self.baseline.restart_recent()
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

    def reset_baseline(self) -> None:
        """Learn the camera's normal afresh (it was moved, or its lens replaced)."""
        self.baseline.reset()

    def state_record(self) -> dict:
        """The retained state message: what a subscriber joining now needs to know."""
        record = {"camera": self.name, "state": self.state, "time": utc_now(),
                  "score": _rounded(self.smoothing.score), "smoothed": _rounded(self.smoothing.smoothed)}
        if self.state == "degraded" and self.verdict is not None and self.verdict.reason:
            record["reason"] = self.verdict.reason
        return record

    # -- kept across restarts (runtime/watch/state_file.py) ------------------------------------------
    def as_dict(self) -> dict:
        return {"conditions": [state for state, hold in self.holds.items() if hold.active],
                "scored": self.scored, "baseline": self.baseline.as_dict()}

    def restore(self, values: dict) -> None:
        """The conditions and normal a previous run left: a camera still covered stays covered, and
        is neither published as ok nor raised again."""
        for state in values.get("conditions", []):
            if state in self.holds and state != "lost":       # lost is re-judged by the reader at once
                self.holds[state].active = True
        self.scored = bool(values.get("scored")) or any(self.holds[s].active for s in self.holds)
        self.baseline.restore(values.get("baseline", {}))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)
