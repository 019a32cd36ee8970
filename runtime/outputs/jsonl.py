"""The JSON lines of a run: every frame record, reader signal, quality event and summary, one a line."""
from __future__ import annotations

import json
import threading

import numpy as np


class JsonLines:
    """Writes to a text stream the command opened (a file or stdout); flushed line by line so a
    reader following the file sees each record as it happens."""

    def __init__(self, stream):
        self.stream = stream
        self._lock = threading.Lock()

    def write(self, record: dict) -> None:
        with self._lock:
            self.stream.write(json.dumps(record) + "\n")
            self.stream.flush()

    def publish_event(self, event: dict, image: np.ndarray | None = None) -> None:
        self.write(event)

    def publish_state(self, state: dict) -> None:
        """States are not lines of their own: each event and frame record carries the state."""

    def close(self) -> None:
        """The stream belongs to the command that opened it."""
