"""One small interface for everything a run publishes, and the dispatcher that fans out to them.

An output takes events (a quality event, or a reader's gap / reconnect / end, each a JSON
object), the camera states that follow them, and a close. Each output takes what it is for
(MQTT and webhooks: quality events; JSON lines: every record) and ignores the rest, so adding
an output is adding a row to the dispatcher's list (docs/fleet.md, "Outputs").
"""
from __future__ import annotations

import threading
from typing import Callable, Protocol

import numpy as np

# The watch's state of a camera whose source delivers nothing (runtime/watch/conditions.py): outputs
# show such a camera as having no score (metrics) and as unreachable (Home Assistant).
LOST_STATE = "lost"


class Output(Protocol):
    def publish_event(self, event: dict, image: np.ndarray | None = None) -> None:
        """A quality event; `image` is the frame it was seen in, when there is one."""

    def publish_state(self, state: dict) -> None:
        """A camera's new state record (runtime/watch/camera.py `state_record`)."""

    def close(self) -> None:
        """Deliver what is queued, then stop."""


class Outputs:
    """Every output of a run, in order: an output that adds to the event (a snapshot's file name)
    comes before those that send it on."""

    def __init__(self, outputs: list):
        self.outputs = [output for output in outputs if output is not None]

    def publish_event(self, event: dict, image: np.ndarray | None = None) -> None:
        for output in self.outputs:
            output.publish_event(event, image)

    def publish_state(self, state: dict) -> None:
        for output in self.outputs:
            output.publish_state(state)

    def close(self) -> None:
        for output in self.outputs:
            output.close()


class OutageWarning:
    """An output whose receiver is away says so once per outage, and once when it is back: a
    broker or endpoint that stays down for a day must not write a line per event."""

    def __init__(self, log: Callable[[str], None], away: str, back: str):
        self.log, self.away, self.back = log, away, back      # away: a template with {why}
        self.warned = False
        self._lock = threading.Lock()

    def warn(self, why: str) -> None:
        with self._lock:
            if self.warned:
                return
            self.warned = True
        self.log(self.away.format(why=why))

    def clear(self) -> None:
        with self._lock:
            was, self.warned = self.warned, False
        if was:
            self.log(self.back)
