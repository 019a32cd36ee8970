"""The fleet's live page (`--web HOST:PORT`, docs/fleet.md "The page"): one tile per camera with its
latest picture, state, last alert, smoothed score with a sparkline, time since its last frame; the
latest events; the host's model, engine, precision and uptime; the same as JSON for scripts.

An output like the others: it takes events and states as they are published, and reads the rest
from the fleet's feeds when a page or a script asks (as the Prometheus collector does), so the
inference loop pays for nothing but handing over an event. The server itself (aiohttp, in a
thread of its own) is runtime/outputs/web_server.py, imported only when a page is asked for.

Safe by default: bound to 127.0.0.1; any other address needs a token (a file, or the
GAMMA_EDGE_WEB_TOKEN variable), never printed. Only camera names reach the page, never sources
(a source may hold a password), and only the event fields listed in EVENT_FIELDS.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from contract.errors import UserError
from runtime.outputs.listen import Listen, parse_listen

TOKEN_ENV = "GAMMA_EDGE_WEB_TOKEN"
MIN_TOKEN_CHARS = 12
SNAPSHOT_EVERY_S = 2.0            # a camera's picture is encoded at most this often, and only when asked for
HISTORY_STEP_S = 60.0             # the sparkline: one point (the mean smoothed score) a minute ...
HISTORY_SPAN_S = 6 * 3600.0       # ... for the last 6 hours
EVENTS_KEPT = 50
# What of an event reaches the page: never a source, a file path or anything added later unseen.
EVENT_FIELDS = ("event", "camera", "time", "state", "previous", "score", "smoothed", "threshold", "reason",
                "contrast", "change", "gap_s")
ALERTS = ("degraded", "covered", "frozen", "source_lost")


def read_token(token_file: str | None, listen: Listen) -> str | None:
    """The page's token: from `token_file`, else the environment; required off this machine."""
    if token_file:
        path = Path(token_file).expanduser()
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"the page's token file '{token_file}' cannot be read ({_why(exc)}); "
                            f"check --web-token-file") from None
        where = f"the page's token file '{token_file}'"
    else:
        token = os.environ.get(TOKEN_ENV, "").strip() or None
        where = TOKEN_ENV
    if token is None and not listen.local:
        raise UserError(f"--web {listen.host}:{listen.port} lets other machines see the cameras, so it needs a "
                        f"token: write one to a file and give --web-token-file FILE (or set {TOKEN_ENV}), "
                        f"or serve on 127.0.0.1")
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise UserError(f"{where} holds a token shorter than {MIN_TOKEN_CHARS} characters; use a longer one "
                        f"(e.g. from 'openssl rand -hex 16')")
    return token


def _why(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or "not UTF-8 text"


def host_facts(scorer) -> dict:
    """What the page says of this box: the model, its engine and precision (read from the Scorer)."""
    manifest = scorer.manifest
    return {"host": socket.gethostname(), "model": Path(manifest.folder).name,
            "backbone": manifest.raw.get("checkpoint", {}).get("backbone"), "scenes": list(scorer.scenes),
            "crops": scorer.crops, "engine": scorer.backend.describe(), "precision": scorer.backend.precision}


class History:
    """One point per `step_s` (the mean of the samples taken in it) for the last `span_s`."""

    def __init__(self, step_s: float = HISTORY_STEP_S, span_s: float = HISTORY_SPAN_S):
        self.step_s, self.points = step_s, max(1, round(span_s / step_s))
        self.buckets: deque = deque()             # [index, sum, count], oldest first

    def add(self, t: float, value: float) -> None:
        index = int(t // self.step_s)
        if self.buckets and self.buckets[-1][0] == index:
            self.buckets[-1][1] += value
            self.buckets[-1][2] += 1
        else:
            self.buckets.append([index, value, 1])
            while self.buckets[0][0] <= index - self.points:     # older than the span (a gap counts too)
                self.buckets.popleft()

    def as_dict(self) -> dict:
        """{step_s, first_t (seconds since the run started), values}: None where nothing was scored."""
        if not self.buckets:
            return {"step_s": self.step_s, "first_t": None, "values": []}
        first = self.buckets[0][0]
        values: list = [None] * (self.buckets[-1][0] - first + 1)
        for index, total, count in self.buckets:
            values[index - first] = round(total / count, 4)
        return {"step_s": self.step_s, "first_t": first * self.step_s, "values": values}


class FleetView:
    """What the page shows, kept from the events and states published (the inference loop's thread)
    and read from the feeds (the server's thread)."""

    def __init__(self, feeds: Callable[[], list], host: dict, started: float, history_step_s: float = HISTORY_STEP_S):
        self.feeds, self.host, self.started = feeds, host, started
        self.events: deque = deque(maxlen=EVENTS_KEPT)
        self.alerts: dict[str, dict] = {}                 # camera -> its last alert
        self.since: dict[str, tuple[str, float]] = {}     # camera -> (state, when it was published)
        self.histories: dict[str, History] = {}
        self.history_step_s = history_step_s
        self.lock = threading.Lock()

    def publish_event(self, event: dict) -> None:
        shown = {key: event[key] for key in EVENT_FIELDS if event.get(key) is not None}
        with self.lock:
            self.events.appendleft(shown)
            if shown["event"] in ALERTS:
                self.alerts[shown["camera"]] = shown

    def publish_state(self, state: dict) -> None:
        with self.lock:
            self.since[state["camera"]] = (state["state"], time.monotonic())

    def sample(self, now: float) -> None:
        """Each camera's smoothed score into its history (the server's clock calls this)."""
        for feed in self.feeds():
            smoothed = feed.watch.smoothing.smoothed
            if smoothed is not None and feed.watch.state != "lost":
                self.histories.setdefault(feed.camera.name, History(self.history_step_s)).add(now - self.started,
                                                                                             smoothed)

    def names(self) -> list[str]:
        return [feed.camera.name for feed in self.feeds()]

    def history(self) -> dict:
        return {name: self._history(name) for name in self.names()}

    def _history(self, name: str) -> dict:
        history = self.histories.get(name)
        return history.as_dict() if history else History(self.history_step_s).as_dict()

    def data(self, with_history: bool = True) -> dict:
        """The page's data, and the JSON endpoint's (docs/fleet.md, "The page")."""
        now = time.monotonic()
        with self.lock:
            events, alerts, since = list(self.events), dict(self.alerts), dict(self.since)
        cameras = []
        for feed in self.feeds():
            name, watch = feed.camera.name, feed.watch
            state = watch.state
            published = since.get(name)
            began = published[1] if published and published[0] == state else self.started
            camera = {"name": name, "state": state, "state_for_s": round(now - began, 1),
                      "score": _rounded(watch.smoothing.score), "smoothed": _rounded(watch.smoothing.smoothed),
                      "threshold": getattr(watch.rules, "threshold", None),
                      "seconds_since_frame": round(feed.seconds_since_frame(now), 1),
                      "alert": alerts.get(name), "counts": feed.counts()}
            if with_history:
                camera["history"] = self._history(name)
            cameras.append(camera)
        return {"time": _utc_now(), "uptime_s": round(now - self.started, 1), "host": self.host,
                "history_step_s": self.history_step_s, "cameras": cameras, "events": events}


def load_server():
    """The server class, or one sentence when its libraries are not installed."""
    try:
        from runtime.outputs.web_server import PageServer
    except ImportError as exc:
        raise UserError(f"--web needs aiohttp and aiohttp-sse ({exc.name} is missing); "
                        f"pip install 'gamma-edge[fleet]'") from None
    return PageServer


class WebPage:
    """The page as an output of the fleet: checked when built (address, token), served by start()."""

    def __init__(self, listen: str, feeds: Callable[[], list], host: dict, token_file: str | None = None,
                 log: Callable[[str], None] = print, history_step_s: float = HISTORY_STEP_S, snapshot_every_s: float = SNAPSHOT_EVERY_S):
        self.listen = parse_listen(listen)
        self.token = read_token(token_file, self.listen)
        self.server_class = load_server()
        self.view = FleetView(feeds, host, time.monotonic(), history_step_s)
        self.log, self.snapshot_every_s = log, snapshot_every_s
        self.server = None

    def start(self, started: float | None = None) -> "WebPage":
        """Serve the page; `started` (time.monotonic()) is when the run began: its uptime counts from it."""
        if started is not None:
            self.view.started = started
        self.server = self.server_class(self.view, self.listen, self.token, self.snapshot_every_s).start()
        guarded = "; it asks for the token" if self.token else ""
        self.log(f"page on {self.listen.url(self.port)}{guarded}")
        return self

    @property
    def port(self) -> int:
        return self.server.port

    def publish_event(self, event: dict, image=None) -> None:
        self.view.publish_event(event)
        if self.server is not None:
            self.server.wake()

    def publish_state(self, state: dict) -> None:
        self.view.publish_state(state)
        if self.server is not None:
            self.server.wake()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
