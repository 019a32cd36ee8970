"""Quality events to a webhook: each event POSTed as its JSON object (docs/fleet.md, "Webhook").

A thread of its own does the POSTs, so a slow or dead endpoint never holds up scoring. An
endpoint that cannot be reached is said once per outage; events meanwhile are dropped (they
stay in the JSON lines), as are events beyond a backlog of QUEUE_SIZE. User info in the address
(https://user:password@host/...) is sent as Basic authentication; the address is shown without it
and without token-like query values (contract/secrets.py).
"""
from __future__ import annotations

import base64
import json
import queue
import threading
import urllib.error
import urllib.request
from typing import Callable
from urllib.parse import unquote, urlsplit, urlunsplit

from contract.errors import UserError
from contract.secrets import fill, hide
from runtime.outputs.base import OutageWarning

QUEUE_SIZE = 1000


def webhook_target(url: str) -> tuple[str, dict, str]:
    """(the address to POST to, its headers, the address as it may be shown), or one sentence.
    Placeholders are filled; user info goes as Basic authentication, since urllib sends none."""
    shown = hide(url)
    url = fill(url, f"--webhook '{shown}'")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"--webhook '{shown}' is not an http:// or https:// address")
    headers = {"Content-Type": "application/json"}
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
        url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return url, headers, shown


class WebhookEvents:
    def __init__(self, url: str, log: Callable[[str], None] = print, timeout: float = 5.0):
        self.url, self.headers, shown = webhook_target(url)
        self.log, self.timeout = log, timeout
        self.delivered = self.undelivered = 0
        self.outage = OutageWarning(
            log, away=f"warning: webhook {shown}: {{why}}; events are not delivered until it answers "
                      f"(the run goes on scoring and logging)",
            back=f"webhook {shown} answers again: events are delivered")
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
                                         headers=self.headers)
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
