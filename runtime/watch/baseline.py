"""A camera's own normal, per light condition: its score and each image signal (docs/fleet.md,
"Baselines"). A degraded verdict compares the smoothed score (and, where asked, the signals) with
that normal, and names what changed most as the likely cause.

Light conditions: an infrared night picture is gray, a day picture is in colour; they differ in
score and in every signal at once, so each keeps its own normal (learned the first time it is
seen). Within one condition the normal follows slow change (runtime/watch/normal.py).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from runtime.watch.conditions import band, either
from runtime.watch.normal import Normal
from runtime.watch.signals import SIGNALS, describe

# colourfulness with hysteresis: gray (infrared) below MONO_BELOW, colour again above COLOUR_ABOVE
MONO_BELOW, COLOUR_ABOVE = 1.5, 3.0
MODES = ("model", "signals", "model+signals")
# The least spread of each quantity's normal: a scene with no clipped pixel at all is not infinitely
# sure of it (percentage points for the shares, a ratio's hundredth for blockiness).
FLOORS = {"highlights": 0.5, "shadows": 0.5, "colour_cast": 0.5, "blockiness": 0.02}


@dataclass(frozen=True)
class SignalRule:
    """When a signal alone is evidence of a defect: its smoothed value beyond `limit` against its
    normal (a ratio for ratio signals, percentage points otherwise) in the direction given, and at
    least `spreads` of the normal's own spreads away from it (a signal that wanders by itself in
    this scene needs a larger change)."""

    name: str
    direction: int        # -1: a drop is the defect; +1: a rise
    limit: float
    spreads: float = 4.0


SIGNAL_RULES = (      # chosen on bench_watch's tuning cameras only (docs/fleet.md, "Baselines")
    SignalRule("sharpness", -1, 0.65),
    SignalRule("coarse_sharpness", -1, 0.8),
    SignalRule("noise", +1, 1.6),
    SignalRule("brightness", -1, 0.7),
    SignalRule("brightness", +1, 1.6),
    SignalRule("contrast", -1, 0.5),
    SignalRule("highlights", +1, 15.0),
    SignalRule("shadows", +1, 25.0),
    SignalRule("blockiness", +1, 1.2),
)


@dataclass
class Verdict:
    """What the normal says of the latest frames: evidence of a defect (True), of health (False) or
    neither (None: in the band between, or no normal yet), and the likely causes."""

    evidence: bool | None
    reason: str | None = None
    changes: dict | None = None       # signal -> {"value", "normal"}; "score" -> {"value", "normal"}


class CameraBaseline:
    def __init__(self, warmup_s: float, drop: float = 0.1, spreads: float = 3.0, mode: str = "model",
                 smooth: int = 5):
        self.warmup_s, self.drop, self.spreads, self.mode = warmup_s, drop, spreads, mode
        self.normals: dict[str, dict[str, Normal]] = {}     # light condition -> quantity -> normal
        self.light: str | None = None
        self.recent: deque = deque(maxlen=smooth)              # the latest frames' signals
        self.fired: set[int] = set()      # the SIGNAL_RULES (indexes) beyond their limit since the last all-clear

    # -- what the frames show ----------------------------------------------------------------------
    def observe(self, signals: dict[str, float]) -> None:
        self.recent.append(signals)
        fullness = signals["colourfulness"]
        if self.light is None:
            self.light = "mono" if fullness < MONO_BELOW else "colour"
        elif self.light == "colour" and fullness < MONO_BELOW:
            self.light = "mono"
        elif self.light == "mono" and fullness > COLOUR_ABOVE:
            self.light = "colour"

    def smoothed_signals(self) -> dict[str, float]:
        """The median of the latest frames' signals: one odd frame does not move it."""
        if not self.recent:
            return {}
        return {name: float(np.median([frame[name] for frame in self.recent])) for name in SIGNALS}

    def restart_recent(self) -> None:
        self.recent.clear()

    # -- the normal ----------------------------------------------------------------------------------
    def _normals(self) -> dict[str, Normal]:
        if self.light not in self.normals:
            self.normals[self.light] = {name: self._new_normal(name) for name in ("score", *SIGNALS)}
        return self.normals[self.light]

    def _new_normal(self, name: str) -> Normal:
        return Normal(self.warmup_s, floor=FLOORS.get(name, 1e-3))

    def learn(self, now: float, score: float) -> None:
        """A healthy frame: its smoothed score (what is judged) and its signals join the normal of the
        light condition."""
        if self.light is None or not self.recent:
            return
        normals = self._normals()
        normals["score"].add(now, score)
        for name, value in self.smoothed_signals().items():     # the median: one odd frame is not learned
            normals[name].add(now, value)

    def follow_light(self, now: float) -> None:
        """While the camera is degraded: its score's normal and every signal that fired stay as they
        were, but a signal that never fired and stays close to its normal (within the way back of its
        rules, else a fifth) follows, as the light moves it. Without this a camera degraded at dusk
        is judged all night against the afternoon's brightness. A jump (a blur lowering the noise
        estimate) is not close, and is not learned."""
        if not self.ready or not self.recent:
            return
        fired = {SIGNAL_RULES[index].name for index in self.fired}
        normals = self.normals[self.light]
        for name, value in self.smoothed_signals().items():
            normal = normals[name]
            if name not in fired and normal.ready and _close(name, value, normal.level):
                normal.add(now, value)

    @property
    def ready(self) -> bool:
        return self.light in self.normals and self.normals[self.light]["score"].ready

    def reset(self) -> None:
        self.normals.clear()
        self.recent.clear()
        self.fired.clear()

    # -- the verdict ---------------------------------------------------------------------------------
    def judge(self, smoothed: float) -> Verdict:
        if not self.ready:
            return Verdict(None)
        normals, signals = self.normals[self.light], self.smoothed_signals()
        score = normals["score"]
        margin = max(self.spreads * score.spread, self.drop * score.level)
        by_model = band(smoothed, score.level - margin, score.level - 0.5 * margin)
        by_signals = self._signal_evidence(normals, signals)
        evidence = {"model": by_model, "signals": by_signals, "model+signals": either(by_model, by_signals)}[self.mode]
        changes = {"score": {"value": round(smoothed, 6), "normal": round(score.level, 6)}}
        changes.update({name: {"value": round(signals[name], 4), "normal": round(normals[name].level, 4)}
                        for name in SIGNALS if normals[name].ready and name in signals})
        return Verdict(evidence, self._reason(normals, signals, smoothed), changes)

    def _signal_evidence(self, normals: dict[str, Normal], signals: dict[str, float]) -> bool | None:
        """True while any rule is beyond its limit; False once every rule that went beyond is back
        halfway (a rule that never fired does not hold the verdict in its band: the light moving
        brightness a little must not keep a camera degraded); None in between."""
        beyond, back = set(), set()
        for index, rule in enumerate(SIGNAL_RULES):
            normal = normals[rule.name]
            if not normal.ready or rule.name not in signals:
                back.add(index)
                continue
            value = signals[rule.name]
            change = _change(rule.name, value, normal.level)
            away = rule.direction * (value - normal.level) / normal.spread
            if (change < rule.limit if rule.direction < 0 else change > rule.limit) and away >= rule.spreads:
                beyond.add(index)
            elif (change >= _halfway(rule) if rule.direction < 0 else change <= _halfway(rule)) \
                    or away < 0.5 * rule.spreads:
                back.add(index)
        self.fired |= beyond
        if beyond:
            return True
        if self.fired <= back:
            self.fired.clear()
            return False
        return None

    def _reason(self, normals: dict[str, Normal], signals: dict[str, float], smoothed: float) -> str:
        """The signals that moved furthest from their normal (in their own spreads), in words; the
        score's own drop when no signal moved."""
        moved = []
        for name in SIGNALS:
            normal = normals[name]
            if not normal.ready or name not in signals:
                continue
            distance = abs(signals[name] - normal.level) / normal.spread
            if distance >= 3.0 and _noticeable(name, signals[name], normal.level):
                moved.append((distance, describe(name, signals[name], normal.level)))
        words = [text for _, text in sorted(moved, reverse=True)[:2]]
        score = normals["score"]
        words.append(f"score {100.0 * smoothed / max(score.level, 1e-9):.0f}% of normal")
        return ", ".join(words)

    # -- kept across restarts -------------------------------------------------------------------------
    def as_dict(self) -> dict:
        return {"light": self.light, "normals": {light: {name: normal.as_dict() for name, normal in normals.items()}
                                                 for light, normals in self.normals.items()}}

    def restore(self, values: dict) -> None:
        self.light = values.get("light")
        self.normals = {light: {name: Normal.from_dict(normal) for name, normal in normals.items()}
                        for light, normals in values.get("normals", {}).items()}
        for normals in self.normals.values():       # a signal newer than the file: learned from now on
            for name in ("score", *SIGNALS):
                normals.setdefault(name, self._new_normal(name))


def _change(name: str, value: float, normal: float) -> float:
    if SIGNALS[name].compare == "ratio":
        return value / max(normal, 1e-9)
    return value - normal


def _halfway(rule: SignalRule) -> float:
    """Recovered only halfway back: a ratio rule's halfway is the geometric mean with 1."""
    if SIGNALS[rule.name].compare == "ratio":
        return rule.limit ** 0.5
    return 0.5 * rule.limit


def _close(name: str, value: float, normal: float) -> bool:
    """Within the way back of every rule on this signal, up and down (a fifth, or two points, for a
    signal with no rule)."""
    rules = [rule for rule in SIGNAL_RULES if rule.name == name]
    change = _change(name, value, normal)
    if SIGNALS[name].compare == "ratio":
        reach = min([abs(math.log(_halfway(rule))) for rule in rules] or [math.log(1.25)])
        return abs(math.log(max(change, 1e-9))) <= reach
    return abs(change) <= min([abs(_halfway(rule)) for rule in rules] or [2.0])


def _noticeable(name: str, value: float, normal: float) -> bool:
    """A change a person would call a change: a fifth up or down, or two percentage points."""
    change = _change(name, value, normal)
    if SIGNALS[name].compare == "ratio":
        return change < 0.8 or change > 1.25
    return abs(change) >= 2.0
