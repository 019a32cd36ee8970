"""The JSON lines of a run: every frame record, reader signal, quality event and summary, one a line."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np

from contract.errors import UserError


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


EVENTS_SUFFIX = ".events"


class RotatingFile:
    """A JSON lines file for a run that may last months: appended to, never truncated (a restart
    goes on where the last run stopped), and rotated by size (FILE -> FILE.1 -> ... -> FILE.N).
    When the oldest file goes, its events are kept: every line that is not a frame record is
    appended to FILE's events file (scores.jsonl -> scores.events.jsonl), so no event is ever lost
    and only frame records age out. Writes arrive one whole line at a time (JsonLines)."""

    def __init__(self, path: str | Path, max_bytes: int = 64 << 20, backups: int = 4):
        self.path, self.max_bytes, self.backups = Path(path), max_bytes, backups
        self.events_path = self.path.with_name(self.path.stem + EVENTS_SUFFIX + self.path.suffix)
        self.handle = self._open()

    def _open(self):
        try:
            return open(self.path, "a", encoding="utf-8", newline="")
        except OSError as exc:
            raise UserError(f"--jsonl '{self.path}' cannot be written ({exc.strerror}); check the folder") from None

    def write(self, text: str) -> None:
        self.handle.write(text)

    def flush(self) -> None:
        self.handle.flush()
        if self.handle.tell() >= self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        self.handle.close()
        oldest = self._numbered(self.backups)
        if oldest.exists():
            self._keep_events(oldest)
            oldest.unlink()
        for number in range(self.backups - 1, 0, -1):
            if self._numbered(number).exists():
                os.replace(self._numbered(number), self._numbered(number + 1))
        if self.backups:
            os.replace(self.path, self._numbered(1))
        else:
            self._keep_events(self.path)
            self.path.unlink()
        self.handle = self._open()

    def _numbered(self, number: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{number}")

    def _keep_events(self, path: Path) -> None:
        with open(path, encoding="utf-8") as lines, open(self.events_path, "a", encoding="utf-8") as events:
            for line in lines:
                if '"event": ' in line:
                    events.write(line)

    def close(self) -> None:
        self.handle.close()
