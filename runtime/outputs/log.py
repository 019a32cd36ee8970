"""Quality events as lines on stderr, for the person watching the run."""
from __future__ import annotations

from typing import Callable

import numpy as np


class EventLog:
    def __init__(self, log: Callable[[str], None]):
        self.log = log

    def publish_event(self, event: dict, image: np.ndarray | None = None) -> None:
        self.log(f"{event['camera']}: {event['event'].replace('_', ' ')} (now {event['state']})")

    def publish_state(self, state: dict) -> None:
        pass

    def close(self) -> None:
        pass
