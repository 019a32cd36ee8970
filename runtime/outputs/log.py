"""Quality events as lines on stderr, for the person watching the run."""
from __future__ import annotations

from typing import Callable

import numpy as np


class EventLog:
    def __init__(self, log: Callable[[str], None]):
        self.log = log

    def publish_event(self, event: dict, image: np.ndarray | None = None) -> None:
        line = f"{event['camera']}: {event['event'].replace('_', ' ')} (now {event['state']})"
        self.log(f"{line}: {event['reason']}" if event.get("reason") and event["event"] == "degraded" else line)

    def publish_state(self, state: dict) -> None:
        pass

    def close(self) -> None:
        pass
