"""Quality events to a webhook: each event POSTed as its JSON object (docs/fleet.md, "Webhook").

A thread of its own does the POSTs, so a slow or dead endpoint never holds up scoring. An
endpoint that cannot be reached is said once per outage; events meanwhile are dropped (they
stay in the JSON lines), as are events beyond a backlog of QUEUE_SIZE.
"""
from __future__ import annotations

import json
import queue
import threading
import urllib.error
import urllib.request
from typing import Callable
from urllib.parse import urlsplit

from contract.errors import UserError
from runtime.outputs.base import OutageWarning

QUEUE_SIZE = 1000


class WebhookEvents:
    def __init__(self, url: str, log: Callable[[str], None] = print, timeout: float = 5.0):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserError(f"--webhook '{url}' is not an http:// or https:// address")
        self.url, self.log, self.timeout = url, log, timeout
        self.delivered = self.undelivered = 0
        self.outage = OutageWarning(
            log, away=f"warning: webhook {url}: {{why}}; events are not delivered until it answers "
                      f"(the run goes on scoring and logging)",
            back=f"webhook {url} answers again: events are delivered")
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.thread = threading.Thread(target=self._run, name="gamma-webhook", daemon=True)

    def start(self) -> "WebhookEvents":
        self.thread.start()
        return self

    def publish_event(self, event: dict, image=None) -> None:
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.undelivered += 1
            self.outage.warn("its backlog is full")

    def publish_state(self, state: dict) -> None:
        """A webhook receives events only."""

    def _run(self) -> None:
        while True:
            event = self.queue.get()
            if event is None:
                return
            self._post(event)

    def _post(self, event: dict) -> None:
        request = urllib.request.Request(self.url, data=json.dumps(event).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.undelivered += 1
            self.outage.warn(_reason(exc))
            return
        self.delivered += 1
        self.outage.clear()

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (each POST within its timeout), then stop."""
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self.thread.join(timeout)


def _reason(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"it answered {exc.code} {exc.reason}"
    reason = getattr(exc, "reason", None) or exc
    return f"it cannot be reached ({reason})"
