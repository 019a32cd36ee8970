"""The conditions a camera can be in, and hysteresis in time (docs/fleet.md, "Events").

Each condition turns on when its evidence has held for `hold_s` seconds and off when the opposite
evidence has held as long; evidence in the band between restarts neither count, so a value
flickering around its limit raises nothing. The camera's state is the first condition that
holds, in CONDITIONS order, else `ok` (`starting` before its first scored frame).
"""
from __future__ import annotations

from dataclasses import dataclass


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


def band(value: float, low: float, high: float) -> bool | None:
    """True below `low`, False at or above `high`, None in between (the hysteresis band)."""
    if value < low:
        return True
    if value >= high:
        return False
    return None


def either(*evidence: bool | None) -> bool | None:
    """Several kinds of evidence of one condition, those that apply: any one seeing it is enough;
    its absence needs all of them."""
    if any(e is True for e in evidence):
        return True
    if evidence and all(e is False for e in evidence):
        return False
    return None
